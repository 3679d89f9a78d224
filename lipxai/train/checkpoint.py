"""orbax-checkpoint: periodic synchronous saves of the train state and automatic resume."""

from __future__ import annotations

import datetime
import os
import sys

import orbax.checkpoint as ocp

from lipxai.train.config import ConfigError


def manager(directory, *, max_to_keep: int = 2) -> ocp.CheckpointManager:
    """A manager writing ``directory/<step>``; saves are atomic (a killed save is ignored)."""
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=False,
                                           create=True)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(mngr: ocp.CheckpointManager, state) -> None:
    mngr.save(int(state.step), args=ocp.args.StandardSave(state))
    mngr.wait_until_finished()


def restore_latest(mngr: ocp.CheckpointManager, abstract_state, *, is_sound=lambda state: True):
    """The newest checkpoint that restores, into the structure/shardings of ``abstract_state``;
    ``None`` when there is no checkpoint.

    A checkpoint is broken when orbax/tensorstore cannot read it (a truncated, zeroed or
    missing file) or when its state fails ``is_sound``.  Broken checkpoints newer than the
    one restored are moved aside to ``<step>.corrupt-<time>`` (kept for inspection, never
    deleted; orbax no longer sees them as steps), each reported in one line on stderr.  When no checkpoint restores, nothing is moved and
    :class:`CheckpointError` names the newest one and its error: a template that matches
    none of them is a code or config mismatch rather than a corruption.
    """
    broken = []
    for step in sorted(mngr.all_steps(), reverse=True):
        state, error = _try_restore(mngr, step, abstract_state, is_sound)
        if error is None:
            for bad_step, bad_error in broken:
                aside = _set_aside(mngr.directory, bad_step)
                print(f"checkpoint {bad_step} in {mngr.directory} does not restore ({bad_error}); "
                      f"{aside}; using checkpoint {step}", file=sys.stderr, flush=True)
            if broken:
                mngr.reload()
            return state
        broken.append((step, error))
    if broken:
        step, error = broken[0]
        raise CheckpointError(f"no checkpoint in {mngr.directory} restores (the newest, {step}: {error}); "
                              "move the broken ones aside or use a new --workdir")
    return None


class CheckpointError(ConfigError):
    """No checkpoint of a run directory restores."""


def _try_restore(mngr, step: int, abstract_state, is_sound):
    """``(state, None)``, or ``(None, one-line reason)`` when checkpoint ``step`` is broken."""
    try:
        state = mngr.restore(step, args=ocp.args.StandardRestore(abstract_state))
    except Exception as err:  # orbax and tensorstore raise ValueError, JSONDecodeError, Exception...
        return None, _one_line(err)
    if not is_sound(state):
        return None, "it holds non-finite values"
    return state, None


def _one_line(err: BaseException) -> str:
    """The innermost error of a chain in one line (orbax wraps tensorstore's precise one)."""
    while (err.__cause__ or err.__context__) is not None:
        err = err.__cause__ or err.__context__
    first_line = (str(err).splitlines() or [""])[0][:200]
    return f"{type(err).__name__}: {first_line}"


def _set_aside(directory, step: int) -> str:
    """Rename ``directory/<step>`` to ``<step>.corrupt-<time>``; say where it went."""
    source = os.path.join(os.fspath(directory), str(step))
    target = f"{source}.corrupt-{datetime.datetime.now().strftime('%Y%m%dT%H%M%S.%f')}"
    try:
        os.rename(source, target)
    except OSError as err:
        return f"left in place, it could not be moved aside ({err.strerror})"
    return f"moved to {target}"
