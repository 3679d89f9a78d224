"""Validation of user input at the public API boundary (before tracing), and the NaN rule.

Every check raises ``ValueError`` or ``TypeError`` with a message that names the
argument, what was expected and what was received.

What cannot be checked there (traced values under ``jit``, and data such as a NaN input)
follows one rule instead: an example whose input or argument is invalid gets an output that
cannot be mistaken for a result (:func:`nan_unless`: NaN, or False for a certificate).  It
costs one ``where`` on the output.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np


def _with_dtype(x):
    """``(x, dtype)``: an array-like without a dtype (a list, a scalar) as a numpy array."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        x = np.asarray(x)
        dtype = x.dtype
    return x, dtype


def floating_array(name: str, x, *, min_rank: int | None = None, rank: int | None = None):
    """Check that ``x`` is a floating array (optionally of a given rank); return it as a jax array."""
    x, dtype = _with_dtype(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {dtype}")
    ndim = np.ndim(x)
    if rank is not None and ndim != rank:
        raise ValueError(f"{name} must have rank {rank}, got shape {tuple(np.shape(x))}")
    if min_rank is not None and ndim < min_rank:
        raise ValueError(
            f"{name} must have rank >= {min_rank}, got shape {tuple(np.shape(x))}"
        )
    return jnp.asarray(x)


def labels_for(name: str, labels, num_classes: int, batch: int):
    """Check integer labels of shape ``[batch]`` in ``[0, num_classes)`` (values checked when concrete)."""
    labels, dtype = _with_dtype(labels)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{name} must be an integer array, got dtype {dtype}")
    if tuple(np.shape(labels)) != (batch,):
        raise ValueError(f"{name} must have shape ({batch},), got {tuple(np.shape(labels))}")
    if not is_tracer(labels) and batch > 0:
        values = np.asarray(labels)  # concrete: no jax op, which would be staged under jit
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"{name} must lie in [0, {num_classes}), got values in [{lo}, {hi}]"
            )
    return jnp.asarray(labels)


def non_negative(name: str, value):
    """Check a finite real ``>= 0`` (a scalar, or an array of them when concrete).

    NaN and infinities are rejected: ``nan < 0`` is False, so a bare ``value < 0`` test would
    let a NaN radius through and give NaN bounds that read as certificates. Traced values
    pass unchecked (the callers make their outputs NaN for invalid traced values)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        return value
    if not is_tracer(value):
        arr = np.asarray(value)
        if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
            raise TypeError(f"{name} must be a real number or array, got {arr.dtype}")
        bad = ~(np.isfinite(arr) & (arr >= 0))
        if bad.any():
            first = arr.reshape(-1)[np.flatnonzero(bad.reshape(-1))[0]]
            raise ValueError(f"{name} must be finite and >= 0 everywhere, got {first}")
    return value


def positive(name: str, value):
    """Check a finite real scalar ``> 0`` (NaN and infinities are rejected)."""
    if (not isinstance(value, numbers.Real) or isinstance(value, bool)
            or not (math.isfinite(value) and value > 0)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def positive_int(name: str, value, *, minimum: int = 1):
    """Check an integer >= ``minimum``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def non_empty(name: str, x):
    """Check that ``x`` holds at least one example (a non-empty axis 0).

    Every public function that takes a batch rejects an empty one the same way, rather than
    returning a mean over nothing (NaN) or failing deep inside a reshape."""
    shape = tuple(np.shape(x))
    if not shape or shape[0] == 0:
        raise ValueError(f"{name} must have at least one example, got shape {shape}")
    return x


def ordered_pair(name: str, value):
    """Check a pair ``(low, high)`` of finite reals with ``low <= high``; return it as a tuple.

    Traced entries pass unchecked (the callers make their outputs NaN for an empty range)."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be a pair (low, high), got {value!r}")
    concrete = [np.asarray(v) for v in value if not is_tracer(v)]
    for v in concrete:
        real = np.issubdtype(v.dtype, np.integer) or np.issubdtype(v.dtype, np.floating)
        if v.ndim or not real or not np.isfinite(v):
            raise ValueError(f"{name} must be a pair of finite numbers (low, high), got {value!r}")
    if len(concrete) == 2 and not value[0] <= value[1]:
        raise ValueError(f"{name} must have low <= high, got {value!r}")
    return tuple(value)


def finite_examples(x):
    """``bool[B]``: the examples of ``x [B, ...]`` with no NaN and no infinity."""
    return jnp.all(jnp.isfinite(x.reshape(x.shape[0], math.prod(x.shape[1:]))), axis=1)


def in_range(labels, num_classes: int):
    """``bool[B]``: which labels lie in ``[0, num_classes)`` (traced labels too)."""
    return (labels >= 0) & (labels < num_classes)


def nan_unless(valid, tree):
    """``tree`` with the examples where ``valid`` is False invalidated (the module's NaN rule).

    ``valid`` is ``bool[B]`` (or 0-d: the whole output); every leaf has the batch on axis 0.
    Floating leaves become NaN there, boolean leaves False (nothing is certified) and integer
    leaves -1 (no count, no class)."""
    valid = jnp.asarray(valid)

    def leaf_of(leaf):
        ok = valid.reshape(valid.shape + (1,) * (leaf.ndim - valid.ndim))
        if jnp.issubdtype(leaf.dtype, jnp.inexact):
            return jnp.where(ok, leaf, jnp.asarray(jnp.nan, leaf.dtype))
        if leaf.dtype == jnp.bool_:
            return ok & leaf
        return jnp.where(ok, leaf, jnp.asarray(-1, leaf.dtype))

    return jax.tree_util.tree_map(leaf_of, tree)


def one_of(name: str, value, choices):
    """Check that ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


def is_tracer(x) -> bool:
    """Whether ``x`` is traced (under ``jit``/``grad``/``vmap``), so its value cannot be checked."""
    return isinstance(x, jax.core.Tracer)
