"""Re-evaluating jaxpr equations: the one equation loop of lipxai's jaxpr interpreters
(:class:`Environment`, whose :meth:`~Environment.run` takes the per-equation step as a hook),
what they share besides, and :class:`Rewriter`, the equation-replacing interpreter of
lipxai.metrics.softplus_relu and lipxai._core.xla_cpu.  The interval and symbolic interpreters
of lipxai.bounds are the loop's other two users."""

from __future__ import annotations

import abc
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core as jcore


def bind(eqn, invals):
    """Evaluate equation ``eqn`` on ``invals`` with its primitive, as JAX would."""
    bound = eqn.primitive.get_bind_params(eqn.params)
    subfuns, params = bound if isinstance(bound, tuple) else ((), bound)  # jax < 0.8: a pair
    return eqn.primitive.bind(*subfuns, *invals, **params)


def scan_layout(params) -> tuple[int, int]:
    """``(num_consts, num_carry)`` of a ``scan`` equation: named params before jax 0.11, the
    flat-tree layout ``ft_in = (consts, carry, xs)`` since."""
    if "num_consts" in params:
        return params["num_consts"], params["num_carry"]
    consts, carry, _ = params["ft_in"].unpack()
    return len(list(consts.vals)), len(list(carry.vals))


def as_list(eqn, out) -> list:
    """``out`` as a list of the equation's results (a one-result primitive returns a value)."""
    return out if eqn.primitive.multiple_results else [out]


class Environment:
    """The values of one jaxpr's variables while it is interpreted, and optional notes: a side
    value per variable that the step carries along (the symbolic interpreter's linear bounds).

    ``run(step)`` is the equation loop every lipxai interpreter uses; ``step(eqn, invals)``
    returns ``(outvals, outnotes)``: a list of values per output variable and a list of notes
    or None (no notes).  Dropped outputs (``_``) are not stored.
    """

    def __init__(self, jaxpr: jcore.Jaxpr, consts, args, notes=None):
        self.jaxpr = jaxpr
        self._values, self._notes = {}, {}
        for var, value in zip(jaxpr.constvars, consts, strict=True):
            self._values[var] = value
        for var, value in zip(jaxpr.invars, args, strict=True):
            self._values[var] = value
        for var, note in zip(jaxpr.invars, notes or [None] * len(args), strict=True):
            if note is not None:
                self._notes[var] = note

    def read(self, var):
        """The value of ``var`` (a literal's own value)."""
        return var.val if isinstance(var, jcore.Literal) else self._values[var]

    def note(self, var):
        """The note of ``var``, None when it has none (literals never do)."""
        return None if isinstance(var, jcore.Literal) else self._notes.get(var)

    def run(self, step) -> tuple[list, list]:
        """Evaluate the equations in order with ``step``; returns the jaxpr's outputs and their
        notes."""
        for eqn in self.jaxpr.eqns:
            outvals, outnotes = step(eqn, [self.read(v) for v in eqn.invars])
            for i, var in enumerate(eqn.outvars):
                if isinstance(var, jcore.DropVar):
                    continue
                self._values[var] = outvals[i]
                if outnotes is not None and outnotes[i] is not None:
                    self._notes[var] = outnotes[i]
        outvars = self.jaxpr.outvars
        return [self.read(v) for v in outvars], [self.note(v) for v in outvars]


#: Call primitives and the parameter that holds their body.
CALLS = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr"}
#: Custom-derivative calls and the parameter that holds their primal body.
CUSTOM_DERIVATIVE_CALLS = {"custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr",
                           "custom_vjp_call_jaxpr": "fun_jaxpr"}
#: Calls whose body reads the operands one to one, and the parameter that holds it.
BODIES = {**CALLS, **CUSTOM_DERIVATIVE_CALLS}
REMAT = ("remat2", "checkpoint", "remat")


def sub_jaxprs(params) -> list:
    """The (open) jaxprs among an equation's params (ClosedJaxpr, Jaxpr, or tuples of them)."""
    out = []
    for value in params.values():
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(v, jcore.ClosedJaxpr):
                out.append(v.jaxpr)
            elif isinstance(v, jcore.Jaxpr):
                out.append(v)
    return out


