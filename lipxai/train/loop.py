"""The training loop: data-parallel steps, metrics.jsonl, evaluation, checkpoints, resume."""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import numpy as np

from lipxai import config as config_lib
from lipxai import data
from lipxai.train import checkpoint, sharding
from lipxai.train.build import build_loss, build_model, build_optimizer
from lipxai.train.evaluate import accuracy_report, predict_logits
from lipxai.train.state import init_state
from lipxai.train.step import make_predict, make_train_step


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or infinite; no checkpoint was written after that step."""


def train(config, workdir: str, *, verbose: bool = True):
    """Train ``config`` in ``workdir``, resuming from its latest checkpoint; return the final state.

    Writes ``config.json`` (the resolved config), ``metrics.jsonl`` (one JSON object
    per logged train window and per evaluation) and ``checkpoints/<step>``. A rerun
    with the same config continues from the last checkpoint and, since batches are
    a pure function of ``(seed, step)``, ends with the same parameters as an
    uninterrupted run.

    Raises :class:`TrainingDivergedError` at the first log, evaluation or checkpoint step
    whose loss is not finite (a NaN in the parameters stays there), before that step
    writes a checkpoint or an evaluation.
    """
    os.makedirs(workdir, exist_ok=True)
    _write_or_check_config(config, workdir)
    cfg = config
    process, processes = data.process_shard()
    if cfg.train.batch_size % processes:
        raise config_lib.ConfigError(f"train.batch_size {cfg.train.batch_size} is not divisible by "
                                     f"the number of processes {processes}")
    local_batch = cfg.train.batch_size // processes
    data_dir = cfg.data.data_dir or None
    normalize = tuple(cfg.data.normalize) if cfg.data.normalize else None
    images, labels = data.load_split(cfg.data.name, cfg.data.train_split, data_dir=data_dir)
    test_images, test_labels = data.load_split(cfg.data.name, cfg.data.test_split, data_dir=data_dir)
    if cfg.train.eval_examples:
        test_images, test_labels = test_images[:cfg.train.eval_examples], test_labels[:cfg.train.eval_examples]

    mesh = sharding.data_mesh()
    sharding.check_batch_divisible(cfg.train.batch_size, mesh)
    model = build_model(cfg.model)
    optimizer = build_optimizer(cfg.optim, cfg.train.num_steps)
    loss_fn = build_loss(cfg.loss)
    step_fn = make_train_step(model, loss_fn, optimizer)
    eikonal_weight, eikonal_steps = _eikonal_phase(cfg)
    if eikonal_weight:
        eikonal_step_fn = make_train_step(model, loss_fn, optimizer, eikonal_weight=eikonal_weight)
    predict = make_predict(model)

    sample = data.preprocess(images[:1], normalize=normalize)
    state = sharding.put_replicated(init_state(model, optimizer, jax.random.PRNGKey(cfg.seed), sample), mesh)
    mngr = checkpoint.manager(os.path.join(workdir, "checkpoints"))
    restored = checkpoint.restore_latest(mngr, state)
    if restored is not None:
        state = restored
    start = int(state.step)
    if verbose and start:
        print(f"resuming from step {start}", file=sys.stderr)

    window, window_start = [], time.perf_counter()
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as metrics_file:
        for step in range(start, cfg.train.num_steps):
            x, y = data.batch_for_step(images, labels, local_batch, step, seed=cfg.seed,
                                       shard_index=process, num_shards=processes, normalize=normalize)
            in_phase = eikonal_weight and step >= cfg.train.num_steps - eikonal_steps
            state, metrics = (eikonal_step_fn if in_phase else step_fn)(state, *sharding.put_batch((x, y), mesh))
            window.append(metrics)
            done = step + 1
            last = done == cfg.train.num_steps
            log_now = done % cfg.train.log_every == 0 or last
            eval_now = done % cfg.train.eval_every == 0 or last
            save_now = done % cfg.train.checkpoint_every == 0 or last
            if log_now:
                means = {k: float(np.mean([float(m[k]) for m in window])) for k in window[0]}
                elapsed = time.perf_counter() - window_start
                record = {"step": done, "split": "train", **means, "devices": mesh.size,
                          "images_per_sec": len(window) * cfg.train.batch_size / elapsed}
                _append(metrics_file, record)
                if verbose:
                    _progress(done, cfg.train.num_steps, record)
                window, window_start = [], time.perf_counter()
            if log_now or eval_now or save_now:
                _check_finite(float(metrics["loss"]), done, mngr.latest_step())
            if eval_now:
                logits = predict_logits(predict, state.variables, test_images, normalize=normalize)
                report = accuracy_report(logits, test_labels, cfg.certify.eps)
                _append(metrics_file, {"step": done, "split": cfg.data.test_split, **report})
            if save_now:
                checkpoint.save(mngr, state)
    if verbose:
        print(file=sys.stderr)
    mngr.close()
    return state


def _eikonal_phase(cfg) -> tuple[float, int]:
    """``train.eikonal_weight`` and ``train.eikonal_steps`` (the last steps that add the
    margin's eikonal penalty); both absent or 0 in configs that do not use it."""
    weight = float(cfg.train.get("eikonal_weight", 0.0))
    steps = int(cfg.train.get("eikonal_steps", 0))
    if weight < 0 or steps < 0:
        raise config_lib.ConfigError(f"train.eikonal_weight and train.eikonal_steps must be >= 0, "
                                     f"got {weight} and {steps}")
    if (weight > 0) != (steps > 0):
        raise config_lib.ConfigError("set train.eikonal_weight and train.eikonal_steps together "
                                     f"(got {weight} and {steps})")
    if steps >= cfg.train.num_steps > 0:
        raise config_lib.ConfigError(
            f"train.eikonal_steps ({steps}) must be smaller than train.num_steps ({cfg.train.num_steps}): "
            "the eikonal phase fine-tunes a trained model (from initialisation it diverged on a small "
            "CNN); set both eikonal keys to 0 for short runs")
    return weight, steps


def _check_finite(loss: float, step: int, last_saved) -> None:
    if np.isfinite(loss):
        return
    kept = f"the last checkpoint is step {last_saved}" if last_saved is not None else "no checkpoint was written"
    raise TrainingDivergedError(
        f"training diverged: the loss at step {step} is {loss} ({kept}); lower optim.lr, or rerun "
        "with JAX_DEBUG_NANS=True to find the operation that produced the first NaN")


def _write_or_check_config(config, workdir: str) -> None:
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
        saved = config_lib.load_json(path).to_dict()
        if saved != config_lib.load_json_from_dict(config.to_dict()):
            raise config_lib.ConfigError(f"{workdir} holds a run with another config; "
                                         "use a new --workdir or the same config to resume")
        return
    config_lib.save_json(config, path)


def _append(f, record: dict) -> None:
    f.write(json.dumps(record) + "\n")
    f.flush()


def _progress(step: int, total: int, record: dict) -> None:
    width = 30
    filled = int(width * step / total)
    line = (f"[{'#' * filled}{'.' * (width - filled)}] {step}/{total} loss {record['loss']:.4f} "
            f"acc {record['accuracy']:.3f} {record['images_per_sec']:.0f} img/s")
    end = "\r" if sys.stderr.isatty() else "\n"
    print(line, end=end, file=sys.stderr, flush=True)
