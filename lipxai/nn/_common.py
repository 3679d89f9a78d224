"""Checks and small utilities shared by the layers (static shapes and dtypes only)."""

from __future__ import annotations

import numbers

import jax.numpy as jnp

from lipxai._core.checks import positive_int


def check_method(layer: str, method: str, methods) -> None:
    if method not in methods:
        raise ValueError(f"{layer}: method must be one of {list(methods)}, got {method!r}")


def check_features_input(layer: str, x, *, min_rank: int = 1, rank: int | None = None) -> None:
    """Raise a clear error for non-float inputs or a wrong rank (shapes are static under jit)."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{layer}: input x must be a floating-point array, got dtype {x.dtype}")
    if rank is not None and x.ndim != rank:
        raise ValueError(f"{layer}: input x must have rank {rank}, got shape {tuple(x.shape)}")
    if x.ndim < min_rank:
        raise ValueError(f"{layer}: input x must have rank >= {min_rank}, got shape {tuple(x.shape)}")


def check_sizes(layer: str, **sizes) -> None:
    """Raise ``ValueError`` naming the layer and the field unless every size is an int >= 1
    (``features=0`` would build an empty kernel, ``iters=0`` an unnormalised one)."""
    for name, value in sizes.items():
        positive_int(f"{layer}: {name}", value)


def pair(name: str, value) -> tuple[int, int]:
    """``3 -> (3, 3)``; ``(3, 5)`` unchanged; anything else is an error naming ``name``."""
    def ok(v):
        return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1

    values = (value, value) if isinstance(value, numbers.Integral) else value
    if not isinstance(values, (tuple, list)) or len(values) != 2 or not all(map(ok, values)):
        raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}")
    return tuple(int(v) for v in values)