class Rewriter(abc.ABC):
    """Re-interpret a function's jaxpr, replacing the equations a subclass picks.

    A subclass defines :meth:`is_target` and :meth:`rewrite` (and optionally
    :meth:`context`, per-jaxpr facts that both receive).  Every other equation is bound as
    usual, except that equations with sub-jaxprs holding a target are re-interpreted
    recursively: calls (``jit``, ``closed_call``) are inlined; ``remat`` is re-wrapped in
    :func:`jax.checkpoint` (same policy); ``cond``, ``scan`` and ``while`` are rebuilt with
    :func:`jax.lax.switch`, :func:`jax.lax.scan` and :func:`jax.lax.while_loop`; the bodies
    of ``custom_jvp`` / ``custom_vjp`` calls are inlined *without* their derivative rule if
    :attr:`inline_custom_derivatives`, else bound unchanged.  Another higher-order primitive
    holding a target raises ``NotImplementedError`` if :attr:`strict`, else is bound
    unchanged.  The result is made of ordinary JAX operations, so it composes with the JAX
    transformations.
    """

    #: follow custom_jvp / custom_vjp bodies, dropping their rule (else bind them unchanged)
    inline_custom_derivatives = True
    #: raise on an unsupported higher-order primitive holding a target (else bind it)
    strict = True
    #: names the transformation and its targets in errors
    description = "a rewritten equation"

    def __init__(self):
        self._has = {}  # id(jaxpr) -> (jaxpr, bool): does it contain a target

    def context(self, jaxpr, consts=None):
        """Facts about ``jaxpr`` (``consts``: its constants, when known) for the hooks."""
        return None

    @abc.abstractmethod
    def is_target(self, eqn, context) -> bool:
        """Whether equation ``eqn`` is replaced."""

    @abc.abstractmethod
    def rewrite(self, eqn, invals, context):
        """The output value (a list if the primitive has multiple results) of a target."""

    def transform(self, fn):
        """``fn`` with its jaxpr re-interpreted, traced anew on each call's shapes."""

        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))

            def flat_fn(*flat):
                a, k = jax.tree_util.tree_unflatten(treedef, flat)
                return fn(*a, **k)

            abstract = [jax.ShapeDtypeStruct(jnp.shape(v), jnp.result_type(v)) for v in leaves]
            closed, out_shape = jax.make_jaxpr(flat_fn, return_shape=True)(*abstract)
            outs = self.eval_closed(closed, *leaves)
            return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), outs)

        return wrapped

    # ---- which jaxprs hold a target ----------------------------------------------------------

    def _followed(self, eqn) -> list:
        if eqn.primitive.name in CUSTOM_DERIVATIVE_CALLS and not self.inline_custom_derivatives:
            return []
        return sub_jaxprs(eqn.params)

    def has_target(self, jaxpr, consts=None) -> bool:
        key = id(jaxpr)
        hit = self._has.get(key)
        if hit is not None and hit[0] is jaxpr and consts is None:
            return hit[1]
        context = self.context(jaxpr, consts)
        found = any(self.is_target(eqn, context)
                    or any(self.has_target(sub) for sub in self._followed(eqn))
                    for eqn in jaxpr.eqns)
        if consts is None:
            self._has[key] = (jaxpr, found)
        return found

    # ---- evaluation ---------------------------------------------------------------------------

    def eval_closed(self, closed, *args) -> list:
        return self.eval_jaxpr(closed.jaxpr, closed.consts, *args)

    def eval_jaxpr(self, jaxpr, consts, *args) -> list:
        context = self.context(jaxpr, consts)

        def step(eqn, invals):
            if self.is_target(eqn, context):
                outvals = self.rewrite(eqn, invals, context)
            elif any(self.has_target(sub) for sub in self._followed(eqn)):
                outvals = self._eval_higher_order(eqn, invals)
            else:
                outvals = bind(eqn, invals)
            return as_list(eqn, outvals), None

        return Environment(jaxpr, consts, args).run(step)[0]

    def _eval_higher_order(self, eqn, invals):
        name, params = eqn.primitive.name, eqn.params
        if name in BODIES:
            return self._eval_any(params[BODIES[name]], invals)
        if name in REMAT:
            body = params["jaxpr"]
            kwargs = {k: params[k] for k in ("prevent_cse", "policy") if k in params}
            return jax.checkpoint(lambda *a: self._eval_any(body, a), **kwargs)(*invals)
        if name == "cond":
            index, ops = invals[0], invals[1:]
            branches = [functools.partial(self._branch, br) for br in params["branches"]]
            return list(lax.switch(index, branches, *ops))
        if name == "scan":
            nconst, ncarry = scan_layout(params)
            body = params["jaxpr"]
            consts, init, xs = (invals[:nconst], invals[nconst:nconst + ncarry],
                                invals[nconst + ncarry:])

            def step(carry, x):
                outs = self._eval_any(body, [*consts, *carry, *x])
                return outs[:ncarry], outs[ncarry:]

            carry, ys = lax.scan(step, list(init), list(xs), length=params["length"],
                                 reverse=params["reverse"], unroll=params.get("unroll", 1))
            return list(carry) + list(ys)
        if name == "while":
            cn, bn = params["cond_nconsts"], params["body_nconsts"]
            cconsts, bconsts, init = invals[:cn], invals[cn:cn + bn], invals[cn + bn:]
            cond_fn = lambda c: self._eval_any(params["cond_jaxpr"], [*cconsts, *c])[0]
            body_fn = lambda c: self._eval_any(params["body_jaxpr"], [*bconsts, *c])
            return list(lax.while_loop(cond_fn, body_fn, list(init)))
        if not self.strict:
            return bind(eqn, invals)
        supported = sorted({*CALLS, *CUSTOM_DERIVATIVE_CALLS, *REMAT, "cond", "scan", "while"})
        raise NotImplementedError(
            f"{self.description} inside the higher-order primitive '{name}' cannot be "
            f"rewritten (supported: {supported})")

    def _branch(self, closed, *ops):
        return self._eval_any(closed, ops)

    def _eval_any(self, body, args) -> list:
        if isinstance(body, jcore.ClosedJaxpr):
            return self.eval_closed(body, *args)
        return self.eval_jaxpr(body, (), *args)
