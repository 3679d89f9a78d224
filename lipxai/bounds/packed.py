"""Packed intervals: lower and upper bounds side by side along the feature (last) axis.

A plain interval pass computes a convolution twice, ``conv(c, W) -/+ conv(r, |W|)``, and then
applies bias, ReLU and pooling once to each bound.  XLA cannot fuse that into the
convolutions (two convolutions feed each consumer), so on CPU the full-size activations are
written and read several times, while the plain forward pass is one fused kernel.  With the
bounds packed as ``[lower | upper]`` along the features, one convolution with the kernel

    [[W+, W-],        (rows: input features of lower, then of upper;
     [W-, W+]]         columns: output features of lower, then of upper)

gives ``lower' = conv(lower, W+) + conv(upper, W-)`` and ``upper' = conv(lower, W-) +
conv(upper, W+)`` (exact interval bounds of a linear map, Gowal et al. 2018), and every
following monotone op that leaves the last axis alone (adding a point, ``max``/``min``,
reshape, max/sum pooling, ...) is one op on the packed array: the chain fuses as the forward
pass does.  It costs twice the convolution FLOPs of the centre-radius form and still comes
out faster on CPU, where it saves the extra passes over the activations; on a GPU the two
forms cost about the same (figures in docs/results.md, "Design measurements behind library
choices").

Only convolutions whose output reaches nothing but lane-wise ops, calls and further
convolutions are packed (:func:`stays_packed`): in ``jax.grad`` the pre-activations also
feed the ReLU derivative, and a value that is both packed and unpacked costs more than the
centre-radius form.

:func:`apply` evaluates one equation on packed operands when a lane-wise rule exists, and
returns ``None`` otherwise (the interpreter then unpacks them and uses the plain rule).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax
from jax.extend import core as jcore

from lipxai._core.jaxpr import BODIES, bind
from lipxai.bounds.interval import FULL_PRECISION, Interval, PackedInterval
from lipxai.bounds.registry import PACKED_RULES, register_packed_rule

def apply(eqn, invals):
    """``eqn`` on operands of which at least one is a PackedInterval, or None."""
    rule = PACKED_RULES.get(eqn.primitive.name)
    return None if rule is None else rule(eqn, invals)


def features_last(dimension_numbers, ndim: int) -> bool:
    """Whether a convolution has its lhs and output features on the last axis."""
    lhs_spec, _, out_spec = dimension_numbers
    return lhs_spec[1] == ndim - 1 and out_spec[1] == ndim - 1


#: Call-like primitives: their rules pass PackedIntervals on to their body as they are.
CALLS = frozenset({*BODIES, "remat2", "checkpoint"})

#: An unpacked input is packed for a convolution only if it has at most this many features
#: (an image's channels): packing it costs a concatenation and twice the FLOPs.
MAX_FEATURES_TO_PACK = 4

#: How far :func:`stays_packed` follows a chain of lane-wise consumers.
_CHAIN_DEPTH = 16


def uses(jaxpr) -> dict:
    """The equations of ``jaxpr`` that read each variable."""
    readers: dict = {}
    for eqn in jaxpr.eqns:
        for var in eqn.invars:
            if not isinstance(var, jcore.Literal):
                readers.setdefault(var, []).append(eqn)
    return readers


def stays_packed(var, readers, depth: int = _CHAIN_DEPTH) -> bool:
    """Whether every reader of ``var``, and of what they compute, keeps it packed until a
    convolution, a call or the end: lane-wise ops (:data:`PACKED_RULES`), calls and
    convolutions.  In the forward pass (conv, bias, ReLU, pooling) it holds; in the jaxpr of
    ``jax.grad`` the pre-activations also feed the ReLU derivative (``x > 0``), which would
    unpack them, and a value needed both packed and unpacked costs more than the
    centre-radius form (measured slower on the benchmark CNN, see docs/results.md)."""
    if depth == 0:
        return False
    for eqn in readers.get(var, ()):
        name = eqn.primitive.name
        if name in CALLS or name in PACKING:
            continue
        if name not in PACKED_RULES:
            return False
        if not all(stays_packed(out, readers, depth - 1) for out in eqn.outvars):
            return False
    return True


def worth_packing(eqn, invals) -> bool:
    """Whether a convolution with an Interval input and a point kernel is computed packed:
    the input is packed already or has at most :data:`MAX_FEATURES_TO_PACK` features, the
    features are last and there are no feature or batch groups."""
    lhs, w = invals
    params = eqn.params
    if not isinstance(lhs, Interval) or isinstance(w, Interval):
        return False
    if params["feature_group_count"] != 1 or params["batch_group_count"] != 1:
        return False
    if not features_last(params["dimension_numbers"], lhs.ndim):
        return False
    return isinstance(lhs, PackedInterval) or lhs.shape[-1] <= MAX_FEATURES_TO_PACK


def packed_kernel(w, rhs_spec):
    """``[[W+, W-], [W-, W+]]`` along the kernel's (input, output) feature axes."""
    out_axis, in_axis = rhs_spec[0], rhs_spec[1]
    pos, neg = jnp.maximum(w, 0), jnp.minimum(w, 0)
    from_lower = jnp.concatenate([pos, neg], axis=out_axis)
    from_upper = jnp.concatenate([neg, pos], axis=out_axis)
    return jnp.concatenate([from_lower, from_upper], axis=in_axis)


