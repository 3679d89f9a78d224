"""orbax-checkpoint: periodic synchronous saves of the train state and automatic resume."""

from __future__ import annotations

import os

import orbax.checkpoint as ocp


def manager(directory, *, max_to_keep: int = 2) -> ocp.CheckpointManager:
    """A manager writing ``directory/<step>``; saves are atomic (a killed save is ignored)."""
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=False,
                                           create=True)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(mngr: ocp.CheckpointManager, state) -> None:
    mngr.save(int(state.step), args=ocp.args.StandardSave(state))
    mngr.wait_until_finished()


def restore_latest(mngr: ocp.CheckpointManager, abstract_state):
    """The latest checkpoint restored into the structure/shardings of ``abstract_state``, or ``None``."""
    step = mngr.latest_step()
    if step is None:
        return None
    return mngr.restore(step, args=ocp.args.StandardRestore(abstract_state))
