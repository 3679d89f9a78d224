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
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from lipxai.bounds.interval import Interval, as_interval, greater, is_interval
from lipxai.nn.pooling import from_window_positions, window_position


def _var(atom):
    """``atom`` if it is a variable (hashable, has dataflow), else None (a literal)."""
    return None if isinstance(atom, jcore.Literal) else atom


def _keepdims_shape(shape, axes):
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


#: Reductions over at most this many elements per output decide ``u == max(u)`` position by
#: position with elementwise ops on slices, which XLA fuses into one loop; larger ones with
#: reductions.  On a 2x2 max-pool of a 128x28x28x32 interval (2 CPU cores) the slices took
#: 1.9 ms and the reductions 21.6 ms (XLA:CPU ran them as one-core YNNPACK fusions).
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


class MaxFacts:
    """Dataflow facts of one jaxpr: ``read(var)`` gives a variable's value, ``evaluate(eqn,
    invals)`` the ordinary interval rule of an equation."""

    def __init__(self, read: Callable, evaluate: Callable, difference: Callable | None = None):
        """``difference(a, b)``: optional bounds of ``a - b`` for two variables, tighter than
        the interval difference (the symbolic interpreter's linear bounds), or None."""
        self._read, self._evaluate, self._difference = read, evaluate, difference
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
        return None

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
