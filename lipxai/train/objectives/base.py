"""What every training-objective term shares: the batch it sees (:class:`Context`), the term
itself (:class:`Term`), the linear ramp of its schedules, and the checks of its hyperparameters.

A term is a pure function ``Context -> (value, aux)``: ``value`` a float32 scalar already
multiplied by the term's own coefficient (α, λ, β, ...), ``aux`` a dict of unweighted scalar
diagnostics.  Terms are differentiated with respect to ``context.variables["params"]`` by the
train step (or by a user's own loop); whatever must not carry a gradient (an adversarial
example, a saliency mask) is wrapped in :func:`jax.lax.stop_gradient` by the term.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


@dataclasses.dataclass(frozen=True)
class Context:
    """One batch as a term sees it.

    Attributes:
      apply: ``apply(variables, x) -> logits [B, C]``, pure (no collection is mutated).
      variables: the model's variables (``{"params": ..., other collections}``).
      x: float inputs ``[B, ...]``.
      y: ``int[B]`` labels.
      key: a PRNG key of its own for this term, or None when the caller gave none.
      progress: float32 scalar in [0, 1], the fraction of training done (drives schedules).
      logits: ``apply(variables, x)``, computed once by the objective.
      task_loss: ``task_loss(logits, y) -> scalar``, the objective's task loss.
      domain: ``(low, high)``, the range of valid inputs (adversarial examples and input
        boxes are clipped to it), or None for no clipping.
    """

    apply: Callable
    variables: Any
    x: jax.Array
    y: jax.Array
    key: jax.Array | None
    progress: jax.Array
    logits: jax.Array
    task_loss: Callable
    domain: tuple[float, float] | None = None

    def model(self, x):
        """``apply(variables, x)``: the logits at other inputs with the same variables."""
        return self.apply(self.variables, x)

    def clip(self, x):
        """``x`` clipped to :attr:`domain` (unchanged when there is none)."""
        return x if self.domain is None else jnp.clip(x, *self.domain)


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy of ``logits [B, C]`` and integer ``labels [B]`` (the default
    task loss, and the loss that adversarial terms take at their adversarial examples)."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


class Term(NamedTuple):
    """A named objective term: ``fn(context) -> (weighted scalar, aux dict)``; ``needs_key``:
    it samples (random starts, noise) and fails without a key."""

    name: str
    fn: Callable[[Context], tuple[jax.Array, dict]]
    needs_key: bool = False


def ramp(progress, fraction: float):
    """The linear warm-up factor ``min(1, progress / fraction)`` (1 from the start when
    ``fraction == 0``): Wicker et al. 2023 ramp ε and γ this way from 0 over the first part of
    training, as IBP training does (Gowal et al. 2018)."""
    if fraction == 0:
        return jnp.ones((), jnp.float32)
    return jnp.clip(jnp.asarray(progress, jnp.float32) / fraction, 0.0, 1.0)


def nonnegative(name: str, value) -> float:
    """``value`` as a float when it is a finite real >= 0, else ValueError naming ``name``."""
    if (not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value)
            or value < 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def positive(name: str, value) -> float:
    """``value`` as a float when it is a finite real > 0, else ValueError naming ``name``."""
    if nonnegative(name, value) == 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def fraction(name: str, value, *, closed: bool = True) -> float:
    """``value`` in [0, 1] (``closed``) or in (0, 1), else ValueError naming ``name``."""
    value = nonnegative(name, value)
    if value > 1 or (not closed and value in (0.0, 1.0)):
        interval = "[0, 1]" if closed else "(0, 1)"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return value


def count(name: str, value, *, minimum: int = 1) -> int:
    """``value`` as an int when it is an integer >= ``minimum``, else ValueError naming ``name``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def choice(name: str, value, options) -> str:
    """``value`` when it is one of ``options``, else ValueError naming ``name``."""
    if value not in options:
        raise ValueError(f"{name} must be one of {sorted(options)}, got {value!r}")
    return value
