"""Validation of user input at the public API boundary (before tracing).

Every check raises ``ValueError`` or ``TypeError`` with a message that names the
argument, what was expected and what was received.
"""

from __future__ import annotations

import numbers

import jax.numpy as jnp
import numpy as np


def floating_array(name: str, x, *, min_rank: int | None = None, rank: int | None = None):
    """Check that ``x`` is a floating array (optionally of a given rank); return it as a jax array."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        x = np.asarray(x)
        dtype = x.dtype
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
    dtype = getattr(labels, "dtype", None)
    if dtype is None:
        labels = np.asarray(labels)
        dtype = labels.dtype
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{name} must be an integer array, got dtype {dtype}")
    if tuple(np.shape(labels)) != (batch,):
        raise ValueError(f"{name} must have shape ({batch},), got {tuple(np.shape(labels))}")
    if not _is_tracer(labels) and batch > 0:
        values = np.asarray(labels)  # concrete: no jax op, which would be staged under jit
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"{name} must lie in [0, {num_classes}), got values in [{lo}, {hi}]"
            )
    return jnp.asarray(labels)


def non_negative(name: str, value):
    """Check a non-negative real scalar (or array of them when concrete)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
        return value
    if not _is_tracer(value):
        arr = np.asarray(value)
        if arr.size and float(arr.min()) < 0:
            raise ValueError(f"{name} must be >= 0, got minimum {float(arr.min())}")
    return value


def positive(name: str, value):
    """Check a strictly positive real scalar."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return value


def positive_int(name: str, value, *, minimum: int = 1):
    """Check an integer >= ``minimum``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def one_of(name: str, value, choices):
    """Check that ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


def _is_tracer(x) -> bool:
    import jax

    return isinstance(x, jax.core.Tracer)
