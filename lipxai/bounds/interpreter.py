"""The interval interpreter: a jaxpr evaluated equation by equation on Intervals and points.

Equations whose inputs are all points are evaluated as usual (``primitive.bind``), so only the
part of the program that depends on an interval input pays for interval arithmetic.  Other
equations go to the rule registered for their primitive (:mod:`lipxai.bounds.registry`);
:class:`lipxai.bounds.patterns.MaxFacts` decides exactly the equalities with which
``jax.grad`` routes cotangents through ``max``, and chains of lane-wise operations after a
convolution stay packed (:mod:`lipxai.bounds.packed`).  An unknown primitive fails loudly, by
name.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.extend import core as jcore

from lipxai._core.jaxpr import Environment, as_list, bind
from lipxai.bounds import packed
from lipxai.bounds.interval import Interval, PackedInterval, is_interval, unpacked
from lipxai.bounds.patterns import MaxFacts, iota_axes
from lipxai.bounds.registry import RULES, UnsupportedPrimitiveError

#: Comparisons of a variable with itself are decided exactly (NaN aside): ``x == x`` is true
#: even when ``x`` is an uncertain interval.  ``logaddexp`` relies on it for its NaN check.
_SELF_COMPARISON = {"eq": True, "ge": True, "le": True, "ne": False, "gt": False, "lt": False}
#: Binary primitives applied to one variable twice, rewritten to the exact unary rule
#: (``x * x`` is ``x ** 2 >= 0``; independent corners would let it go negative).
_SELF_BINARY = {"mul": "square"}


def eval_jaxpr(jaxpr: jcore.Jaxpr, consts, *args, keep_packed: bool = False) -> list:
    """Interpret an open jaxpr on Intervals and points; returns the list of outputs.

    ``keep_packed``: return PackedIntervals as they are (the call rules do, so that a packed
    chain goes on through ``jit`` and custom-derivative bodies); by default they are
    unpacked into plain Intervals."""
    env = Environment(jaxpr, consts, args)
    facts = MaxFacts(env.read, eval_eqn, iotas=iota_axes(jaxpr))
    uses = packed.uses(jaxpr)

    def step(eqn, invals):
        decided = facts.decide(eqn, invals) if any(is_interval(v) for v in invals) else None
        pack = eqn.primitive.name in packed.PACKING and packed.stays_packed(eqn.outvars[0], uses)
        outvals = decided if decided is not None else eval_eqn(eqn, invals, pack)
        return as_list(eqn, outvals), None

    outs, _ = env.run(step)
    return outs if keep_packed else [unpacked(v) for v in outs]


def eval_eqn(eqn, invals, pack: bool = False):
    """One equation on Intervals and points (the per-equation step of :func:`eval_jaxpr`, also
    used by the symbolic interpreter); ``pack``: compute it packed if it is worth it (``lipxai.bounds.packed``:
    the caller found that its output only feeds lane-wise ops)."""
    name = eqn.primitive.name
    if not any(is_interval(v) for v in invals):
        return bind(eqn, invals)
    if pack and packed.worth_packing(eqn, invals):
        return packed.PACKING[name](eqn, invals)
    if any(isinstance(v, PackedInterval) for v in invals):
        out = packed.apply(eqn, invals)
        if out is not None:
            return out  # NaN stays in packed values (PackedInterval reads it as unknown)
        if name not in packed.CALLS:
            invals = [unpacked(v) for v in invals]
    if name in _SELF_COMPARISON and _same_variable(eqn):
        return np.full(eqn.outvars[0].aval.shape, _SELF_COMPARISON[name])
    if name in _SELF_BINARY and _same_variable(eqn):
        return _sanitize(RULES[_SELF_BINARY[name]](invals[0]))
    if name == "sub" and _same_variable(eqn):
        return np.zeros(eqn.outvars[0].aval.shape, eqn.outvars[0].aval.dtype)
    rule = RULES.get(name)
    if rule is None:
        raise UnsupportedPrimitiveError(
            f"lipxai.bounds.interval: no interval rule for primitive '{name}' (it received an "
            f"Interval input). Register one with lipxai.bounds.register_rule('{name}', rule), "
            "or keep this part of the program on point values."
        )
    out = rule(*invals, **eqn.params)
    return [_sanitize(o) for o in out] if eqn.primitive.multiple_results else _sanitize(out)


def _same_variable(eqn) -> bool:
    a = eqn.invars
    return len(a) == 2 and not isinstance(a[0], jcore.Literal) and a[0] is a[1]


def _sanitize(value):
    """NaN bounds (from ``inf - inf`` or ``0 * inf``) become the sound ``-inf`` / ``+inf``."""
    if isinstance(value, PackedInterval):
        return value
    if is_interval(value) and jax.numpy.issubdtype(value.dtype, jax.numpy.floating):
        jnp = jax.numpy
        return Interval(jnp.where(jnp.isnan(value.lower), -jnp.inf, value.lower),
                        jnp.where(jnp.isnan(value.upper), jnp.inf, value.upper))
    return value


def eval_closed(closed: jcore.ClosedJaxpr, *args, keep_packed: bool = False) -> list:
    """Interpret a closed jaxpr on Intervals and points (``keep_packed``: see
    :func:`eval_jaxpr`)."""
    return eval_jaxpr(closed.jaxpr, closed.consts, *args, keep_packed=keep_packed)
