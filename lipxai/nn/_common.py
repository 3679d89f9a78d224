"""Checks and small utilities shared by the layers (static shapes and dtypes only)."""

from __future__ import annotations

import jax.numpy as jnp


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


def pair(name: str, value) -> tuple[int, int]:
    """``3 -> (3, 3)``; ``(3, 5)`` unchanged; anything else is an error naming ``name``."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, int) and v >= 1 for v in value):
        raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}")
    return value
