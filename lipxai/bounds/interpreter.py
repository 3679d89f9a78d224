"""``interval(fun)``: interval arithmetic as a JAX function transformation.

``interval(fun)(*args)`` traces ``fun`` to a jaxpr on the shapes of ``args`` and interprets
it with one rule per primitive (``lipxai.bounds.rules``).  Arguments are pytrees whose leaves
are ``Interval`` s or plain arrays (points).  Equations whose inputs are all points are
evaluated as usual (``primitive.bind``), so only the part of the program that depends on an
interval input pays for interval arithmetic, and a program without Interval inputs returns
exactly what ``fun`` returns.  Because the interpretation happens at trace time and every
rule is written with jax.numpy, the transformed function composes with ``jit``, ``vmap`` and
``grad`` (the bounds are differentiable functions of the box and of the weights).

Soundness (the property every rule must have): if each input lies in its interval, every
output of ``fun`` lies in the returned interval.  Comparisons return three-valued boolean
Intervals, and ``select_n`` with an uncertain predicate returns the hull of its branches, so
the ``gt``/``select_n`` pairs that ``jax.grad`` of ReLU, max and sort produce are bounded
soundly; :class:`lipxai.bounds.patterns.MaxFacts` decides exactly the equalities with which
``jax.grad`` routes cotangents through ``max``.  The style follows jax_verify/autobound: a
dict from primitive name to rule, and an unknown primitive fails loudly, by name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import numpy as np
from jax.extend import core as jcore

from lipxai._core.jaxpr import bind
from lipxai.bounds import packed
from lipxai.bounds.interval import Interval, PackedInterval, is_interval, unpacked
from lipxai.bounds.patterns import MaxFacts, iota_axes

#: Rules by primitive name: ``rule(*invals, **params) -> outval`` (a list for primitives with
#: multiple results).  ``invals`` are Intervals or points; at least one is an Interval.
RULES: dict[str, Callable] = {}

#: Comparisons of a variable with itself are decided exactly (NaN aside): ``x == x`` is true
#: even when ``x`` is an uncertain interval.  ``logaddexp`` relies on it for its NaN check.
_SELF_COMPARISON = {"eq": True, "ge": True, "le": True, "ne": False, "gt": False, "lt": False}
#: Binary primitives applied to one variable twice, rewritten to the exact unary rule
#: (``x * x`` is ``x ** 2 >= 0``; independent corners would let it go negative).
_SELF_BINARY = {"mul": "square"}


class UnsupportedPrimitiveError(NotImplementedError):
    """No interval rule is registered for a primitive that receives an Interval input."""


def register_rule(name: str, rule: Callable | None = None):
    """Register ``rule`` for the primitive called ``name`` (usable as a decorator).

    A rule receives the equation's inputs (Intervals or plain arrays, at least one Interval)
    and its params as keyword arguments, and returns Intervals or arrays shaped like the
    primitive's outputs (a list when the primitive has multiple results).  It must be sound:
    every output of the primitive on inputs inside the input intervals lies in the result.
    """
    if rule is None:
        return functools.partial(register_rule, name)
    RULES[name] = rule
    return rule


def _read(env, var):
    return var.val if isinstance(var, jcore.Literal) else env[var]


def eval_jaxpr(jaxpr: jcore.Jaxpr, consts, *args, keep_packed: bool = False) -> list:
    """Interpret an open jaxpr on Intervals and points; returns the list of outputs.

    ``keep_packed``: return PackedIntervals as they are (the call rules do, so that a packed
    chain goes on through ``jit`` and custom-derivative bodies); by default they are
    unpacked into plain Intervals."""
    env = {}
    for var, value in zip(jaxpr.constvars, consts, strict=True):
        env[var] = value
    for var, value in zip(jaxpr.invars, args, strict=True):
        env[var] = value
    facts = MaxFacts(lambda var: _read(env, var), _eval_eqn, iotas=iota_axes(jaxpr))
    uses = packed.uses(jaxpr)
    for eqn in jaxpr.eqns:
        invals = [_read(env, v) for v in eqn.invars]
        decided = facts.decide(eqn, invals) if any(is_interval(v) for v in invals) else None
        pack = eqn.primitive.name in packed.PACKING and packed.stays_packed(eqn.outvars[0], uses)
        outvals = decided if decided is not None else _eval_eqn(eqn, invals, pack)
        if not eqn.primitive.multiple_results:
            outvals = [outvals]
        for var, value in zip(eqn.outvars, outvals, strict=True):
            if not isinstance(var, jcore.DropVar):
                env[var] = value
    outs = [_read(env, v) for v in jaxpr.outvars]
    return outs if keep_packed else [unpacked(v) for v in outs]


def _eval_eqn(eqn, invals, pack: bool = False):
    """One equation; ``pack``: compute it packed if it is worth it (``lipxai.bounds.packed``:
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


def _abstract(leaf):
    leaf = leaf.lower if is_interval(leaf) else leaf
    return jax.ShapeDtypeStruct(np.shape(leaf), jax.numpy.result_type(leaf))


#: ``method=`` of :func:`interval`: plain interval propagation, or interval propagation
#: tightened by linear bounds of the forward values in the input (``lipxai.bounds.symbolic``).
METHODS = ("ibp", "symbolic")


def interval(fun: Callable, method: str = "ibp") -> Callable:
    """Transform ``fun`` into a function that maps Interval (or point) inputs to sound bounds.

    ``interval(fun)(*args)`` has the pytree structure of ``fun(*args)``; each output leaf is
    an ``Interval`` if it depends on an Interval input and a plain array otherwise.  Example::

        lo_hi = lx.bounds.interval(jax.grad(loss))(params, lx.bounds.box(x, eps))

    bounds every gradient of ``loss`` w.r.t. ``params`` over the L_inf ball of radius ``eps``.
    Raises ``UnsupportedPrimitiveError`` (a ``NotImplementedError``) naming the primitive if
    an Interval reaches one without a rule.

    ``method="ibp"`` (default): one interval rule per primitive.  ``method="symbolic"``: the
    values that depend linearly or through ReLU/max on the input also carry linear bounds in
    the input (symbolic interval propagation with the CROWN/DeepPoly ReLU relaxation, see
    :mod:`lipxai.bounds.symbolic`), and every interval is intersected with their range; the
    backward pass of a gradient then sees fewer undecided ReLUs.  It needs the Interval
    arguments to be input boxes batched along axis 0 (examples must not interact; parameter
    boxes raise ``ValueError``) and costs memory ~ (input features) x (neurons) per example.

    A concrete Interval argument with ``lower > upper`` or a NaN bound somewhere holds no
    value, and bounds computed from it would read as certificates: it raises ``ValueError``
    naming the argument (``args[i]`` and its pytree path) and the first offending index.
    Under ``jit`` (traced bounds) this is the caller's promise.
    """
    if method not in METHODS:
        raise ValueError(f"interval: method must be one of {METHODS}, got {method!r}")

    def check_boxes(args):
        paths = jax.tree_util.tree_flatten_with_path(args, is_leaf=is_interval)[0]
        boxes = [(path, leaf) for path, leaf in paths if is_interval(leaf)
                 and not isinstance(leaf.lower, jax.core.Tracer)
                 and not isinstance(leaf.upper, jax.core.Tracer)]
        if not boxes or bool(jax.numpy.all(jax.numpy.stack(
                [jax.numpy.all(box.lower <= box.upper) for _, box in boxes]))):
            return  # one device reduction when every box is valid
        for path, box in boxes:
            try:
                box.check()
            except ValueError as err:
                raise ValueError(f"interval({getattr(fun, '__name__', fun)!s}): argument "
                                 f"args{jax.tree_util.keystr(path)}: {err}") from None

    @functools.wraps(fun)
    def wrapped(*args):
        check_boxes(args)
        leaves, treedef = jax.tree_util.tree_flatten(args, is_leaf=is_interval)
        leaves = [leaf if is_interval(leaf) else jax.numpy.asarray(leaf) for leaf in leaves]

        def flat_fun(*flat):
            return fun(*jax.tree_util.tree_unflatten(treedef, flat))

        closed, out_shape = jax.make_jaxpr(flat_fun, return_shape=True)(
            *[_abstract(leaf) for leaf in leaves]
        )
        if method == "symbolic":
            from lipxai.bounds import symbolic

            outs = [unpacked(o) for o in symbolic.eval_closed(closed, *leaves)]
        else:
            outs = eval_closed(closed, *leaves)
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), outs)

    return wrapped
