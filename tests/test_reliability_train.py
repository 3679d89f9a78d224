"""Reliability of training (issue 18): training never writes a state it cannot trust.

Divergence (non-finite state, exploding loss) stops a run before it saves; a broken checkpoint
falls back to the previous one and is kept aside; ``config.json`` binds the checkpoints; one
training per workdir; ``metrics.jsonl`` stays one history across resumes; bad config values are
one line before anything is written; SIGKILLs anywhere, saves included, resume bit-identically.
"""

import functools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import pytest
from _tiny_run import TINY

import lipxai as lx
from lipxai import cli
from lipxai.train import config as config_lib
from lipxai.train import TrainingDivergedError, checkpoint, divergence, loop, train
from lipxai.train import workdir as run_dir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "mnist_lip.py")
needs_mnist = pytest.mark.dataset("mnist")
FOUR_STEPS = ["--config.train.num_steps=4", "--config.train.checkpoint_every=2", "--config.train.eval_every=4"]


def tiny_config(*extra):
    return config_lib.apply_overrides(config_lib.load_config(CONFIG), [*TINY, *extra])


def train_cli(workdir, *extra, env=None):
    cmd = [sys.executable, "-m", "lipxai", "train", "--config", CONFIG, "--workdir", str(workdir), *TINY, *extra]
    return subprocess.Popen(cmd, env={**os.environ, **(env or {})}, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def records(workdir, split):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["split"] == split]


def saved_steps(workdir):
    folder = os.path.join(workdir, "checkpoints")
    return sorted(int(p) for p in os.listdir(folder) if p.isdigit()) if os.path.isdir(folder) else []


def zero_largest_file(step_dir):
    """Zero the largest file of a checkpoint (its array data): tensorstore cannot decode it."""
    files = [os.path.join(root, f) for root, _, names in os.walk(step_dir) for f in names]
    largest = max(files, key=os.path.getsize)
    with open(largest, "r+b") as f:
        f.write(b"\0" * os.path.getsize(largest))


