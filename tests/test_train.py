"""Training: loss decreases, 1 vs 8 devices agree, divergence stops a run, the eikonal phase
(resume after kills: tests/test_reliability_train.py)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _tiny_run import TINY

import lipxai as lx
from lipxai import cli
from lipxai.train import config as config_lib
from lipxai.train import TrainingDivergedError, loop, train

pytestmark = pytest.mark.dataset("mnist")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "mnist_lip.py")


def tiny_config(*extra):
    return config_lib.apply_overrides(config_lib.load_config(CONFIG), [*TINY, *extra])


def train_cli(workdir, *extra, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    cmd = [sys.executable, "-m", "lipxai", "train", "--config", CONFIG, "--workdir", str(workdir), *TINY, *extra]
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def records(workdir, split):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["split"] == split]


def params_of(workdir):
    return jax.tree_util.tree_leaves(lx.load_run(str(workdir)).variables)


def test_training_learns_and_writes_the_run_directory(tmp_path):
    train(tiny_config("--config.train.num_steps=60", "--config.train.eval_every=60"), str(tmp_path), verbose=False)
    assert {"config.json", "checkpoints", "metrics.jsonl"} <= set(os.listdir(tmp_path))
    losses = [r["loss"] for r in records(tmp_path, "train")]
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    test = records(tmp_path, "test")[-1]
    assert test["clean_accuracy"] > 0.5 and test["n"] == 256
    run = lx.load_run(str(tmp_path))
    assert run.step == 60
    x = lx.data.preprocess(lx.data.load_split("mnist", "test")[0][:4])
    assert jax.jit(run.apply)(x).shape == (4, 10)


def test_resuming_with_another_config_is_refused(tmp_path):
    train(tiny_config("--config.train.num_steps=2"), str(tmp_path), verbose=False)
    with pytest.raises(config_lib.ConfigError, match="another config"):
        train(tiny_config("--config.train.num_steps=3", "--config.optim.lr=0.1"), str(tmp_path), verbose=False)


def test_one_and_eight_devices_give_the_same_training(tmp_path):
    steps = ["--config.train.num_steps=4", "--config.train.checkpoint_every=4", "--config.train.eval_every=4"]
    runs = {}
    for devices in (1, 8):
        workdir = tmp_path / f"dev{devices}"
        flags = f"--xla_force_host_platform_device_count={devices}"
        proc = train_cli(workdir, *steps, env_extra={"XLA_FLAGS": flags})
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
        runs[devices] = workdir
    assert {r["devices"] for r in records(runs[8], "train")} == {8}
    loss1 = [r["loss"] for r in records(runs[1], "train")]
    loss8 = [r["loss"] for r in records(runs[8], "train")]
    np.testing.assert_allclose(loss8, loss1, rtol=1e-5)
    for a, b in zip(params_of(runs[1]), params_of(runs[8]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_a_loss_that_turns_nan_stops_training_before_the_next_checkpoint(tmp_path, monkeypatch):
    real = loop.make_objective_step

    def nan_loss_from_step_3(model, objective, optimizer, **kwargs):
        step_fn = real(model, objective, optimizer, **kwargs)

        def step(state, x, y):
            before = int(state.step)   # read before the state is donated
            state, metrics = step_fn(state, x, y)
            return state, {**metrics, "loss": metrics["loss"] if before < 3 else jnp.float32(jnp.nan)}

        return step

    monkeypatch.setattr(loop, "make_objective_step", nan_loss_from_step_3)
    cfg = tiny_config("--config.train.num_steps=10", "--config.train.log_every=5",
                      "--config.train.checkpoint_every=2", "--config.train.eval_every=100")
    with pytest.raises(TrainingDivergedError, match=r"loss at step 4 is nan \(the last checkpoint is step 2\)"):
        train(cfg, str(tmp_path), verbose=False)
    assert sorted(p for p in os.listdir(tmp_path / "checkpoints") if p.isdigit()) == ["2"]
    assert records(tmp_path, "train") == [] and records(tmp_path, "test") == []


def test_the_cli_reports_a_diverged_run_in_one_line(tmp_path, monkeypatch, capsys):
    def diverge(config, workdir):
        raise TrainingDivergedError("training diverged: the loss at step 7 is nan")

    monkeypatch.setattr(lx.train, "train", diverge)
    assert cli.main(["train", "--config", CONFIG, "--workdir", str(tmp_path)]) == 1
    assert capsys.readouterr().err == "lipxai train: error: training diverged: the loss at step 7 is nan\n"


def margin_gradient_error(workdir, n=128):
    """Mean | ||grad m|| - 1 | of the predicted class's margin on the first n test images."""
    run = lx.load_run(str(workdir))
    x = jnp.asarray(lx.data.preprocess(lx.data.load_split("mnist", "test")[0][:n]))
    pred = jnp.argmax(run.apply(x), 1)
    rows = jnp.arange(n)

    def summed(inputs):
        logits = run.apply(inputs)
        runner_up = jnp.argmax(jnp.where(jax.nn.one_hot(pred, 10) > 0, -jnp.inf, logits), 1)
        return jnp.sum(logits[rows, pred] - logits[rows, runner_up])

    g = jax.grad(summed)(x)
    return float(jnp.mean(jnp.abs(jnp.sqrt(jnp.sum(g * g, axis=(1, 2, 3))) - 1)))


def test_the_eikonal_phase_changes_only_the_last_steps_and_evens_the_margin_gradients(tmp_path):
    steps = ["--config.train.num_steps=40", "--config.train.eval_every=40", "--config.train.checkpoint_every=40"]
    train(tiny_config(*steps), str(tmp_path / "plain"), verbose=False)
    train(tiny_config(*steps, "--config.train.eikonal_weight=20.0", "--config.train.eikonal_steps=20"),
          str(tmp_path / "eikonal"), verbose=False)
    plain, eikonal = (np.array([r["loss"] for r in records(tmp_path / d, "train")]) for d in ("plain", "eikonal"))
    np.testing.assert_array_equal(eikonal[:20], plain[:20])
    assert np.all(eikonal[20:] != plain[20:])
    assert margin_gradient_error(tmp_path / "eikonal") < 0.5 * margin_gradient_error(tmp_path / "plain")


@pytest.mark.parametrize("weight, steps", [(1.0, 0), (0.0, 5), (-1.0, 5), (1.0, 2)])
def test_the_eikonal_phase_needs_a_positive_weight_and_steps_together(tmp_path, weight, steps):
    cfg = tiny_config("--config.train.num_steps=2", f"--config.train.eikonal_weight={weight}",
                      f"--config.train.eikonal_steps={steps}")
    with pytest.raises(config_lib.ConfigError, match="eikonal"):
        train(cfg, str(tmp_path), verbose=False)
