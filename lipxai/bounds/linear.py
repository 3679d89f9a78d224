"""Linear bounds in the input, the values of ``interval(fun, method="symbolic")``
(:mod:`lipxai.bounds.symbolic`): ``A_lo eps + c_lo <= v <= A_hi eps + c_hi`` for every
``eps`` in ``[-1, 1]^n``, the input box normalised."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lipxai.bounds.interval import Interval


class Linear(NamedTuple):
    """``a_lo @ eps + c_lo <= v <= a_hi @ eps + c_hi`` with ``a_*`` of shape ``(n,) + v.shape``
    and ``eps`` in ``[-1, 1]^n`` (contracted over the leading axis).  When the lower and the
    upper bounds are the same objects, the value is exactly affine in the input."""

    a_lo: jax.Array
    c_lo: jax.Array
    a_hi: jax.Array
    c_hi: jax.Array

    @property
    def exact(self) -> bool:
        return self.a_lo is self.a_hi and self.c_lo is self.c_hi


class Diagonal(NamedTuple):
    """The coefficients of an input leaf in itself, unmaterialised: ``A[offset + j, b] =
    scale[b]`` at feature ``j`` of example ``b`` (flattened row-major), 0 elsewhere; ``A`` has
    ``n`` rows.  Layout rules and the first dense layer use it directly (no ``n x n`` identity
    product); every other rule materialises it with :func:`dense`."""

    scale: jax.Array
    offset: int
    n: int

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n,) + tuple(self.scale.shape)

    def dense(self) -> jax.Array:
        shape = self.scale.shape[1:]
        size = int(np.prod(shape, dtype=int))
        eye = jnp.eye(self.n, size, -self.offset, dtype=self.scale.dtype)
        return eye.reshape((self.n, 1) + tuple(shape)) * self.scale[None]


def densify(lin: Linear | None) -> Linear | None:
    """``lin`` with a :class:`Diagonal` coefficient materialised (other values unchanged)."""
    if lin is None or not isinstance(lin.a_lo, Diagonal):
        return lin
    return affine(lin.a_lo.dense(), lin.c_lo)  # Diagonals are exact (the inputs)


def affine(a, c) -> Linear:
    """The exact affine value ``a @ eps + c`` (same lower and upper bounds)."""
    return Linear(a, c, a, c)


def concretize(lin: Linear) -> Interval:
    """The interval of ``lin`` over ``eps`` in ``[-1, 1]^n`` (NaN bounds become infinite)."""
    lin = densify(lin)
    spread_lo = jnp.sum(jnp.abs(lin.a_lo), axis=0)
    spread_hi = spread_lo if lin.a_lo is lin.a_hi else jnp.sum(jnp.abs(lin.a_hi), axis=0)
    low, high = lin.c_lo - spread_lo, lin.c_hi + spread_hi
    return Interval(jnp.where(jnp.isnan(low), -jnp.inf, low),
                    jnp.where(jnp.isnan(high), jnp.inf, high))


def intersect(a: Interval, b: Interval) -> Interval:
    """``a`` intersected with ``b`` (both sound).  Where float rounding makes them cross, the
    result is the (tiny) gap between the two."""
    low, high = jnp.maximum(a.lower, b.lower), jnp.minimum(a.upper, b.upper)
    return Interval(jnp.minimum(low, high), jnp.maximum(low, high))
