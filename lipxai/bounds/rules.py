"""Interval rules for the primitives of ``jax.lax``: one sound rule per primitive.

Notation: an input ``a`` is an Interval ``[a_lo, a_hi]`` (points have ``a_lo = a_hi``);
``c = (lo + hi) / 2`` and ``r = (hi - lo) / 2`` are its centre and radius.

* Monotone non-decreasing primitives (shape ops, sums, max/min, pooling, sort, exp, tanh,
  ...) are exact: ``f(a_lo, b_lo, ...) <= f(a, b, ...) <= f(a_hi, b_hi, ...)``.
* Linear maps with a point operand (``dot_general``, ``conv_general_dilated``, ``mul``):
  centre-radius form ``f(c, W) +/- f(r, |W|)`` (Gowal et al. 2018, IBP), exact for affine
  maps; this covers the transposed convolutions and ``dot_general`` layouts of gradients.
* Both operands intervals: elementwise ``mul`` takes the exact min/max of the four corner
  products; ``dot_general``/``conv`` use the midpoint-radius product of Rump (1999),
  ``f(c_a, c_b) +/- (f(|c_a|, r_b) + f(r_a, |c_b|) + f(r_a, r_b))``, sound and at most 1.5x
  wider than the exact interval sum (which would need the [M, K, N] corner tensor).
* Comparisons are three-valued (``gt``: certainly true if ``a_lo > b_hi``, possibly true if
  ``a_hi > b_lo``) and ``select_n`` with an uncertain predicate returns the hull of the
  branches it may select: this is how ``jax.grad`` of ReLU / max / sort networks is bounded
  (Wicker et al., "Robust Explanation Constraints for Neural Networks", ICLR 2023).
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lipxai._core.xla_cpu import for_gradients
from lipxai.bounds.interval import (
    FULL_PRECISION,
    Interval,
    greater,
    is_interval,
    lower_of,
    upper_of,
)
from lipxai.bounds.patterns import (
    Permutation,
    masked_hull,
    rank_bounds,
    rank_candidates,
    sort_bounds,
    value_range,
)
from lipxai.bounds.registry import RULES, register_rule
from lipxai.nn.activations import sorting_network_cotangent_p, sorting_network_tangent_p

lo, hi = lower_of, upper_of


def _known_primitives() -> dict:
    """Primitives by name, from jax.extend plus the few lax ones it does not list yet."""
    import jax._src.lax.lax as lax_internal  # split/stack/unstack are not in jax.extend yet

    found = {}
    for module in (jax.extend.core.primitives, lax_internal):
        for attr in dir(module):
            prim = getattr(module, attr)
            if attr.endswith("_p") and isinstance(prim, jax.extend.core.Primitive):
                found.setdefault(prim.name, prim)
    return found


_PRIMITIVES = _known_primitives()


def _interval(lower, upper) -> Interval:
    return Interval(jnp.asarray(lower), jnp.asarray(upper))


# --------------------------------------------------------------------------- monotone ops


def _monotone(primitive, point_operands: tuple[int, ...] = ()):
    """Rule for a primitive that is non-decreasing in each operand (except ``point_operands``,
    e.g. indices, which must be points): ``[f(lowers), f(uppers)]``."""

    def rule(*args, **params):
        args = _clamp_domain(primitive.name, args)
        for i in point_operands:
            if i < len(args) and is_interval(args[i]):
                raise NotImplementedError(
                    f"lipxai.bounds: operand {i} of '{primitive.name}' (an index) must be a "
                    "point value, got an Interval"
                )
        lower = primitive.bind(*[lo(a) for a in args], **params)
        upper = primitive.bind(*[hi(a) for a in args], **params)
        if primitive.multiple_results:
            return [Interval(a, b) for a, b in zip(lower, upper, strict=True)]
        return Interval(lower, upper)

    return rule


#: Domains of the monotone functions that are not defined on the whole line.  Bounds are
#: clamped into the domain first: a value outside it would make the primitive return NaN,
#: so the true input lies inside it, and the clamp keeps the bounds sound and finite.
_DOMAINS = {"sqrt": (0.0, np.inf), "log": (0.0, np.inf), "rsqrt": (0.0, np.inf),
            "log1p": (-1.0, np.inf), "acosh": (1.0, np.inf), "atanh": (-1.0, 1.0),
            "asin": (-1.0, 1.0), "acos": (-1.0, 1.0), "erf_inv": (-1.0, 1.0)}


def _clamp_domain(name, args):
    if name not in _DOMAINS:
        return args
    low, high = _DOMAINS[name]
    return [Interval(jnp.clip(lo(a), low, high), jnp.clip(hi(a), low, high)) if is_interval(a)
            else a for a in args]


def _antitone(primitive):
    """Rule for a unary non-increasing primitive: ``[f(hi), f(lo)]``."""

    def rule(a, **params):
        (a,) = _clamp_domain(primitive.name, [a])
        return Interval(primitive.bind(hi(a), **params), primitive.bind(lo(a), **params))

    return rule


_MONOTONE = [
    # shapes, layouts, copies
    "reshape", "broadcast_in_dim", "transpose", "squeeze", "expand_dims", "rev", "slice",
    "concatenate", "pad", "copy", "stop_gradient", "reduce_precision", "split",
    "stack", "unstack", "optimization_barrier", "device_put", "sharding_constraint", "name",
    # sums and order statistics
    "add", "add_any", "reduce_sum", "reduce_max", "reduce_min", "reduce_and", "reduce_or",
    "reduce_window_sum", "reduce_window_max", "reduce_window_min", "cumsum", "cummax",
    "cummin", "cumlogsumexp", "max", "min", "clamp",
    # increasing unary functions
    "exp", "exp2", "log", "log1p", "expm1", "tanh", "logistic", "sqrt", "cbrt", "erf",
    "erf_inv", "atan", "asinh", "sinh", "asin", "atanh", "acosh", "floor", "ceil", "round",
    "sign",
]
_INDEXED = {  # monotone in the data operands, indices must be points
    "dynamic_slice": tuple(range(1, 64)),
    "dynamic_update_slice": tuple(range(2, 64)),
    "scatter": (1,),
}
_ANTITONE = ["neg", "rsqrt", "erfc", "acos"]


def _register_tables():
    for name in _MONOTONE:
        if name in _PRIMITIVES:
            register_rule(name, _monotone(_PRIMITIVES[name]))
    for name, points in _INDEXED.items():
        if name in _PRIMITIVES:
            register_rule(name, _monotone(_PRIMITIVES[name], points))
    for name in _ANTITONE:
        register_rule(name, _antitone(_PRIMITIVES[name]))


_register_tables()


@register_rule("sort")
def _sort(*operands, dimension, is_stable, num_keys):
    """Order statistics are monotone: sorting the lower and the upper bounds of the keys is
    exact (GroupSort, FullSort).  The other operands of a sort by key (argsort, the JVP of
    ``jnp.sort``) take, at each position, the hull of their values over the positions whose
    rank may land there (:func:`lipxai.bounds.patterns.sort_bounds`)."""
    return sort_bounds(operands, dimension=dimension, is_stable=is_stable, num_keys=num_keys)


def _keeps_positions(rule):
    """A layout rule that keeps a :class:`Permutation` when it appends the trailing index axis
    of size 1 (``expand_dims`` in the JVP of ``jnp.sort``, a reshape in ``take_along_axis``)."""

    def wrapped(operand, *args, **params):
        out = rule(operand, *args, **params)
        if (isinstance(operand, Permutation) and operand.shape == operand.rank_lower.shape
                and out.shape == operand.shape + (1,)):
            return Permutation(out.lower, out.upper, operand.rank_lower, operand.rank_upper,
                               operand.axis)
        return out

    return wrapped


for _name in ("broadcast_in_dim", "reshape"):
    register_rule(_name, _keeps_positions(RULES[_name]))


@register_rule("convert_element_type")
def _convert(a, *, new_dtype, **params):
    """Monotone, except conversion to bool, which is ``a != 0``."""
    if jnp.dtype(new_dtype) == jnp.bool_:
        return _ne(a, jnp.zeros((), lo(a).dtype))
    prim = lax.convert_element_type_p
    return Interval(
        prim.bind(lo(a), new_dtype=new_dtype, **params),
        prim.bind(hi(a), new_dtype=new_dtype, **params),
    )


# --------------------------------------------------------------------------- arithmetic


@register_rule("sub")
def _sub(a, b):
    return _interval(lo(a) - hi(b), hi(a) - lo(b))


def _times(x, y):
    """``x * y`` with the interval convention ``0 * inf = 0`` (a zero factor is exact)."""
    return jnp.where((x == 0) | (y == 0), jnp.zeros((), jnp.result_type(x, y)), x * y)


def _mul_point(a: Interval, w):
    """``a * w`` for a point ``w``: exact."""
    x, y = _times(a.lower, w), _times(a.upper, w)
    return _interval(jnp.minimum(x, y), jnp.maximum(x, y))


def _corners(op, a, b):
    """Exact bounds of an op monotone in each argument separately: min/max over 4 corners."""
    vals = [op(x, y) for x in (lo(a), hi(a)) for y in (lo(b), hi(b))]
    return _interval(functools.reduce(jnp.minimum, vals), functools.reduce(jnp.maximum, vals))


@register_rule("mul")
def _mul(a, b, **params):
    if not is_interval(b):
        return _mul_point(a, b)
    if not is_interval(a):
        return _mul_point(b, a)
    return _corners(_times, a, b)


def _reciprocal(b):
    """``1 / b``: ``[1/b_hi, 1/b_lo]`` if ``0`` is not in ``b``, else ``[-inf, inf]``."""
    lower, upper = lo(b), hi(b)
    safe = (lower > 0) | (upper < 0)
    inf = jnp.asarray(jnp.inf, lower.dtype)
    return _interval(
        jnp.where(safe, 1 / jnp.where(safe, upper, 1), -inf),
        jnp.where(safe, 1 / jnp.where(safe, lower, 1), inf),
    )


@register_rule("div")
def _div(a, b):
    if not jnp.issubdtype(lo(a).dtype, jnp.floating):
        raise NotImplementedError("lipxai.bounds: integer 'div' of an Interval is not supported")
    if not is_interval(b):
        x, y = a.lower / b, a.upper / b
        return _interval(jnp.minimum(x, y), jnp.maximum(x, y))
    return _mul(a, _reciprocal(b))


def abs_bounds(a):
    """Bounds of ``|a|``: ``0`` below if ``a`` straddles 0."""
    lower, upper = lo(a), hi(a)
    straddles = (lower < 0) & (upper > 0)
    small = jnp.minimum(jnp.abs(lower), jnp.abs(upper))
    return jnp.where(straddles, jnp.zeros_like(small), small), jnp.maximum(
        jnp.abs(lower), jnp.abs(upper)
    )


@register_rule("abs")
def _abs(a):
    return _interval(*abs_bounds(a))


@register_rule("square")
def _square(a):
    small, large = abs_bounds(a)
    return _interval(small * small, large * large)


@register_rule("one_minus_square")
def _one_minus_square(a):
    """``1 - a**2`` (the derivative of tanh since jax 0.11): decreasing in ``|a|``."""
    small, large = abs_bounds(a)
    return _interval(1 - large * large, 1 - small * small)


@register_rule("integer_pow")
def _integer_pow(a, *, y):
    if y == 0:
        return jnp.ones_like(lo(a))
    if y % 2 == 0:
        small, large = abs_bounds(a)
        base = _interval(small, large)
    else:
        base = a
    powered = _interval(lax.integer_pow(lo(base), abs(y)), lax.integer_pow(hi(base), abs(y)))
    return powered if y > 0 else _reciprocal(powered)


@register_rule("pow")
def _pow(a, b):
    """``a ** b``.  For ``a >= 0`` it is monotone in each argument separately, so the four
    corners are exact.  A negative ``a`` gives NaN for a non-integer ``b`` but real values
    for an integer-valued one (``x ** 2.0`` is ``pow``): with a point ``b``, the extremes over
    ``a`` lie at ``a_lo``, ``a_hi`` or ``0`` (``a ** b`` is monotone in ``|a|`` on each sign;
    the NaNs of a non-integer ``b`` are ignored), and are infinite when ``b < 0`` and ``0`` is
    in ``a`` (the pole); with an Interval ``b``, a possibly negative ``a`` gives
    ``[-inf, inf]``."""
    if is_interval(b):
        out = _corners(lax.pow, a, b)
        unknown = lo(a) < 0
    else:
        zero = jnp.clip(jnp.zeros_like(lo(a)), lo(a), hi(a))
        vals = [lax.pow(v, b) for v in (lo(a), hi(a), zero)]
        out = _interval(functools.reduce(jnp.fmin, vals), functools.reduce(jnp.fmax, vals))
        unknown = (lo(a) < 0) & (b < 0) & (hi(a) >= 0)
    inf = jnp.asarray(jnp.inf, out.lower.dtype)
    return _interval(jnp.where(unknown, -inf, out.lower), jnp.where(unknown, inf, out.upper))


def _trig_bounds(lower, upper, peak_phase):
    """Bounds of ``cos(t - peak_phase)`` over ``[lower, upper]``: 1 if a peak
    ``peak_phase + 2 k pi`` lies inside, -1 if a trough does, else the endpoint values."""
    def contains(phase):
        k = jnp.ceil((lower - phase) / (2 * math.pi))
        return phase + 2 * math.pi * k <= upper

    end_lo, end_hi = jnp.cos(lower - peak_phase), jnp.cos(upper - peak_phase)
    wide = upper - lower >= 2 * math.pi
    top = jnp.where(wide | contains(peak_phase), 1.0, jnp.maximum(end_lo, end_hi))
    bottom = jnp.where(wide | contains(peak_phase + math.pi), -1.0, jnp.minimum(end_lo, end_hi))
    return _interval(bottom.astype(lower.dtype), top.astype(lower.dtype))


@register_rule("sin")
def _sin(a, **params):
    return _trig_bounds(lo(a), hi(a), math.pi / 2)


@register_rule("cos")
def _cos(a, **params):
    return _trig_bounds(lo(a), hi(a), 0.0)


# --------------------------------------------------------------------------- linear maps


def _bilinear(op, a, b):
    """Bounds of a bilinear map ``op(a, b)`` (dot_general, conv) in centre-radius form."""
    if not is_interval(b):
        center, radius = op(a.center, b), op(a.radius, jnp.abs(b))
    elif not is_interval(a):
        center, radius = op(a, b.center), op(jnp.abs(a), b.radius)
    else:
        ca, ra, cb, rb = a.center, a.radius, b.center, b.radius
        center = op(ca, cb)
        radius = op(jnp.abs(ca), rb) + op(ra, jnp.abs(cb) + rb)  # bilinear: 3 products
    return _interval(center - radius, center + radius)


@register_rule("dot_general")
def _dot_general(a, b, **params):
    params = {**params, "precision": FULL_PRECISION}
    return _bilinear(lambda x, y: lax.dot_general_p.bind(x, y, **params), a, b)


@register_rule("conv_general_dilated")
def _conv(a, b, **params):
    """Centre-radius (``_bilinear``); the interpreter computes some packed instead
    (``lipxai.bounds.packed``).

    The outputs of these convolutions are used whole (by comparisons, or by a backward pass),
    so on CPU they get the threaded kernel of :func:`lipxai._core.xla_cpu.for_gradients`,
    which makes gradient bounds of a CNN faster (see docs/results.md)."""
    params = {**params, "precision": FULL_PRECISION}
    return _bilinear(for_gradients(lambda x, y: lax.conv_general_dilated_p.bind(x, y, **params)),
                     a, b)


# --------------------------------------------------------------------------- logic


RULES["gt"] = lambda a, b: greater(a, b, strict=True)
RULES["ge"] = lambda a, b: greater(a, b, strict=False)
RULES["lt"] = lambda a, b: greater(b, a, strict=True)
RULES["le"] = lambda a, b: greater(b, a, strict=False)


def _eq(a, b):
    """Certainly equal only if both are the same point; possibly equal if they overlap."""
    certain = (lo(a) == hi(a)) & (lo(b) == hi(b)) & (lo(a) == lo(b))
    possible = (lo(a) <= hi(b)) & (lo(b) <= hi(a))
    return _interval(certain, possible)


def _ne(a, b):
    equal = _eq(a, b)
    return _interval(~equal.upper, ~equal.lower)


RULES["eq"] = _eq
RULES["ne"] = _ne


@register_rule("is_finite")
def _is_finite(a):
    """Certainly finite if both bounds are; possibly finite unless ``a`` is one infinite value
    (``jax.nn.logsumexp`` and optax's cross-entropy test the max with it)."""
    finite_lo, finite_hi = jnp.isfinite(lo(a)), jnp.isfinite(hi(a))
    return _interval(finite_lo & finite_hi, finite_lo | finite_hi | (lo(a) < hi(a)))


def _boolean(name: str, *args):
    for a in args:
        if jnp.dtype(lo(a).dtype) != jnp.bool_:
            raise NotImplementedError(
                f"lipxai.bounds: bitwise '{name}' on integer Intervals is not supported "
                "(only boolean truth values)"
            )


@register_rule("not")
def _not(a):
    _boolean("not", a)
    return _interval(~hi(a), ~lo(a))


@register_rule("and")
def _and(a, b):
    _boolean("and", a, b)
    return _interval(lo(a) & lo(b), hi(a) & hi(b))


@register_rule("or")
def _or(a, b):
    _boolean("or", a, b)
    return _interval(lo(a) | lo(b), hi(a) | hi(b))


@register_rule("xor")
def _xor(a, b):
    _boolean("xor", a, b)
    certain = (lo(a) & ~hi(b)) | (~hi(a) & lo(b))
    possible = (hi(a) & ~lo(b)) | (~lo(a) & hi(b))
    return _interval(certain, possible)


@register_rule("select_n")
def _select_n(which, *cases):
    """``cases[which]``; with an uncertain ``which``, the hull of the cases it may pick."""
    if not is_interval(which):
        return _monotone(lax.select_n_p)(which, *cases)
    first = jnp.asarray(which.lower).astype(jnp.int32)
    last = jnp.asarray(which.upper).astype(jnp.int32)
    shape = first.shape or lo(cases[0]).shape
    lows = [jnp.broadcast_to(lo(c), shape) for c in cases]
    highs = [jnp.broadcast_to(hi(c), shape) for c in cases]
    possible = [(first <= i) & (i <= last) for i in range(len(cases))]
    # elementwise (no stacking: a stack + reduce over a new axis is slow on CPU)
    top, bottom = functools.reduce(jnp.maximum, lows), functools.reduce(jnp.minimum, highs)
    lower = functools.reduce(jnp.minimum, [jnp.where(p, v, top) for p, v in zip(possible, lows,
                                                                                strict=True)])
    upper = functools.reduce(jnp.maximum, [jnp.where(p, v, bottom)
                                           for p, v in zip(possible, highs, strict=True)])
    return _interval(lower, upper)


def _arg_extreme(a, axes, index_dtype, largest: bool):
    """Index bounds of argmax/argmin: the first and last positions that may be extreme."""
    (axis,) = axes
    lower, upper = (lo(a), hi(a)) if largest else (-hi(a), -lo(a))
    threshold = jnp.max(lower, axis=axis, keepdims=True)
    candidate = upper >= threshold
    n = lower.shape[axis]
    first = jnp.argmax(candidate, axis=axis)
    last = n - 1 - jnp.argmax(jnp.flip(candidate, axis=axis), axis=axis)
    return _interval(first.astype(index_dtype), last.astype(index_dtype))


RULES["argmax"] = lambda a, *, axes, index_dtype: _arg_extreme(a, axes, index_dtype, True)
RULES["argmin"] = lambda a, *, axes, index_dtype: _arg_extreme(a, axes, index_dtype, False)


# --------------------------------------------------------------------------- max-pool gradient


def _window_offsets(window_dimensions):
    return itertools.product(*[range(w) for w in window_dimensions])


def _strided(x, offset, strides, out_shape):
    limit = [o + s * (n - 1) + 1 for o, s, n in zip(offset, strides, out_shape, strict=True)]
    return lax.slice(x, offset, limit, strides)


def _add_windows(parts, offsets, strides, shape):
    """``out[offset + strides * k] += parts[i][k]`` for the window offsets, as pads with
    interior padding (elementwise ops that XLA fuses, unlike a scatter-add)."""
    total = None
    for part, offset in zip(parts, offsets, strict=True):
        spread = [(o, size - (o + s * (n - 1) + 1), s - 1)
                  for o, s, n, size in zip(offset, strides, part.shape, shape, strict=True)]
        placed = lax.pad(part, jnp.zeros((), part.dtype), spread)
        total = placed if total is None else total + placed
    return total


def _tile_windows(parts, window, shape):
    """:func:`_add_windows` for windows that tile (``window == strides``): each position is
    in at most one window, so the parts interleave: stack, transpose, reshape, pad."""
    out_shape = parts[0].shape
    blocks = jnp.stack(parts, axis=-1).reshape(out_shape + tuple(window))  # offsets row-major
    rank = len(out_shape)
    blocks = jnp.transpose(blocks, [a for i in range(rank) for a in (i, rank + i)])
    tiled = blocks.reshape(tuple(n * w for n, w in zip(out_shape, window, strict=True)))
    return jnp.pad(tiled, [(0, size - t) for size, t in zip(shape, tiled.shape, strict=True)])


@register_rule("select_and_scatter_add")
def _select_and_scatter_add(source, operand, *, select_prim, window_dimensions, window_strides,
                            padding):
    """Transpose of max pooling (``reduce_window_max``) in gradients: each window sends its
    ``source`` value to the position of its maximum in ``operand``.

    With a point ``operand`` the routing is fixed and the map is monotone in ``source``.  With
    an Interval ``operand``, a position may be the maximum of its window iff its upper bound
    reaches the largest lower bound of the window; if it is the only such position it
    certainly receives ``source``, otherwise it receives something in ``hull(0, source)``.
    """
    params = dict(select_prim=select_prim, window_dimensions=window_dimensions,
                  window_strides=window_strides, padding=padding)
    if not is_interval(operand):
        return _monotone(lax.select_and_scatter_add_p)(source, operand, **params)
    if select_prim is not lax.ge_p:
        raise NotImplementedError(
            "lipxai.bounds: 'select_and_scatter_add' is supported for max pooling only"
        )
    neg_inf = jnp.asarray(-jnp.inf, operand.dtype)
    pad_cfg = [(p_lo, p_hi, 0) for p_lo, p_hi in padding]
    op_lo = lax.pad(operand.lower, neg_inf, pad_cfg)
    op_hi = lax.pad(operand.upper, neg_inf, pad_cfg)
    out_shape = lo(source).shape
    offsets = list(_window_offsets(window_dimensions))
    window_max_lo = functools.reduce(
        jnp.maximum, [_strided(op_lo, o, window_strides, out_shape) for o in offsets]
    )
    candidates = [_strided(op_hi, o, window_strides, out_shape) >= window_max_lo
                  for o in offsets]
    unique = functools.reduce(jnp.add, [c.astype(jnp.int32) for c in candidates]) == 1
    src_lo, src_hi = lo(source), hi(source)
    zero = jnp.zeros_like(src_lo)
    parts_lo, parts_hi = [], []
    for candidate in candidates:
        parts_lo.append(jnp.where(candidate, jnp.where(unique, src_lo, jnp.minimum(src_lo, 0)),
                                  zero))
        parts_hi.append(jnp.where(candidate, jnp.where(unique, src_hi, jnp.maximum(src_hi, 0)),
                                  zero))
    if tuple(window_dimensions) == tuple(window_strides):
        out_lo, out_hi = (_tile_windows(p, window_dimensions, op_lo.shape)
                          for p in (parts_lo, parts_hi))
    else:
        out_lo, out_hi = (_add_windows(p, offsets, window_strides, op_lo.shape)
                          for p in (parts_lo, parts_hi))
    crop = tuple(slice(p_lo, p_lo + n) for (p_lo, _), n in zip(padding, operand.shape,
                                                                  strict=True))
    return _interval(out_lo[crop], out_hi[crop])


# --------------------------------------------------------------------------- gather / scatter-add


def _along_axis(collapsed, index_map, operand_batching, index_batching, ndim: int):
    """The axis of a take-along-axis ``gather`` / ``scatter-add`` (one index per position
    along one axis, every other axis a batching axis, as in ``jnp.take_along_axis`` and the
    JVP of ``jnp.sort``), or None for any other form."""
    if len(collapsed) != 1 or tuple(index_map) != tuple(collapsed):
        return None
    (axis,) = collapsed
    others = tuple(d for d in range(ndim) if d != axis)
    if tuple(operand_batching) != others or tuple(index_batching) != others:
        return None
    return axis


#: Index modes whose out-of-range behaviour the Interval-index rules model.
_INDEX_MODES = (lax.GatherScatterMode.CLIP, lax.GatherScatterMode.FILL_OR_DROP,
                lax.GatherScatterMode.PROMISE_IN_BOUNDS)


def _unsupported_indices(name: str):
    return NotImplementedError(
        f"lipxai.bounds: '{name}' with Interval indices is supported in the take-along-axis "
        "form only (jnp.take_along_axis, the JVP of jnp.sort: one index per position along "
        "one axis, the other axes batching axes), in mode clip, fill or promise_in_bounds")


def _index_bounds(indices: Interval, n: int, clamp: bool) -> tuple[jax.Array, jax.Array]:
    """Bounds of the indices (trailing index axis dropped) as int32 in ``[-1, n]``, where an
    index out of range stays out of range; ``clamp``: in ``[0, n - 1]``, as XLA clamps (CLIP)
    and as a promise of in-range indices allows (PROMISE_IN_BOUNDS)."""
    info = jnp.iinfo(indices.dtype)
    low, high = max(int(info.min), -1), min(int(info.max), n)

    def bound(a):
        a = jnp.clip(a[..., 0], low, high).astype(jnp.int32)
        return jnp.clip(a, 0, n - 1) if clamp else a

    return bound(indices.lower), bound(indices.upper)


def _positions_of(indices, axis: int, shape) -> Permutation | None:
    """``indices`` if it is a :class:`Permutation` of an axis of length ``shape[axis]`` that
    the equation indexes along ``axis`` with one position per element of ``shape``."""
    if (isinstance(indices, Permutation) and indices.axis == axis
            and tuple(indices.rank_lower.shape) == tuple(shape)
            and tuple(indices.shape) == tuple(shape) + (1,)):
        return indices
    return None


def _hull_between(values, first, last) -> Interval:
    """``hull(values[..., first[..., p]], ..., values[..., last[..., p]])`` for each ``p``
    (the last axis; ``first <= last`` in range)."""
    q = jnp.arange(lo(values).shape[-1], dtype=jnp.int32)
    return masked_hull(values, (first[..., :, None] <= q) & (q <= last[..., :, None]))


def _moved(value, axis: int):
    """``value`` (an Interval or a point) with ``axis`` moved last, as an Interval."""
    return Interval(jnp.moveaxis(lo(value), axis, -1), jnp.moveaxis(hi(value), axis, -1))


def _moved_back(value: Interval, axis: int) -> Interval:
    return Interval(jnp.moveaxis(value.lower, -1, axis), jnp.moveaxis(value.upper, -1, axis))


@register_rule("gather")
def _gather(operand, indices, *, dimension_numbers, slice_sizes, mode, fill_value, **params):
    """``out[..., p, ...] = operand[..., indices[..., p, ..., 0], ...]`` along one axis.

    Point indices: monotone in ``operand``.  Interval indices: the hull of ``operand`` over
    the positions between the index bounds (out-of-range indices give ``fill_value`` in
    FILL_OR_DROP mode, and are clamped in the other modes); a :class:`Permutation` (the
    sorted positions of ``jnp.sort``'s JVP): the hull over the sources whose rank may be
    ``p`` (:func:`lipxai.bounds.patterns.rank_candidates`)."""
    all_params = dict(dimension_numbers=dimension_numbers, slice_sizes=slice_sizes, mode=mode,
                      fill_value=fill_value, **params)
    if not is_interval(indices):
        return _monotone(lax.gather_p, (1,))(operand, indices, **all_params)
    dn = dimension_numbers
    ndim = lo(operand).ndim
    axis = _along_axis(dn.collapsed_slice_dims, dn.start_index_map, dn.operand_batching_dims,
                       dn.start_indices_batching_dims, ndim)
    if (axis is None or dn.offset_dims or any(s != 1 for s in slice_sizes)
            or indices.ndim != ndim + 1 or indices.shape[-1] != 1 or mode not in _INDEX_MODES):
        raise _unsupported_indices("gather")
    values = _moved(operand, axis)
    positions = _positions_of(indices, axis, lo(operand).shape)
    if positions is not None:
        mask = rank_candidates(jnp.moveaxis(positions.rank_lower, axis, -1),
                               jnp.moveaxis(positions.rank_upper, axis, -1))
        return _moved_back(masked_hull(values, mask), axis)
    n = values.shape[-1]
    fill = mode == lax.GatherScatterMode.FILL_OR_DROP
    first, last = (jnp.moveaxis(b, axis, -1) for b in _index_bounds(indices, n, not fill))
    out = _hull_between(values, jnp.clip(first, 0, n - 1), jnp.clip(last, 0, n - 1))
    if fill:
        fill_lo, fill_hi = _fill_bounds(fill_value, values.dtype)
        inside = (last >= 0) & (first <= n - 1)  # possibly in range
        outside = (first < 0) | (last > n - 1)  # possibly out of range: the fill value
        lower, upper = jnp.where(inside, out.lower, fill_lo), jnp.where(inside, out.upper, fill_hi)
        out = Interval(jnp.where(outside, jnp.minimum(lower, fill_lo), lower),
                       jnp.where(outside, jnp.maximum(upper, fill_hi), upper))
    return _moved_back(out, axis)


def _fill_bounds(fill_value, dtype):
    """Bounds of the value a FILL_OR_DROP gather gives out of range: ``fill_value``, or by
    default NaN for inexact types (read as unknown: infinite bounds) and an extreme value of
    integer types (bounded by the whole range of the type)."""
    if fill_value is None or np.isnan(fill_value):
        return tuple(jnp.asarray(v, dtype) for v in value_range(dtype))
    return jnp.asarray(fill_value, dtype), jnp.asarray(fill_value, dtype)


@register_rule("scatter-add")
def _scatter_add(operand, indices, updates, *, dimension_numbers, mode, **params):
    """``out = operand`` plus, for each update position ``p``, ``updates[p]`` added at
    ``indices[p]`` along one axis (the transpose of :func:`_gather`).

    Point indices: monotone in ``operand`` and ``updates``.  Interval indices: position ``q``
    certainly receives ``updates[p]`` if ``indices[p]`` is the point ``q``, possibly if ``q``
    is between its bounds, so it gets ``operand[q]`` plus the sum of the certain updates and
    of ``hull(0, updates[p])`` over the possible ones (out-of-range updates are dropped,
    except in CLIP mode, which clamps them).  A :class:`Permutation` sends exactly one
    update to each ``q``, that of its rank: ``operand[q]`` plus the hull of ``updates`` over
    the ranks ``q`` may have."""
    all_params = dict(dimension_numbers=dimension_numbers, mode=mode, **params)
    if not is_interval(indices):
        return _monotone(lax.scatter_add_p, (1,))(operand, indices, updates, **all_params)
    dn = dimension_numbers
    ndim = lo(operand).ndim
    axis = _along_axis(dn.inserted_window_dims, dn.scatter_dims_to_operand_dims,
                       dn.operand_batching_dims, dn.scatter_indices_batching_dims, ndim)
    if (axis is None or dn.update_window_dims or indices.ndim != ndim + 1
            or indices.shape[-1] != 1 or tuple(lo(updates).shape) != tuple(indices.shape[:-1])
            or mode not in _INDEX_MODES):
        raise _unsupported_indices("scatter-add")
    base, added = _moved(operand, axis), _moved(updates, axis)
    positions = _positions_of(indices, axis, lo(updates).shape)
    if positions is not None and tuple(positions.shape[:-1]) == tuple(lo(operand).shape):
        hull = _hull_between(added, jnp.moveaxis(positions.rank_lower, axis, -1),
                             jnp.moveaxis(positions.rank_upper, axis, -1))
        return _moved_back(Interval(base.lower + hull.lower, base.upper + hull.upper), axis)
    n = base.shape[-1]
    first, last = (jnp.moveaxis(b, axis, -1)[..., None, :]
                   for b in _index_bounds(indices, n, mode == lax.GatherScatterMode.CLIP))
    q = jnp.arange(n, dtype=jnp.int32)[:, None]
    possible = (first <= q) & (q <= last)  # [..., q, p]
    certain = possible & (first == last)
    zero = jnp.zeros((), added.dtype)

    def total(bound, widen):
        bound = bound[..., None, :]
        return jnp.sum(jnp.where(certain, bound, jnp.where(possible, widen(bound, zero), zero)),
                       axis=-1, dtype=added.dtype)

    return _moved_back(Interval(base.lower + total(added.lower, jnp.minimum),
                                base.upper + total(added.upper, jnp.maximum)), axis)


# --------------------------------------------------------------------------- sorting networks


def _sorting_network_derivative(primitive, transposed: bool):
    """Rule of ``J(v) t`` (``transposed``: ``J(v)^T t``) for the Jacobian ``J`` of
    :func:`lipxai.nn.activations.sorting_network`, along the last axis.

    ``J`` is a product of the exchanges' Jacobians (identity, swap, or all 1/2 at a tie), so
    it is non-negative and doubly stochastic, and ``J[p, q] > 0`` only where the sorted value
    at ``p`` equals ``v[q]``, i.e. where ``p`` lies within the ranks ``q`` may take
    (:func:`lipxai.bounds.patterns.rank_bounds`, ties either way).  So ``(J t)[p]`` lies in
    the hull of ``t[q]`` over the ``q`` that may land at ``p``, and ``(J^T t)[q]`` in the hull
    of ``t`` over the ranks of ``q``; with a point ``v``, ``J`` is known and non-negative, and
    the map is monotone in ``t``."""
    monotone = _monotone(primitive)

    def rule(v, t):
        if not is_interval(v):
            return monotone(v, t)
        rank_lo, rank_hi = rank_bounds(v, stable=False)
        if transposed:
            return _hull_between(t, rank_lo, rank_hi)
        return masked_hull(t, rank_candidates(rank_lo, rank_hi))

    return rule


register_rule("sorting_network_tangent",
              _sorting_network_derivative(sorting_network_tangent_p, transposed=False))
register_rule("sorting_network_cotangent",
              _sorting_network_derivative(sorting_network_cotangent_p, transposed=True))


def registered_primitives() -> list[str]:
    """Names of the primitives with an interval rule (sorted)."""
    return sorted(RULES)

