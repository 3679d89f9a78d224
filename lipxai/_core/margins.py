"""The classification margin ``m = f_y - max_{j != y} f_j`` of logits ``f [B, C]``, and its
parts: the certificates (``m > 0`` on bounds), the boundary search (``m = 0``) and the eikonal
regulariser (``||grad m|| = 1``) all read the runner-up class the same way."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def others(logits, target):
    """``logits [B, C]`` with each example's ``target`` class set to ``-inf``: the competitors."""
    return jnp.where(jax.nn.one_hot(target, logits.shape[1], dtype=bool), -jnp.inf, logits)


def class_logit(logits, target):
    """``f_y``: each example's logit of its ``target`` class, ``[B]``."""
    return jnp.take_along_axis(logits, target[:, None], axis=1)[:, 0]


def best_other(logits, target):
    """``max_{j != y} f_j``, ``[B]`` (``-inf`` with one class)."""
    return jnp.max(others(logits, target), axis=1)


def runner_up(logits, target):
    """The index of ``max_{j != y} f_j`` (the first on ties), ``int[B]``: picking the
    runner-up by index keeps a float equality test out of the margin's derivatives."""
    return jnp.argmax(others(logits, target), axis=1)


def margin(logits, target):
    """``f_y - max_{j != y} f_j``, ``[B]``: positive iff ``target`` is the unique top class."""
    return class_logit(logits, target) - best_other(logits, target)
