"""The training loop: data-parallel steps, metrics.jsonl, evaluation, checkpoints, resume."""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import numpy as np

from lipxai.train import config as config_lib
from lipxai import data
from lipxai.train import checkpoint, divergence, sharding
from lipxai.train import workdir as run_dir
from lipxai.train.build import build_model, build_objective, build_optimizer
from lipxai.train.divergence import TrainingDivergedError
from lipxai.train.accuracy import accuracy_report, predict_logits
from lipxai.train.state import init_state
from lipxai.train.step import make_objective_step, make_predict
from lipxai.train.validate import divergence_factor, eikonal_phase, validate_config

__all__ = ["TrainingDivergedError", "train"]


def train(config, workdir: str, *, verbose: bool = True):
    """Train ``config`` in ``workdir``, resuming from its latest checkpoint; return the final state.

    Writes ``config.json`` (the resolved config), ``metrics.jsonl`` (one JSON object
    per logged train window and per evaluation) and ``checkpoints/<step>``. A rerun
    with the same config continues from the last checkpoint and, since batches are
    a pure function of ``(seed, step)``, ends with the same parameters as an
    uninterrupted run.

    The config is validated first; then the workdir is locked against a second training
    (:mod:`lipxai.train.workdir`; a workdir created for a start that fails is removed
    again). Nothing is written before the data is loaded and the state initialised;
    checkpoints resume only under their own config, a broken latest checkpoint falls
    back to the newest that restores (:func:`lipxai.train.checkpoint.restore_latest`),
    and ``metrics.jsonl`` loses the records of steps after the restored one.

    Raises :class:`~lipxai.train.config.ConfigError` for an invalid config or workdir, and
    :class:`TrainingDivergedError` at the first log, evaluation or checkpoint step whose
    losses or state diverged (:mod:`lipxai.train.divergence`), before that step writes a
    metric, an evaluation or a checkpoint.
    """
    validate_config(config)
    run_dir.check_path(workdir)
    with run_dir.locked(workdir):
        return _train(config, workdir, verbose)


def _train(cfg, workdir: str, verbose: bool):
    """:func:`train` in a validated config and a locked workdir."""
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
    step_fn = make_objective_step(model, build_objective(cfg), optimizer, num_steps=cfg.train.num_steps,
                                  seed=cfg.seed)
    eikonal_weight, eikonal_steps = eikonal_phase(cfg)
    if eikonal_weight:   # a second compiled step, so that the steps before do not pay for the term
        eikonal_step_fn = make_objective_step(model, build_objective(cfg, eikonal_weight=eikonal_weight),
                                              optimizer, num_steps=cfg.train.num_steps, seed=cfg.seed)
    predict = make_predict(model)

    def batch(step):
        return sharding.put_batch(data.batch_for_step(images, labels, local_batch, step, seed=cfg.seed,
                                                      shard_index=process, num_shards=processes,
                                                      normalize=normalize), mesh)

    sample = data.preprocess(images[:1], normalize=normalize)
    initial = sharding.put_replicated(init_state(model, optimizer, jax.random.PRNGKey(cfg.seed), sample), mesh)

    mngr = checkpoint.manager(os.path.join(workdir, "checkpoints"))
    run_dir.check_config(cfg, workdir, mngr.all_steps())
    restored = checkpoint.restore_latest(mngr, initial, is_sound=lambda s: bool(divergence.all_finite(s)))
    state = initial if restored is None else restored
    start = int(state.step)
    factor = divergence_factor(cfg)
    steps_left = start < cfg.train.num_steps
    initial_loss = _initial_loss(step_fn, initial, batch(0)) if factor and steps_left else 0.0
    run_dir.truncate_metrics(workdir, start)
    run_dir.write_config(cfg, workdir)
    if verbose and start:
        print(f"resuming from step {start}", file=sys.stderr)

    window, window_start = [], time.perf_counter()
    with open(os.path.join(workdir, run_dir.METRICS), "a") as metrics_file:
        for step in range(start, cfg.train.num_steps):
            in_phase = eikonal_weight and step >= cfg.train.num_steps - eikonal_steps
            state, metrics = (eikonal_step_fn if in_phase else step_fn)(state, *batch(step))
            window.append(metrics)
            done = step + 1
            last = done == cfg.train.num_steps
            log_now = done % cfg.train.log_every == 0 or last
            eval_now = done % cfg.train.eval_every == 0 or last
            save_now = done % cfg.train.checkpoint_every == 0 or last
            if not (log_now or eval_now or save_now):
                continue
            last_saved = mngr.latest_step()
            divergence.check_losses([float(m["loss"]) for m in window], done, initial_loss, factor,
                                    last_saved)
            divergence.check_state(state, done, last_saved)
            if log_now:
                keys = dict.fromkeys(k for m in window for k in m)   # the eikonal phase adds its term's
                means = {k: float(np.mean([float(m[k]) for m in window if k in m])) for k in keys}
                elapsed = time.perf_counter() - window_start
                record = {"step": done, "split": "train", **means, "devices": mesh.size,
                          "images_per_sec": len(window) * cfg.train.batch_size / elapsed}
                _append(metrics_file, record)
                if verbose:
                    _progress(done, cfg.train.num_steps, record)
                window, window_start = [], time.perf_counter()
            if eval_now:
                logits = predict_logits(predict, state.variables, test_images, normalize=normalize)
                report = accuracy_report(logits, test_labels, cfg.certify.eps)
                _append(metrics_file, {"step": done, "split": cfg.data.test_split, **report})
            if save_now:
                checkpoint.save(mngr, state)
    mngr.close()
    if verbose:
        print(file=sys.stderr)
    return state


def _initial_loss(step_fn, state, batch) -> float:
    """The loss of ``state`` (the initial one) on ``batch`` (the first), the reference of the
    explosion rule; the step runs on a copy, since it donates its state."""
    copy = jax.tree_util.tree_map(lambda x: jax.device_put(x, x.sharding, may_alias=False), state)
    return float(step_fn(copy, *batch)[1]["loss"])


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
