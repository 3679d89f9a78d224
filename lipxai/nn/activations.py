"""Gradient-norm-preserving 1-Lipschitz activations (the Jacobian is orthogonal almost everywhere)."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from lipxai.nn._common import check_features_input

#: Largest group sorted with an elementwise min/max network; larger groups use ``jnp.sort``.
SORTING_NETWORK_MAX_GROUP = 16


def group_sort(x: jax.Array, group_size: int) -> jax.Array:
    """Sort the last axis within consecutive groups of ``group_size`` (ascending).

    A permutation of coordinates that depends on ``x``: 1-Lipschitz and gradient
    norm preserving (Anil, Lucas & Grosse 2019, "Sorting out Lipschitz function
    approximation"). Small groups are sorted by an odd-even transposition network
    of ``min``/``max`` (``group_size`` rounds), which XLA fuses into elementwise
    code: on CPU its gradient is much faster than that of ``jnp.sort`` (see
    docs/results.md). Each round exchanges all its pairs at once (:func:`_exchange_pairs`),
    so the program grows with the number of rounds, not with the ``group_size**2 / 2``
    exchanges: unrolled exchange by exchange, XLA's compile time of the gradient (and of interval
    bounds of the gradient) grew faster than quadratically with the group size. Groups
    of more than two go through :func:`sorting_network`, whose derivative is one
    primitive (same values), so that ``lipxai.bounds`` bounds it with one rule.
    """
    channels = x.shape[-1]
    if channels % group_size:
        raise ValueError(f"GroupSort: the number of features ({channels}) is not divisible "
                         f"by group_size={group_size}")
    grouped = x.reshape(*x.shape[:-1], channels // group_size, group_size)
    if group_size > SORTING_NETWORK_MAX_GROUP:
        return jnp.sort(grouped, axis=-1).reshape(x.shape)
    if group_size <= 2:  # one exchange: lipxai.bounds decides its max/min routing itself
        return _sorting_rounds(grouped).reshape(x.shape)
    return sorting_network(grouped).reshape(x.shape)


def _sorting_rounds(v: jax.Array) -> jax.Array:
    """The odd-even transposition network on the last axis: as many rounds as elements."""
    for round_ in range(v.shape[-1]):
        v = _exchange_pairs(v, round_ % 2)
    return v


def _exchange_pairs(v: jax.Array, start: int) -> jax.Array:
    """One round of the odd-even transposition network: ``(min, max)`` of each pair
    ``(start, start + 1), (start + 2, start + 3), ...`` of the last axis, the others kept."""
    size = v.shape[-1]
    stop = start + (size - start) // 2 * 2
    if stop == start:
        return v
    pairs = v[..., start:stop].reshape(*v.shape[:-1], -1, 2)
    first, second = pairs[..., 0], pairs[..., 1]
    exchanged = jnp.stack([jnp.minimum(first, second), jnp.maximum(first, second)], axis=-1)
    return jnp.concatenate([v[..., :start], exchanged.reshape(*v.shape[:-1], stop - start),
                            v[..., stop:]], axis=-1)


def _tangent(v: jax.Array, t: jax.Array) -> jax.Array:
    """``J(v) t`` with ``J`` the Jacobian of the network at ``v`` (its own JVP)."""
    return jax.jvp(_sorting_rounds, (v,), (t,))[1]


def _cotangent(v: jax.Array, c: jax.Array) -> jax.Array:
    """``J(v)^T c`` (the network's own VJP)."""
    return jax.vjp(_sorting_rounds, v)[1](c)[0]


def _same_shape(v, t):
    if v.shape != t.shape:
        raise TypeError(f"sorting network derivative: shapes {v.shape} and {t.shape} differ")
    return t


def _derivative_primitive(name: str, impl) -> Primitive:
    prim = Primitive(name)
    prim.def_impl(jax.jit(impl))
    prim.def_abstract_eval(_same_shape)
    mlir.register_lowering(prim, mlir.lower_fun(impl, multiple_results=False))
    return prim


#: ``J(v) t`` and ``J(v)^T c`` for the Jacobian ``J`` of :func:`sorting_network` at ``v``
#: (lowered to the network's own JVP and VJP).  ``J`` is constant in ``v`` between ties
#: (a routing), so both are linear in their second operand with a zero derivative in ``v``;
#: each is the other's transpose.  ``lipxai.bounds`` bounds them with one rule each.
sorting_network_tangent_p = _derivative_primitive("sorting_network_tangent", _tangent)
sorting_network_cotangent_p = _derivative_primitive("sorting_network_cotangent", _cotangent)


def _register_derivatives(prim: Primitive, transpose: Primitive):
    def jvp(primals, tangents):
        v, t = primals
        return prim.bind(v, t), prim.bind(v, ad.instantiate_zeros(tangents[1]))

    def transposed(ct, v, t):
        return [None, ad.Zero(t.aval) if type(ct) is ad.Zero else transpose.bind(v, ct)]

    def batched(args, dims):
        size = next(a.shape[d] for a, d in zip(args, dims, strict=True) if d is not None)
        return prim.bind(*[batching.bdim_at_front(a, d, size)
                           for a, d in zip(args, dims, strict=True)]), 0

    ad.primitive_jvps[prim] = jvp
    ad.primitive_transposes[prim] = transposed
    batching.primitive_batchers[prim] = batched


_register_derivatives(sorting_network_tangent_p, sorting_network_cotangent_p)
_register_derivatives(sorting_network_cotangent_p, sorting_network_tangent_p)


@jax.custom_jvp
def sorting_network(v: jax.Array) -> jax.Array:
    """Sort the last axis of ``v`` with the odd-even transposition network (min/max rounds).

    Its values and derivatives are those of the network: the JVP is
    :data:`sorting_network_tangent_p` (the network's own JVP, ties split evenly as
    ``jax.grad`` of ``max`` does), which transposes to :data:`sorting_network_cotangent_p`.
    In a gradient's jaxpr the backward pass of the whole network is then one equation,
    ``J(v)^T c``, which ``lipxai.bounds`` bounds by the hull of ``c`` over the positions
    that each element may be sorted to, instead of interpreting ``group_size`` rounds of
    ``select_n``; the forward pass stays the min/max network, whose interval bounds (the
    network applied to the lower and to the upper bounds) are exact.
    """
    return _sorting_rounds(v)


@sorting_network.defjvp
def _sorting_network_jvp(primals, tangents):
    (v,), (t,) = primals, tangents
    return _sorting_rounds(v), sorting_network_tangent_p.bind(v, t)


class GroupSort(nn.Module):
    """GroupSort activation on the last (channel) axis; ``group_size=2`` is MaxMin of Anil et al."""

    group_size: int = 2

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_features_input("GroupSort", x)
        if not isinstance(self.group_size, int) or self.group_size < 1:
            raise ValueError(f"GroupSort: group_size must be a positive int, got {self.group_size!r}")
        return group_sort(x, self.group_size)


class FullSort(nn.Module):
    """Sort all channels: GroupSort with one group."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_features_input("FullSort", x)
        return jnp.sort(x, axis=-1)


class MaxMin(nn.Module):
    """``[max(x, 0), min(x, 0)]`` concatenated on the channel axis (doubles the channels).

    deel-lip's MaxMin: ``||max(x,0)||^2 + ||min(x,0)||^2 = ||x||^2``, so it is an
    isometry on each orthant and 1-Lipschitz overall.
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_features_input("MaxMin", x)
        return jnp.concatenate([jnp.maximum(x, 0), jnp.minimum(x, 0)], axis=-1)


class Householder(nn.Module):
    """Householder activation on channel pairs (Singla, Singla & Feizi 2022, ICLR).

    For each pair ``z`` and a learned unit vector ``v = (cos t, sin t)``:
    ``z`` if ``v.z > 0`` else ``(I - 2 v v^T) z``. The reflection fixes the
    hyperplane ``v.z = 0``, so the map is continuous, piecewise orthogonal and
    1-Lipschitz. The default angle ``t = -pi/4`` reproduces GroupSort(2) up to the
    order of the pair (descending).
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_features_input("Householder", x)
        channels = x.shape[-1]
        if channels % 2:
            raise ValueError(f"Householder: the number of features ({channels}) must be even")
        theta = self.param("theta", nn.initializers.constant(-math.pi / 4), (channels // 2,))
        v = jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=-1).astype(x.dtype)
        z = x.reshape(*x.shape[:-1], channels // 2, 2)
        dot = jnp.sum(z * v, axis=-1, keepdims=True)
        reflected = z - 2.0 * dot * v
        return jnp.where(dot > 0, z, reflected).reshape(x.shape)
