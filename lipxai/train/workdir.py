"""The run directory of :func:`lipxai.train.train`: its lock, its ``config.json``, its metrics history.

- One training at a time: :func:`locked` holds an exclusive ``flock`` on ``train.lock`` (which
  records the holder's PID) while a run trains.  The kernel drops the lock when its process
  ends, however it ends, so a lock file left by a killed run is stale by construction and the
  next run takes it over.
- ``config.json`` binds the checkpoints: a workdir with checkpoints resumes only under the
  config saved with them (:func:`check_config`), and the config is written (:func:`write_config`)
  only once the run has started (workdir locked, data loaded, model and state initialised),
  before its first checkpoint.  Without a checkpoint nothing can be resumed, so a config left
  by a run that failed before its first checkpoint is replaced.
- ``metrics.jsonl`` is one history: on (re)start, :func:`truncate_metrics` drops the records of
  steps after the restored checkpoint, which the run is about to replay.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os

from lipxai.train import config as config_lib
from lipxai.train.config import ConfigError

LOCK = "train.lock"
CONFIG = "config.json"
METRICS = "metrics.jsonl"


class WorkdirBusyError(ConfigError):
    """Another process is training in this workdir."""


def check_path(workdir: str) -> None:
    """``workdir`` must be a directory or not exist yet."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ConfigError(f"workdir must be a directory, got {workdir!r}, an existing file")


@contextlib.contextmanager
def locked(workdir: str):
    """Hold the training lock of ``workdir`` (created if needed) for the ``with`` block.

    Raises :class:`WorkdirBusyError` (naming the holder's PID) when another process holds it.
    A workdir created here and still empty at the end (a start that failed) is removed.
    """
    created = not os.path.isdir(workdir)
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK)
    fd = _acquire(path, workdir)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.unlink(path)
        os.close(fd)
        if created and not os.listdir(workdir):
            os.rmdir(workdir)


def _acquire(path: str, workdir: str) -> int:
    """An open descriptor of ``path`` holding its exclusive lock (retried when the file was
    replaced between opening and locking it, as a releasing holder unlinks it)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise WorkdirBusyError(f"workdir {workdir} is in use by another lipxai train (pid {holder}); "
                                   "wait for it to finish or stop it") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def check_config(config, workdir: str, steps) -> None:
    """A workdir holding checkpoints ``steps`` must hold the same config as ``config``.

    Raises :class:`ConfigError` when its ``config.json`` is missing or unreadable (the
    checkpoints' config is unknown), or differs (naming the first differing dotted keys with
    the saved and the new values).
    """
    if not steps:
        return
    path = os.path.join(workdir, CONFIG)
    listed = ", ".join(map(str, sorted(steps)))
    if not os.path.isfile(path):
        raise ConfigError(f"{workdir} holds checkpoints (steps {listed}) but no {CONFIG}, so the config "
                          f"that trained them is unknown; restore its {CONFIG} or use a new --workdir")
    try:
        saved = config_lib.load_json(path).to_dict()
    except ValueError as err:
        raise ConfigError(f"{path} is not readable JSON ({err}); restore it or use a new --workdir") from None
    changes = config_lib.differences(saved, config_lib.load_json_from_dict(config.to_dict()))
    if changes:
        shown = "; ".join(f"{key}: saved {old!r}, new {new!r}" for key, old, new in changes[:3])
        more = f" and {len(changes) - 3} more" if len(changes) > 3 else ""
        raise ConfigError(f"{workdir} holds a run with another config ({shown}{more}); "
                          "use a new --workdir or the same config to resume")


def write_config(config, workdir: str) -> None:
    """Write ``config.json`` atomically (a killed write leaves the previous file)."""
    config_lib.save_json(config, os.path.join(workdir, CONFIG))


def truncate_metrics(workdir: str, step: int) -> None:
    """Keep only the records of ``metrics.jsonl`` up to ``step`` (and drop a line cut short
    by a kill), rewriting the file atomically."""
    path = os.path.join(workdir, METRICS)
    if not os.path.exists(path):
        return
    with open(path) as f:
        kept = [line for line in f if _step_of(line) <= step]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(line if line.endswith("\n") else line + "\n" for line in kept)
    os.replace(tmp, path)


def _step_of(line: str) -> float:
    """The record's step; infinite for a line that is not a whole record."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return float("inf")