def conv(eqn, invals) -> PackedInterval:
    """Bounds of ``conv(lhs, w)`` for a point kernel, packed (see :func:`worth_packing`)."""
    lhs, w = invals
    data = (lhs.packed if isinstance(lhs, PackedInterval)
            else jnp.concatenate([lhs.lower, lhs.upper], axis=-1))
    params = {**eqn.params, "precision": FULL_PRECISION}
    kernel = packed_kernel(w, params["dimension_numbers"].rhs_spec)
    return PackedInterval(lax.conv_general_dilated_p.bind(data, kernel, **params))


#: Equations computed packed when :func:`worth_packing` and :func:`stays_packed` agree.
PACKING = {"conv_general_dilated": conv}


def _tiled(value, features: int):
    """A point operand of a lane-wise op with a packed one: a scalar as it is, an array (of the
    unpacked shape) with its last axis repeated; None for any other shape."""
    value = jnp.asarray(value)
    if value.ndim == 0:
        return value
    if value.shape[-1] != features:
        return None
    return jnp.concatenate([value, value], axis=-1)


def _features(invals) -> int:
    return next(v.shape[-1] for v in invals if isinstance(v, PackedInterval))


@register_packed_rule("add", "max", "min")
def _monotone_binary(eqn, invals):
    """Non-decreasing in both operands: lower from lowers, upper from uppers."""
    features = _features(invals)
    args = []
    for v in invals:
        if isinstance(v, PackedInterval):
            args.append(v.packed)
        elif isinstance(v, Interval):
            return None
        else:
            tiled = _tiled(v, features)
            if tiled is None:
                return None
            args.append(tiled)
    return PackedInterval(bind(eqn, args))


@register_packed_rule("sub")
def _sub(eqn, invals):
    """``a - b`` with a packed ``a`` and a point ``b`` (non-decreasing in ``a``)."""
    a, b = invals
    if not isinstance(a, PackedInterval) or isinstance(b, Interval):
        return None
    return _monotone_binary(eqn, invals)


def _unary(eqn, x: PackedInterval, **params):
    """A structural op on ``x.packed`` with ``params`` replacing the equation's own."""
    return PackedInterval(eqn.primitive.bind(x.packed, **{**eqn.params, **params}))


def _last_axis_kept(axes, ndim: int) -> bool:
    return ndim - 1 not in tuple(axes)


@register_packed_rule("reduce_max", "reduce_min", "reduce_sum")
def _reduce(eqn, invals):
    (x,) = invals
    return _unary(eqn, x) if _last_axis_kept(eqn.params["axes"], x.ndim) else None


@register_packed_rule("reshape")
def _reshape(eqn, invals):
    (x,) = invals
    sizes = tuple(eqn.params["new_sizes"])
    if eqn.params.get("dimensions") is not None or not sizes or sizes[-1] != x.shape[-1]:
        return None
    return _unary(eqn, x, new_sizes=sizes[:-1] + (2 * sizes[-1],))


@register_packed_rule("broadcast_in_dim")
def _broadcast(eqn, invals):
    (x,) = invals[:1]
    shape, dims = tuple(eqn.params["shape"]), tuple(eqn.params["broadcast_dimensions"])
    if len(invals) != 1 or not dims or dims[-1] != len(shape) - 1 or shape[-1] != x.shape[-1]:
        return None
    return _unary(eqn, x, shape=shape[:-1] + (2 * shape[-1],))


@register_packed_rule("transpose")
def _transpose(eqn, invals):
    (x,) = invals
    perm = tuple(eqn.params["permutation"])
    return _unary(eqn, x) if perm[-1] == len(perm) - 1 else None


@register_packed_rule("slice")
def _slice(eqn, invals):
    (x,) = invals
    start, limit = eqn.params["start_indices"], eqn.params["limit_indices"]
    strides = eqn.params["strides"] or (1,) * x.ndim
    if start[-1] != 0 or limit[-1] != x.shape[-1] or strides[-1] != 1:
        return None
    return _unary(eqn, x, limit_indices=tuple(limit[:-1]) + (2 * x.shape[-1],))


@register_packed_rule("pad")
def _pad(eqn, invals):
    x, value = invals
    config = eqn.params["padding_config"]
    if not isinstance(x, PackedInterval) or isinstance(value, Interval) or any(config[-1]):
        return None
    return PackedInterval(lax.pad(x.packed, jnp.asarray(value, x.dtype), config))


@register_packed_rule("squeeze")
def _squeeze(eqn, invals):
    (x,) = invals
    dims = tuple(d % x.ndim for d in eqn.params["dimensions"])
    return _unary(eqn, x) if _last_axis_kept(dims, x.ndim) else None


@register_packed_rule("convert_element_type")
def _convert(eqn, invals):
    (x,) = invals
    floating = jnp.issubdtype(eqn.params["new_dtype"], jnp.floating)
    return _unary(eqn, x) if floating and jnp.issubdtype(x.dtype, jnp.floating) else None


@register_packed_rule("copy", "copy_p")
def _copy(eqn, invals):
    return _unary(eqn, invals[0])


@register_packed_rule("reduce_window_max", "reduce_window_sum", "reduce_window_min")
def _reduce_window(eqn, invals):
    (x,) = invals
    p = eqn.params
    last = (p["window_dimensions"][-1], p["window_strides"][-1], tuple(p["padding"][-1]),
            p["base_dilation"][-1], p["window_dilation"][-1])
    return _unary(eqn, x) if last == (1, 1, (0, 0), 1, 1) else None
