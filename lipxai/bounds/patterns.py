"""Facts about ``max`` that ``jax.grad`` relies on, which elementwise intervals cannot see.

``jax.grad`` routes the cotangent of ``max(a, b)`` with ``a == max(a, b)`` and that of
``reduce_max(u, axes)`` with ``u == max(u)`` (broadcast back), divided by the number of ties.
As intervals, ``a`` and ``max(a, b)`` overlap whenever ``a`` is not a point, so every routing
mask would look undecided even when ``a >> b``, and the tie count would include 0.
:class:`MaxFacts` follows the dataflow of one jaxpr and decides these equations exactly:

* ``a == max(a, b)`` is ``a >= b``; ``a == min(a, b)`` is ``a <= b`` (NaN aside), decided
  from the intervals of ``a`` and ``b`` and, when given, from bounds of ``a - b``;
* ``u_i == max_j u_j`` is certainly true if ``lo_i >= max_{j != i} hi_j`` and possibly true
  if ``hi_i >= max_j lo_j``;
* the ``reduce_sum`` of that indicator over the same axes is at least 1.

Sorting has the same blind spot: the JVP of ``jnp.sort`` sorts an ``iota`` along with the
keys and moves tangents with the sorted positions (``gather``; ``scatter-add`` in the
transpose), and the interval of a sorted position forgets which positions were possible.
:func:`sort_bounds` bounds a multi-operand ``sort`` from the *ranks* the keys may take
(:func:`rank_bounds`), and :class:`MaxFacts` marks a sorted ``iota`` along the sorted axis
as a :class:`Permutation`, which keeps those ranks for the ``gather`` / ``scatter-add`` rules.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jcore

from lipxai._core.windows import from_window_positions, window_position
from lipxai.bounds.interval import (
    Interval,
    as_interval,
    greater,
    is_interval,
    lower_of,
    upper_of,
)


def _var(atom):
    """``atom`` if it is a variable (hashable, has dataflow), else None (a literal)."""
    return None if isinstance(atom, jcore.Literal) else atom


def _keepdims_shape(shape, axes):
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


#: Reductions over at most this many elements per output decide ``u == max(u)`` position by
#: position with elementwise ops on slices, which XLA fuses into one loop; larger ones with
#: reductions.  XLA:CPU runs the reductions as one-core YNNPACK fusions, much slower than the
#: one fused loop for small windows such as a 2x2 max-pool (see docs/results.md, "Design
#: measurements behind library choices").
MAX_SLICED_WINDOW = 16


def is_max_along(value: Interval, axes) -> Interval:
    """Three-valued ``value == max(value, axes)`` (broadcast), per element.

    ``u_i`` is certainly the maximum if ``lo_i >= max_{j != i} hi_j`` and possibly if
    ``hi_i >= max_j lo_j``."""
    axes = tuple(sorted(axes))
    if math.prod(value.shape[a] for a in axes) <= MAX_SLICED_WINDOW:
        return _is_max_by_position(value, axes)
    lower, upper = value.lower, value.upper
    top = jnp.max(upper, axis=axes, keepdims=True)
    ties = jnp.sum(upper == top, axis=axes, keepdims=True)
    second = jnp.max(jnp.where(upper == top, -jnp.inf, upper), axis=axes, keepdims=True)
    others = jnp.where((upper < top) | (ties > 1), top, second)  # max over the others
    certain = lower >= others
    possible = upper >= jnp.max(lower, axis=axes, keepdims=True)
    return Interval(certain, possible)


def _is_max_by_position(value: Interval, axes) -> Interval:
    """:func:`is_max_along` on small windows: one keepdims slice per window position, the
    maximum over the others from prefix and suffix maxima, reassembled by concatenation."""
    sizes = [value.shape[a] for a in axes]
    positions = list(itertools.product(*(range(k) for k in sizes)))
    lows = [window_position(value.lower, axes, p) for p in positions]
    highs = [window_position(value.upper, axes, p) for p in positions]
    prefix = list(itertools.accumulate(highs, jnp.maximum))
    suffix = list(itertools.accumulate(highs[::-1], jnp.maximum))[::-1]
    max_low = functools.reduce(jnp.maximum, lows)
    certain, possible = {}, {}
    for i, position in enumerate(positions):
        rivals = prefix[i - 1:i] if i else []  # max over the earlier and the later positions
        rivals += suffix[i + 1:i + 2]
        certain[position] = (lows[i] >= functools.reduce(jnp.maximum, rivals) if rivals
                             else jnp.ones(lows[i].shape, bool))
        possible[position] = highs[i] >= max_low
    return Interval(from_window_positions(certain, axes, sizes),
                    from_window_positions(possible, axes, sizes))


@jax.tree_util.register_pytree_node_class
class Permutation(Interval):
    """Bounds of the positions that a sort moved along ``axis``, with their ranks.

    ``lower <= perm <= upper`` where ``perm[p]`` is the source position of the element that
    the sort put at ``p`` (the sorted ``iota`` of ``jnp.sort``'s JVP), possibly with a
    trailing index axis of size 1; ``rank_lower <= rank(q) <= rank_upper`` (shaped like the
    keys) bounds the position that source ``q`` went to.  ``perm`` is a permutation, so
    ``perm[p] == q`` iff ``rank(q) == p``: a gather ``t[perm]`` and a scatter-add to
    ``perm`` are bounded by hulls over the possible ranks, where the interval of ``perm``
    alone would allow every position between its bounds and any number of them at once.
    """

    __slots__ = ("rank_lower", "rank_upper", "axis")

    def __init__(self, lower, upper, rank_lower, rank_upper, axis: int):
        super().__init__(lower, upper)
        self.rank_lower, self.rank_upper, self.axis = rank_lower, rank_upper, axis

    def tree_flatten(self):
        return (self.lower, self.upper, self.rank_lower, self.rank_upper), self.axis

    @classmethod
    def tree_unflatten(cls, axis, children):
        obj = object.__new__(cls)
        obj.lower, obj.upper, obj.rank_lower, obj.rank_upper = children
        obj.axis = axis
        return obj


def rank_bounds(keys, stable: bool) -> tuple[jax.Array, jax.Array]:
    """Bounds of the position each element of ``keys`` (an Interval or a point) takes when
    the last axis is sorted ascending: ``rank(q) = #{j : j precedes q}``.

    ``j`` precedes ``q`` if ``k_j < k_q``, or, in a stable sort, ``k_j == k_q`` and ``j < q``
    (``lax.sort`` compares ``-0.0`` and ``0.0`` as equal, as IEEE does).  It certainly does if
    ``hi_j < lo_q`` (``hi_j <= lo_q`` for an earlier ``j`` of a stable sort) and possibly if
    ``lo_j <= hi_q`` (``lo_j < hi_q`` for a later ``j`` of a stable sort); not stable, ties go
    either way.  A NaN key sorts last, and NaN bounds are read as infinite ones, which allow
    every order.  Costs ``n x n`` comparisons per row."""
    lower, upper = lower_of(keys), upper_of(keys)
    n = lower.shape[-1]
    lo_q, hi_q = lower[..., :, None], upper[..., :, None]
    lo_j, hi_j = lower[..., None, :], upper[..., None, :]
    earlier = np.arange(n)[None, :] < np.arange(n)[:, None]  # [q, j]: j < q
    certain = hi_j < lo_q
    possible = lo_j <= hi_q
    if stable:
        certain = certain | ((hi_j <= lo_q) & earlier)
        possible = possible & ((lo_j < hi_q) | earlier)
    possible = possible & ~np.eye(n, dtype=bool)
    return (jnp.sum(certain, axis=-1, dtype=jnp.int32),
            jnp.sum(possible, axis=-1, dtype=jnp.int32))


def rank_candidates(rank_lower, rank_upper) -> jax.Array:
    """``mask[..., p, q]``: position ``p`` may receive source ``q`` (``p`` within q's rank
    bounds).  Every ``p`` has at least one candidate when the ranks are those of a sort."""
    p = jnp.arange(rank_lower.shape[-1], dtype=jnp.int32)[:, None]
    return (rank_lower[..., None, :] <= p) & (p <= rank_upper[..., None, :])


def value_range(dtype):
    """The smallest and the largest value of ``dtype`` (infinities for floats)."""
    if jnp.issubdtype(dtype, jnp.floating):
        return -np.inf, np.inf
    if jnp.dtype(dtype) == jnp.bool_:
        return False, True
    info = jnp.iinfo(dtype)
    return info.min, info.max


def masked_hull(values, mask) -> Interval:
    """``[min, max]`` over the ``q`` with ``mask[..., p, q]`` of ``values[..., q]`` (an
    Interval or a point) for each ``p``: the hull of the values that ``p`` may hold."""
    lower, upper = lower_of(values), upper_of(values)
    smallest, largest = value_range(lower.dtype)
    return Interval(
        jnp.min(jnp.where(mask, lower[..., None, :], jnp.asarray(largest, lower.dtype)), axis=-1),
        jnp.max(jnp.where(mask, upper[..., None, :], jnp.asarray(smallest, upper.dtype)),
                axis=-1))


def sort_bounds(operands, *, dimension: int, is_stable: bool, num_keys: int,
                permutations: tuple[int, ...] = ()) -> list:
    """Bounds of ``lax.sort_p`` on Intervals and points (``operands``, sorted lexicographically
    by the first ``num_keys``, the others moved with them).

    With point keys and a stable sort the permutation is known: the sort of the lower and of
    the upper bounds is exact.  Otherwise the first key's output is its order statistics (the
    sort of its lower and of its upper bounds: exact, they are monotone), and every other
    output at position ``p`` lies in the hull of that operand's values over the sources that
    may land at ``p`` (:func:`rank_bounds` of the first key; further keys only break its ties,
    so they are treated as unknown).  The operands numbered in ``permutations`` (an ``iota``
    along ``dimension``) come back as :class:`Permutation` s."""
    params = dict(dimension=dimension, is_stable=is_stable, num_keys=num_keys)
    keys = operands[:num_keys]
    if is_stable and not any(is_interval(k) for k in keys):
        lows = lax.sort_p.bind(*[lower_of(v) for v in operands], **params)
        highs = lax.sort_p.bind(*[upper_of(v) for v in operands], **params)
        return [Interval(a, b) if is_interval(v) else a
                for v, a, b in zip(operands, lows, highs, strict=True)]

    def last(a):
        return jnp.moveaxis(a, dimension, -1)

    def back(a):
        return jnp.moveaxis(a, -1, dimension)

    key = as_interval(keys[0])
    rank_lo, rank_hi = rank_bounds(Interval(last(key.lower), last(key.upper)),
                                   stable=is_stable and num_keys == 1)
    mask = rank_candidates(rank_lo, rank_hi)
    outs = [Interval(lax.sort(key.lower, dimension=dimension),
                     lax.sort(key.upper, dimension=dimension))]
    for i, value in enumerate(operands[1:], start=1):
        hull = masked_hull(Interval(last(lower_of(value)), last(upper_of(value))), mask)
        lower, upper = back(hull.lower), back(hull.upper)
        outs.append(Permutation(lower, upper, back(rank_lo), back(rank_hi), dimension)
                    if i in permutations else Interval(lower, upper))
    return outs


def iota_axes(jaxpr) -> dict:
    """The variables of ``jaxpr`` that count along one axis, with that axis: ``iota`` and its
    ``broadcast_in_dim`` (``vmap`` broadcasts the iota of ``jnp.sort``'s JVP)."""
    axes = {}
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "iota":
            axes[eqn.outvars[0]] = eqn.params["dimension"]
        elif name == "broadcast_in_dim" and _var(eqn.invars[0]) in axes:
            axis = axes[eqn.invars[0]]
            target = int(eqn.params["broadcast_dimensions"][axis])
            if eqn.invars[0].aval.shape[axis] == eqn.outvars[0].aval.shape[target]:
                axes[eqn.outvars[0]] = target
    return axes


class MaxFacts:
    """Dataflow facts of one jaxpr: ``read(var)`` gives a variable's value, ``evaluate(eqn,
    invals)`` the ordinary interval rule of an equation."""

    def __init__(self, read: Callable, evaluate: Callable, difference: Callable | None = None,
                 iotas: dict | None = None):
        """``difference(a, b)``: optional bounds of ``a - b`` for two variables, tighter than
        the interval difference (the symbolic interpreter's linear bounds), or None.
        ``iotas``: the jaxpr's ``iota`` variables and their axes (:func:`iota_axes`)."""
        self._read, self._evaluate, self._difference = read, evaluate, difference
        self._iotas = iotas or {}
        self._extremes = {}  # max/min output var -> (name, operand atoms)
        self._maxima = {}  # var = reduce_max(u, axes) -> (u, axes, "reduced" | "keepdims")
        self._indicators = {}  # var = (u == max(u, axes)) or its conversion -> axes

    def decide(self, eqn, invals):
        """The exact value of ``eqn`` if a fact decides it, else None (records facts)."""
        name = eqn.primitive.name
        if name in ("max", "min"):
            self._extremes[eqn.outvars[0]] = (name, eqn.invars)
        elif name in ("reduce_max", "reshape", "broadcast_in_dim"):
            self._track_maximum(eqn)
        elif name == "eq":
            return self._pairwise(eqn) or self._reduced(eqn)
        elif name in ("convert_element_type", "reduce_sum"):
            return self._count_of_maxima(eqn, invals)
        elif name == "sort":
            return self._sorted_positions(eqn, invals)
        return None

    def _sorted_positions(self, eqn, invals):
        """A ``sort`` that moves an ``iota`` along the sorted axis with the keys: the sorted
        ``iota`` is a :class:`Permutation` (the other outputs as :func:`sort_bounds`)."""
        dimension, num_keys = eqn.params["dimension"], eqn.params["num_keys"]
        marked = tuple(i for i, atom in enumerate(eqn.invars)
                       if i >= num_keys and self._iotas.get(_var(atom)) == dimension)
        if not marked or not any(is_interval(v) for v in invals[:num_keys]):
            return None
        return sort_bounds(invals, permutations=marked, **eqn.params)

    def _pairwise(self, eqn):
        for mine, other in ((0, 1), (1, 0)):
            me, out = _var(eqn.invars[mine]), _var(eqn.invars[other])
            if me is None or out not in self._extremes:
                continue
            name, operands = self._extremes[out]
            if len(operands) != 2 or me not in operands or operands[0] is operands[1]:
                continue
            rival = operands[1] if operands[0] is me else operands[0]
            a, b = self._read(me), self._read(rival)
            if np.shape(a) != eqn.outvars[0].aval.shape:
                continue
            decided = greater(a, b, strict=False) if name == "max" else greater(b, a, strict=False)
            gap = self._difference(me, rival) if self._difference is not None else None
            if gap is None:
                return decided
            gap = greater(gap, 0, strict=False) if name == "max" else greater(0, gap, strict=False)
            return Interval(decided.lower | gap.lower, decided.upper & gap.upper)  # both sound
        return None

    def _track_maximum(self, eqn):
        source = _var(eqn.invars[0])
        if eqn.primitive.name == "reduce_max":
            if source is not None:
                self._maxima[eqn.outvars[0]] = (source, tuple(eqn.params["axes"]), "reduced")
            return
        if source not in self._maxima:
            return
        u, axes, form = self._maxima[source]
        shape, out = u.aval.shape, eqn.outvars[0].aval.shape
        keep = _keepdims_shape(shape, axes)
        kept_axes = tuple(i for i in range(len(shape)) if i not in axes)
        if eqn.primitive.name == "reshape":
            if form == "reduced" and out == keep:
                self._maxima[eqn.outvars[0]] = (u, axes, "keepdims")
        elif out in (keep, shape):
            dims = tuple(eqn.params["broadcast_dimensions"])
            if (form == "reduced" and dims == kept_axes) or (
                    form == "keepdims" and dims == tuple(range(len(shape)))):
                self._maxima[eqn.outvars[0]] = (u, axes, "keepdims")

    def _reduced(self, eqn):
        for mine, other in ((0, 1), (1, 0)):
            var = _var(eqn.invars[other])
            if var not in self._maxima:
                continue
            u, axes, form = self._maxima[var]
            if form != "keepdims" or eqn.invars[mine] is not u:
                continue
            value = as_interval(self._read(u))
            self._indicators[eqn.outvars[0]] = axes
            return is_max_along(value, axes)
        return None

    def _count_of_maxima(self, eqn, invals):
        source = _var(eqn.invars[0])
        if source not in self._indicators:
            return None
        axes = self._indicators[source]
        out = self._evaluate(eqn, invals)
        if eqn.primitive.name == "convert_element_type":
            self._indicators[eqn.outvars[0]] = axes
            return out
        if tuple(eqn.params["axes"]) != tuple(axes) or not is_interval(out):
            return out
        return Interval(jnp.maximum(out.lower, 1), out.upper)
