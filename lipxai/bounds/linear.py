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


def negate(lin: Linear) -> Linear:
    """``-lin`` (its lower and upper bounds swap)."""
    if lin.exact:
        return affine(-lin.a_lo, -lin.c_lo)
    return Linear(-lin.a_hi, -lin.c_hi, -lin.a_lo, -lin.c_lo)


def broadcast(lin: Linear, shape) -> Linear | None:
    """``lin`` broadcast to ``shape`` (jaxprs broadcast size-1 axes implicitly), or None if
    that would move or broadcast the example axis."""
    shape = tuple(shape)
    if lin is None or tuple(lin.c_lo.shape) == shape:
        return lin
    own = tuple(lin.c_lo.shape)
    if len(own) != len(shape) or own[0] != shape[0]:
        return None

    def to(a, lead):
        return jnp.broadcast_to(a, a.shape[:lead] + shape)

    a_lo, c_lo = to(lin.a_lo, 1), to(lin.c_lo, 0)
    if lin.exact:
        return affine(a_lo, c_lo)
    return Linear(a_lo, c_lo, to(lin.a_hi, 1), to(lin.c_hi, 0))


def sum_terms(terms, shape) -> Linear | None:
    """Sum of Linears (constants have ``A = None``); at least one has an ``A``."""
    terms = [t if t.a_lo is None else broadcast(t, shape) for t in terms]
    if any(t is None for t in terms):
        return None
    exact = all((t.a_lo is t.a_hi) and (t.c_lo is t.c_hi) for t in terms)

    def total(values):
        values = [v for v in values if v is not None]
        out = values[0]
        for v in values[1:]:
            out = out + v
        return out

    a_lo, c_lo = total([t.a_lo for t in terms]), total([t.c_lo for t in terms])
    if exact:
        return affine(a_lo, jnp.broadcast_to(c_lo, shape))
    a_hi, c_hi = total([t.a_hi for t in terms]), total([t.c_hi for t in terms])
    return Linear(a_lo, jnp.broadcast_to(c_lo, shape), a_hi, jnp.broadcast_to(c_hi, shape))
