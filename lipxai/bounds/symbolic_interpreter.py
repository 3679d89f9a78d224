"""The symbolic interpreter of ``interval(fun, method="symbolic")``: the interval interpreter
with linear bounds in the input carried alongside (the method and its rules:
:mod:`lipxai.bounds.symbolic`).

Each equation whose inputs carry linear bounds is evaluated by its interval rule, then by
its linear-bound rule (:data:`lipxai.bounds.registry.SYMBOLIC_RULES`); the output interval
is intersected with the linear bounds' range when the rule can tighten it.  Calls are
interpreted through their bodies, except the named functions whose interval rule is tighter.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from lipxai._core.jaxpr import BODIES, Environment, as_list
from lipxai.bounds.control import function_name, named_call
from lipxai.bounds.interpreter import eval_eqn
from lipxai.bounds.interval import is_interval, lower_of
from lipxai.bounds.linear import Diagonal, affine, concretize, densify, intersect, negate, sum_terms
from lipxai.bounds.patterns import MaxFacts, iota_axes
from lipxai.bounds.registry import SYMBOLIC_RULES, TIGHTENS
from lipxai.bounds.symbolic import NAMED_CUSTOM_JVP

#: Rules that accept a :class:`Diagonal` (the others get it materialised).
_DIAGONAL_AWARE = {"reshape", "dot_general"}

_CALLS = {**BODIES, "remat2": "jaxpr", "checkpoint": "jaxpr"}


def _call_body(eqn, invals):
    """``(jaxpr, consts)`` of a call to interpret symbolically, or None when the interval
    rule of the call is tighter (the named functions of ``lipxai.bounds.control``)."""
    name = eqn.primitive.name
    body = eqn.params[_CALLS[name]]
    if name == "custom_jvp_call" and function_name(body) in NAMED_CUSTOM_JVP:
        return None
    if name in ("jit", "pjit") and named_call(eqn.params.get("name", ""), body,
                                                       invals) is not None:
        return None
    if hasattr(body, "consts"):
        return body.jaxpr, body.consts
    return body, ()


def _eval_symbolic_eqn(eqn, invals, inlins, facts):
    name = eqn.primitive.name
    n_out = len(eqn.outvars)
    if name in _CALLS:
        body = _call_body(eqn, invals)
        if body is not None:
            return eval_jaxpr(body[0], body[1], invals, inlins)
    decided = facts.decide(eqn, invals)
    if decided is not None:
        outs = decided if eqn.primitive.multiple_results else [decided]
        return outs, [None] * n_out
    out = eval_eqn(eqn, invals)
    if eqn.primitive.multiple_results:
        if name != "custom_jvp_call" or n_out != 1:
            return out, [None] * n_out
        (out,) = out  # a named custom-JVP function of one output
    rule = SYMBOLIC_RULES.get(name)
    aval = eqn.outvars[0].aval
    if (rule is None or not is_interval(out) or not jnp.issubdtype(out.dtype, jnp.floating)
            or len(aval.shape) == 0):
        return [out], [None]
    if name not in _DIAGONAL_AWARE:
        inlins = [densify(lin) for lin in inlins]
    lin = rule(invals, inlins, aval, **eqn.params)
    if lin is None:
        return [out], [None]
    if tuple(lin.c_lo.shape) != tuple(out.shape) or tuple(lin.a_lo.shape[1:]) != tuple(
            out.shape):
        raise AssertionError(f"lipxai.bounds.symbolic: rule '{name}' returned linear bounds "
                             f"of shape {lin.a_lo.shape} for an output of shape {out.shape}")
    if name in TIGHTENS:
        out = intersect(out, concretize(lin))
    return [out], [lin]


def eval_jaxpr(jaxpr: jcore.Jaxpr, consts, args, linears) -> tuple[list, list]:
    """Interpret an open jaxpr on Intervals and points, with optional linear bounds
    (``linears[i]``: a :class:`Linear` or None for ``args[i]``).  Returns the outputs and
    their linear bounds."""
    env = Environment(jaxpr, consts, args, linears)

    def difference(a, b):
        """Bounds of ``a - b`` from their linear bounds (correlations through the input
        cancel), or None."""
        lin_a, lin_b = densify(env.note(a)), densify(env.note(b))
        shape = np.shape(lower_of(env.read(a)))
        if lin_a is None or lin_b is None or np.shape(lower_of(env.read(b))) != shape:
            return None
        lin = sum_terms([lin_a, negate(lin_b)], shape)
        return None if lin is None else concretize(lin)

    facts = MaxFacts(env.read, eval_eqn, difference, iota_axes(jaxpr))

    def step(eqn, invals):
        inlins = [env.note(v) for v in eqn.invars]
        if any(lin is not None for lin in inlins):
            return _eval_symbolic_eqn(eqn, invals, inlins, facts)
        decided = facts.decide(eqn, invals) if any(is_interval(v) for v in invals) else None
        return as_list(eqn, decided if decided is not None else eval_eqn(eqn, invals)), None

    return env.run(step)


def input_linears(leaves) -> list:
    """The identity linear bounds of the Interval inputs: every floating Interval leaf of rank
    >= 1 is batched along axis 0, with one batch size for all; its features (per example)
    are the coordinates of ``eps``."""
    symbolic = [i for i, leaf in enumerate(leaves) if is_interval(leaf) and leaf.ndim >= 1
                and jnp.issubdtype(leaf.dtype, jnp.floating)]
    batches = {leaves[i].shape[0] for i in symbolic}
    if len(batches) > 1:
        shapes = [tuple(leaves[i].shape) for i in symbolic]
        raise ValueError(
            "interval(fun, method='symbolic'): the Interval arguments must be input boxes "
            f"batched along axis 0 with one batch size; got Intervals of shapes {shapes}. "
            "Parameter boxes are not supported by method='symbolic'; use method='ibp'.")
    sizes = [int(np.prod(leaves[i].shape[1:], dtype=int)) for i in symbolic]
    n = sum(sizes)
    out = [None] * len(leaves)
    offset = 0
    for i, size in zip(symbolic, sizes, strict=True):
        out[i] = affine(Diagonal(leaves[i].radius, offset, n), leaves[i].center)
        offset += size
    return out


def eval_closed(closed: jcore.ClosedJaxpr, *args) -> list:
    """Interpret a closed jaxpr on Intervals and points, with linear bounds of the values in
    the Interval inputs (see the module doc)."""
    outs, _ = eval_jaxpr(closed.jaxpr, closed.consts, list(args), input_linears(list(args)))
    return outs
