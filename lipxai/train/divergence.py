"""Divergence checks run before the loop writes a metric, an evaluation or a checkpoint.

Two rules, so that no checkpoint holds a state that cannot be trusted:

- *non-finite*: a NaN or infinite training loss, or a NaN or infinite value anywhere in the
  parameters, the optimiser state or the model's other variables (one jitted all-finite
  reduction over the state; the loss is computed before the update, so a finite loss does
  not prove a finite state);
- *explosion*: the mean loss of the steps since the last log (the logged window at a log
  step) is larger in magnitude than ``train.divergence_factor * max(|initial loss|, 1)``.
  The initial loss is the loss of the initial parameters on the first batch: it does not
  depend on where a run resumes, and no update can have exploded it yet (with a large
  learning rate the first logged window already has).  Magnitudes and the floor of 1 make
  the rule meaningful for losses that change sign or start near 0 (the KR part of HKR
  losses is negative and grows with training, but stays of the order of the margin).
  ``train.divergence_factor = 0`` turns this rule off.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


class TrainingDivergedError(FloatingPointError):
    """Training diverged (non-finite loss or state, or an exploding loss); no checkpoint
    or evaluation was written after the step that showed it."""


@jax.jit
def all_finite(tree) -> jax.Array:
    """Whether every inexact leaf of ``tree`` is finite (integer leaves always are)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def check_losses(losses, last_step: int, initial_loss: float, factor: float, last_saved) -> None:
    """Raise :class:`TrainingDivergedError` if a loss of steps ``last_step - len(losses) + 1 ..
    last_step`` is not finite, or their mean explodes (see the module docstring)."""
    losses = np.asarray(losses, np.float64)
    first = last_step - len(losses) + 1
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        raise TrainingDivergedError(
            f"training diverged: the loss at step {first + bad[0]} is {losses[bad[0]]} "
            f"({_kept(last_saved)}); lower optim.lr, or rerun with JAX_DEBUG_NANS=True to find "
            "the operation that produced the first NaN")
    mean = float(np.mean(losses))
    limit = factor * max(abs(initial_loss), 1.0)
    if factor and abs(mean) > limit:
        raise TrainingDivergedError(
            f"training diverged: the mean loss of steps {first}-{last_step} is {mean:.4g}, beyond "
            f"train.divergence_factor ({factor:g}) x max(|initial loss {initial_loss:.4g}|, 1) = "
            f"{limit:.4g} ({_kept(last_saved)}); lower optim.lr, or set "
            "train.divergence_factor=0 to turn this check off")


def check_state(state, step: int, last_saved) -> None:
    """Raise :class:`TrainingDivergedError` if ``state`` holds a NaN or infinite value."""
    if not bool(all_finite(state)):
        raise TrainingDivergedError(
            f"training diverged: the parameters or optimiser state after step {step} are not "
            f"finite although the loss was ({_kept(last_saved)}); lower optim.lr")


def _kept(last_saved) -> str:
    return f"the last checkpoint is step {last_saved}" if last_saved is not None else "no checkpoint was written"