def truncate_metadata(step_dir):
    path = os.path.join(step_dir, "default", "_METADATA")
    os.truncate(path, os.path.getsize(path) // 2)


@pytest.fixture(scope="module")
def four_step_run(tmp_path_factory):
    """A finished tiny run with checkpoints 2 and 4; tests change copies of it."""
    workdir = tmp_path_factory.mktemp("reliability") / "run"
    train(tiny_config(*FOUR_STEPS), str(workdir), verbose=False)
    return workdir


def copy_of(run, tmp_path):
    return shutil.copytree(run, tmp_path / "run")


# 1. non-finite state -------------------------------------------------------------------------

@needs_mnist
def test_a_state_that_turns_non_finite_is_never_saved(tmp_path, monkeypatch):
    """The loss is computed before the update, so a finite loss can leave NaN parameters: a NaN
    learning rate (what optim.lr=inf gave, now a ConfigError) once had them checkpointed."""
    monkeypatch.setattr(loop, "build_optimizer", lambda cfg, num_steps: optax.adam(float("nan")))
    # a config left by a start that failed before its first checkpoint binds nothing: replaced
    config_lib.save_json(tiny_config("--config.optim.lr=0.5"), str(tmp_path / "config.json"))
    with pytest.raises(TrainingDivergedError, match=r"the parameters or optimiser state after step 1 are "
                                                    r"not finite .*\(no checkpoint was written\)"):
        train(tiny_config("--config.train.num_steps=1"), str(tmp_path), verbose=False)
    assert saved_steps(tmp_path) == [] and records(tmp_path, "train") == []
    assert config_lib.load_json(str(tmp_path / "config.json")).optim.lr == tiny_config().optim.lr


# 2. exploding loss ---------------------------------------------------------------------------

@needs_mnist
def test_an_exploding_loss_stops_training_before_the_next_checkpoint(tmp_path):
    cfg = tiny_config("--config.optim.lr=1e6", "--config.train.num_steps=6", "--config.train.log_every=2",
                      "--config.train.checkpoint_every=2", "--config.train.eval_every=100")
    with pytest.raises(TrainingDivergedError, match=r"the mean loss of steps 3-4 is .*, beyond "
                                                    r"train.divergence_factor \(1000\) x max\(\|initial loss "
                                                    r".*\(the last checkpoint is step 2\)") as info:
        train(cfg, str(tmp_path), verbose=False)
    assert type(info.value) is TrainingDivergedError
    assert saved_steps(tmp_path) == [2]
    assert [r["step"] for r in records(tmp_path, "train")] == [2]


@pytest.mark.parametrize("curve", [
    np.linspace(2.1, 0.05, 50),                      # soft HKR as in the quickstart: about the margin, falling
    np.linspace(0.3, -6.0, 50),                      # HKR whose KR part takes over: the sign changes
    np.concatenate([[1e-4], np.linspace(0, -25, 49)]),  # a KR loss: starts at 0, grows negative
])
def test_the_explosion_rule_lets_losses_that_change_sign_or_start_near_zero_train(curve):
    for step in range(1, len(curve) + 1):
        divergence.check_losses(curve[max(0, step - 5):step], step, curve[0], 1e3, None)


def test_the_explosion_rule_scales_with_the_initial_magnitude_floored_at_one_and_0_turns_it_off():
    divergence.check_losses([-999.0, 999.0], 4, -0.5, 1e3, None)      # limit 1e3 x max(0.5, 1)
    with pytest.raises(TrainingDivergedError, match=r"steps 3-4 is -1001, beyond .*= 1000 \(the last "
                                                    r"checkpoint is step 2\)"):
        divergence.check_losses([-1001.0, -1001.0], 4, -0.5, 1e3, 2)
    divergence.check_losses([3e3], 1, -3.0, 1e3, None)                # limit 1e3 x 3
    divergence.check_losses([1e30], 7, 1.0, 0.0, None)                # 0: off
    with pytest.raises(TrainingDivergedError, match=r"the loss at step 3 is nan"):
        divergence.check_losses([1.0, np.nan, 1.0], 4, 1.0, 0.0, None)


# 3. broken checkpoints -----------------------------------------------------------------------

@needs_mnist
@pytest.mark.parametrize("corrupt", [zero_largest_file, truncate_metadata])
def test_load_run_falls_back_from_a_broken_latest_checkpoint_and_keeps_it(four_step_run, tmp_path, capfd,
                                                                          corrupt):
    workdir = copy_of(four_step_run, tmp_path)
    corrupt(workdir / "checkpoints" / "4")
    capfd.readouterr()
    run = lx.load_run(str(workdir))
    assert run.step == 2
    lines = capfd.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert re.fullmatch(rf"checkpoint 4 in {re.escape(str(workdir / 'checkpoints'))} does not restore "
                        r"\(\w+: .+\); moved to .*/4\.corrupt-[0-9T.]+; using checkpoint 2", lines[0])
    aside = [p for p in os.listdir(workdir / "checkpoints") if p.startswith("4.corrupt-")]
    assert saved_steps(workdir) == [2] and len(aside) == 1
    assert os.listdir(workdir / "checkpoints" / aside[0])          # kept whole, not deleted

    corrupt(workdir / "checkpoints" / "2")                         # nothing left that restores
    with pytest.raises(checkpoint.CheckpointError, match=r"no checkpoint in .* restores \(the newest, 2: "):
        lx.load_run(str(workdir))
    assert saved_steps(workdir) == [2]                             # not moved: nothing to fall back to


# 4. and 5. config.json binds the checkpoints -------------------------------------------------

@needs_mnist
def test_resuming_under_another_config_names_the_differing_keys(four_step_run, tmp_path):
    workdir = copy_of(four_step_run, tmp_path)
    before = (workdir / "config.json").read_text()
    with pytest.raises(config_lib.ConfigError) as info:
        train(tiny_config(*FOUR_STEPS, "--config.optim.lr=0.1", "--config.seed=3"), str(workdir), verbose=False)
    assert type(info.value) is config_lib.ConfigError
    assert f"{workdir} holds a run with another config (optim.lr: saved 0.006, new 0.1; seed: saved 0, " \
           "new 3); use a new --workdir" in str(info.value)
    assert (workdir / "config.json").read_text() == before


@needs_mnist
def test_checkpoints_without_their_config_are_not_resumed(four_step_run, tmp_path):
    workdir = copy_of(four_step_run, tmp_path)
    os.remove(workdir / "config.json")
    with pytest.raises(config_lib.ConfigError, match=re.escape(f"{workdir} holds checkpoints (steps 2, 4) "
                                                               "but no config.json")):
        train(tiny_config(*FOUR_STEPS, "--config.optim.lr=0.1"), str(workdir), verbose=False)
    assert not (workdir / "config.json").exists()


@needs_mnist
def test_a_start_that_fails_writes_nothing(tmp_path):
    with pytest.raises(config_lib.ConfigError, match="model.name"):
        train(tiny_config("--config.model.name=resnet"), str(tmp_path / "run"), verbose=False)
    assert not (tmp_path / "run").exists()


# 6. one training per workdir -----------------------------------------------------------------

@needs_mnist
def test_a_second_training_in_a_busy_workdir_is_one_line_and_exit_2(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    with run_dir.locked(str(workdir)):
        proc = train_cli(workdir, "--config.train.num_steps=2")
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2
    assert err.decode().splitlines() == [f"lipxai train: error: workdir {workdir} is in use by another "
                                         f"lipxai train (pid {os.getpid()}); wait for it to finish or stop it"]
    assert out == b"" and os.listdir(workdir) == []


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / run_dir.LOCK).write_text(f"{dead.pid}\n")
    with run_dir.locked(str(tmp_path)):
        assert (tmp_path / run_dir.LOCK).read_text() == f"{os.getpid()}\n"
        with pytest.raises(run_dir.WorkdirBusyError, match=f"pid {os.getpid()}"):
            with run_dir.locked(str(tmp_path)):
                pass
    assert os.listdir(tmp_path) == []


# 7. one metrics history ----------------------------------------------------------------------

def test_metrics_lose_the_records_of_steps_after_the_restored_one(tmp_path):
    lines = [json.dumps({"step": s, "split": "train", "loss": 1.0}) for s in (1, 2, 3, 4)]
    lines.insert(2, json.dumps({"step": 2, "split": "test", "clean_accuracy": 0.5}))
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 5, "spl')   # killed mid-line
    run_dir.truncate_metrics(str(tmp_path), 2)
    assert (tmp_path / "metrics.jsonl").read_text() == "\n".join(lines[:3]) + "\n"
    run_dir.truncate_metrics(str(tmp_path), 0)
    assert (tmp_path / "metrics.jsonl").read_text() == ""


# 8. bad values: one line, exit 2, nothing written --------------------------------------------

@pytest.mark.parametrize("override, key", [
    ("train.num_steps=0", "train.num_steps"), ("train.num_steps=5.5", "train.num_steps"),
    ("train.checkpoint_every=0", "train.checkpoint_every"), ("train.log_every=0", "train.log_every"),
    ("train.eval_every=0", "train.eval_every"), ("train.batch_size=0", "train.batch_size"),
    ("optim.lr=0", "optim.lr"), ("optim.lr=-0.1", "optim.lr"), ("optim.lr=1e999", "optim.lr"),
    ("optim.warmup_steps=-1", "optim.warmup_steps"), ("data.name='foo'", "data.name"),
    ("data.test_split='valid'", "data.test_split"), ("seed=1.5", "seed"),
    ("train.divergence_factor=0.5", "train.divergence_factor"),
])
def test_a_bad_config_value_is_one_line_naming_its_key(tmp_path, capsys, override, key):
    workdir = tmp_path / "run"
    with pytest.raises(config_lib.ConfigError) as info:
        train(tiny_config(f"--config.{override}"), str(workdir), verbose=False)
    assert type(info.value) is config_lib.ConfigError and key in str(info.value)
    assert cli.main(["train", "--config", CONFIG, "--workdir", str(workdir), f"--config.{override}"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"lipxai train: error: {info.value}\n"
    assert not workdir.exists()


def test_a_workdir_that_is_a_file_is_refused(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("mine")
    with pytest.raises(config_lib.ConfigError) as info:
        train(tiny_config(), str(path), verbose=False)
    assert type(info.value) is config_lib.ConfigError
    assert str(info.value) == f"workdir must be a directory, got {str(path)!r}, an existing file"
    assert cli.main(["train", "--config", CONFIG, "--workdir", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("lipxai train: error: ") and str(path) in err
    assert path.read_text() == "mine"


def test_the_command_refuses_zero_steps_in_one_line_without_writing(tmp_path):
    proc = train_cli(tmp_path / "run", "--config.train.num_steps=0")
    out, err = proc.communicate(timeout=300)
    assert (proc.returncode, out) == (2, b"")
    assert err.decode() == "lipxai train: error: train.num_steps must be an integer >= 1, got 0\n"
    assert not (tmp_path / "run").exists()


# 9. fault injection --------------------------------------------------------------------------

def kill_when(proc, ready, timeout=300) -> str:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (polled every half millisecond); its stderr."""
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.0005)
    proc.send_signal(signal.SIGKILL)
    return proc.communicate(timeout=60)[1].decode()


def logged(workdir, step):
    try:
        with open(workdir / "metrics.jsonl") as f:
            return any(json.loads(line)["step"] >= step for line in f if line.endswith("\n"))
    except FileNotFoundError:
        return False


def saving(workdir, step):
    try:
        return any(p.startswith(f"{step}.orbax-checkpoint-tmp") for p in os.listdir(workdir / "checkpoints"))
    except FileNotFoundError:
        return False


@needs_mnist
def test_sigkilled_runs_resume_to_the_parameters_of_an_uninterrupted_run(tmp_path):
    """12 steps, a checkpoint every 2; three SIGKILLs at seeded random points (two while a
    checkpoint is being written); then a zeroed file in the latest checkpoint.  The resumed run
    ends with the parameters and the metrics history of an uninterrupted one."""
    env = {"JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),   # compile once for 5 processes
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    steps = ["--config.train.num_steps=12", "--config.train.checkpoint_every=2", "--config.train.eval_every=100"]
    reference = tmp_path / "reference"
    proc = train_cli(reference, *steps, env=env)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]

    workdir = tmp_path / "killed"
    kill_points = (   # (seed, during a save?, the steps to draw from given the step resumed from)
        (0, True, lambda start: [2, 4]),
        (1, False, lambda start: [start + 1, start + 2]),
        (2, True, lambda start: list(range(max(start + 2, 6), 11, 2))),
    )
    hit_a_save = False
    for seed, during_save, choices in kill_points:
        start = (saved_steps(workdir) or [0])[-1]
        target = random.Random(seed).choice(choices(start))
        proc = train_cli(workdir, *steps, env=env)
        err = kill_when(proc, functools.partial(saving if during_save else logged, workdir, target))
        assert proc.returncode == -signal.SIGKILL, err[-2000:]
        hit_a_save |= during_save and saving(workdir, target)   # the killed save left its tmp folder
    assert hit_a_save
    saved = saved_steps(workdir)
    assert len(saved) == 2 and saved[-1] < 12, saved

    zero_largest_file(workdir / "checkpoints" / str(saved[-1]))
    proc = train_cli(workdir, *steps, env=env)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]
    fallbacks = [line for line in err.decode().splitlines() if "does not restore" in line]
    assert len(fallbacks) == 1 and fallbacks[0].endswith(f"using checkpoint {saved[0]}"), fallbacks
    assert f"resuming from step {saved[0]}" in err.decode()
    assert any(p.startswith(f"{saved[-1]}.corrupt-") for p in os.listdir(workdir / "checkpoints"))

    history = [(r["step"], r["loss"], r["accuracy"]) for r in records(workdir, "train")]
    assert history == [(r["step"], r["loss"], r["accuracy"]) for r in records(reference, "train")]
    assert [r["step"] for r in records(workdir, "train")] == list(range(1, 13))
    assert records(workdir, "test") == records(reference, "test")
    ours, theirs = (jax.tree_util.tree_leaves(lx.load_run(str(d)).variables) for d in (workdir, reference))
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a, b)
