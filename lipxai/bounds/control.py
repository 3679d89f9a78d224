"""Interval rules for primitives that carry sub-jaxprs: calls, custom derivatives, cond, scan.

Calls (``jit``/``pjit``, ``closed_call``, ``remat``, ``custom_jvp_call``, ``custom_vjp_call``)
interpret their body; the custom-derivative rules are irrelevant to bounding values.  A few
named functions get tighter rules than their bodies would: ``log_softmax`` and ``softmax``
(the shift by the stop-gradient max cancels exactly, which elementwise interval arithmetic
cannot see), ``logaddexp`` (monotone in both arguments; softplus is ``logaddexp(x, 0)``) and
the unit vectors ``x_w / ||x_w||`` in the gradient of L2-norm pooling (in ``[-1, 1]``, where
``x * (1 / sqrt(sum x^2))`` would be unbounded near 0).
``cond`` with an uncertain index takes the hull of the branches it may run; ``scan`` (fixed
trip count) runs the interval body in a ``lax.scan``.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
from jax import lax

from lipxai._jaxpr import scan_layout
from lipxai.bounds.interpreter import (
    UnsupportedPrimitiveError,
    eval_closed,
    eval_jaxpr,
    register_rule,
)
from lipxai.bounds.interval import (
    Interval,
    as_interval,
    is_interval,
    lower_of,
    upper_of,
)
from lipxai.nn.pooling import UNIT_VECTORS_NAME

lo, hi = lower_of, upper_of


def _log_softmax_bounds(x: Interval, axis: int) -> Interval:
    """``log_softmax(x)_i = -log(1 + sum_{j != i} exp(x_j - x_i))``, decreasing in every
    ``x_j`` (j != i) and increasing in ``x_i``: exact bounds from the corners
    ``(x_i = lo_i, x_j = hi_j)`` and ``(x_i = hi_i, x_j = lo_j)``.

    Computed as ``-softplus(L_i - x_i)`` with ``L_i = logsumexp_{j != i} x_j`` from prefix and
    suffix cumulative logsumexps: subtracting ``exp(x_i)`` from the full sum instead cancels
    catastrophically when ``x_i`` dominates (wide intervals), which made the bounds unsound."""
    n = x.shape[axis]

    def logsumexp_others(v):
        empty = jnp.full_like(lax.slice_in_dim(v, 0, 1, axis=axis), -jnp.inf)
        before = lax.slice_in_dim(lax.cumlogsumexp(v, axis=axis), 0, n - 1, axis=axis)
        after = lax.slice_in_dim(lax.cumlogsumexp(v, axis=axis, reverse=True), 1, n, axis=axis)
        return jnp.logaddexp(jnp.concatenate([empty, before], axis),
                             jnp.concatenate([after, empty], axis))

    def at(own, others):
        # log_softmax of the vector that takes `own` at i and `others` elsewhere, for every i.
        return -jax.nn.softplus(logsumexp_others(others) - own)

    return Interval(at(x.lower, x.upper), at(x.upper, x.lower))


def _single_axis(jaxpr) -> int | None:
    """The reduction axis of a softmax body (its first reduce_max), if it has exactly one."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "reduce_max":
            axes = eqn.params["axes"]
            return axes[0] if len(axes) == 1 else None
    return None


def _unit_vector_bounds(x: Interval, kh: int, kw: int) -> Interval:
    """Bounds of ``u_i = x_i / ||x_w||`` (0 at ``x_w = 0``) over non-overlapping windows.

    With ``R = sum_{j in w, j != i} x_j^2`` (independent of ``x_i`` in a box),
    ``u = v / sqrt(v^2 + R)`` increases with ``v`` and its magnitude decreases with ``R``:
    the bounds are attained at ``(x_i = hi, R = R_lo if hi >= 0 else R_hi)`` and
    ``(x_i = lo, R = R_hi if lo >= 0 else R_lo)``; R's bounds are rounded outwards.
    """
    from lipxai.bounds.rules import abs_bounds

    b, h, w, c = x.shape
    hc, wc = h - h % kh, w - w % kw

    def blocks(a):
        return a[:, :hc, :wc].reshape(b, hc // kh, kh, wc // kw, kw, c)

    small, large = (blocks(a) for a in abs_bounds(x))
    sq_lo, sq_hi = small * small, large * large
    r_lo = jnp.maximum(jnp.sum(sq_lo, axis=(2, 4), keepdims=True) - sq_lo, 0.0) * (1 - 1e-6)
    r_hi = (jnp.sum(sq_hi, axis=(2, 4), keepdims=True) - sq_hi) * (1 + 1e-6)
    v_lo, v_hi = blocks(x.lower), blocks(x.upper)

    def unit(v, r):
        den = jnp.sqrt(v * v + r)
        return jnp.where(den > 0, v / jnp.where(den > 0, den, 1.0), 0.0)

    upper = unit(v_hi, jnp.where(v_hi >= 0, r_lo, r_hi))
    lower = unit(v_lo, jnp.where(v_lo >= 0, r_hi, r_lo))
    pad = ((0, 0), (0, h - hc), (0, w - wc), (0, 0))
    return Interval(jnp.pad(lower.reshape(b, hc, wc, c), pad),
                    jnp.pad(upper.reshape(b, hc, wc, c), pad))


_UNIT_VECTORS = re.compile(UNIT_VECTORS_NAME.format(kh=r"(\d+)", kw=r"(\d+)") + "$")


def _named_call(name: str, closed, args):
    """Tighter bounds for named jitted functions; None when there is no special rule."""
    match = _UNIT_VECTORS.match(name)
    if match and len(args) == 1 and is_interval(args[0]):
        return [_unit_vector_bounds(args[0], int(match.group(1)), int(match.group(2)))]
    # One output only: under grad the forward call also returns residuals (exp, sum).
    if (name in ("log_softmax", "softmax") and len(args) == 1 and is_interval(args[0])
            and len(closed.jaxpr.outvars) == 1):
        axis = _single_axis(closed.jaxpr)
        if axis is None:
            return None
        bounds = _log_softmax_bounds(args[0], axis)
        if name == "softmax":
            bounds = Interval(jnp.exp(bounds.lower), jnp.exp(bounds.upper))
        return [bounds]
    return None


def _call_rule(param: str):
    def rule(*args, **params):
        closed = params[param]
        named = _named_call(params.get("name", ""), closed, args)
        if named is not None:
            return named
        if hasattr(closed, "consts"):
            return eval_closed(closed, *args, keep_packed=True)
        return eval_jaxpr(closed, (), *args, keep_packed=True)

    return rule


for _name in ("jit", "pjit"):
    register_rule(_name, _call_rule("jaxpr"))
register_rule("closed_call", _call_rule("call_jaxpr"))
register_rule("core_call", _call_rule("call_jaxpr"))
register_rule("remat2", _call_rule("jaxpr"))
register_rule("checkpoint", _call_rule("jaxpr"))


def _function_name(closed) -> str:
    info = getattr(closed.jaxpr, "debug_info", None)
    src = getattr(info, "func_src_info", None) or ""
    return src.split(" ")[0]


@register_rule("custom_jvp_call")
def _custom_jvp_call(*args, call_jaxpr, num_consts, **params):
    if _function_name(call_jaxpr) == "logaddexp" and len(args) == 2:
        a, b = args
        return [Interval(jnp.logaddexp(lo(a), lo(b)), jnp.logaddexp(hi(a), hi(b)))]
    return eval_closed(call_jaxpr, *args, keep_packed=True)


@register_rule("custom_vjp_call")
def _custom_vjp_call(*args, call_jaxpr, **params):
    return eval_closed(call_jaxpr, *args, keep_packed=True)


register_rule("custom_vjp_call_jaxpr", lambda *args, fun_jaxpr, **params: eval_closed(
    fun_jaxpr, *args, keep_packed=True))


@register_rule("cond")
def _cond(index, *operands, branches, **params):
    """``branches[index](*operands)``; an uncertain index gives the hull over the branches in
    ``[index_lo, index_hi]`` (clamped to the valid range, as ``lax.switch`` does)."""

    def run(closed):
        return [as_interval(v) for v in eval_closed(closed, *operands)]

    if not is_interval(index):
        fns = [lambda ops, c=closed: run(c) for closed in branches]
        return lax.switch(index, fns, operands)
    n = len(branches)
    first = jnp.clip(index.lower, 0, n - 1)
    last = jnp.clip(index.upper, 0, n - 1)
    possible = (first <= jnp.arange(n)) & (jnp.arange(n) <= last)
    outs = [run(closed) for closed in branches]
    return [_hull_of_possible(possible, list(per_branch)) for per_branch in zip(*outs, strict=True)]


def _hull_of_possible(possible, values: list[Interval]) -> Interval:
    """Hull of ``values[i]`` over the ``i`` with ``possible[i]`` (at least one is)."""
    lowers = jnp.stack([v.lower for v in values])
    uppers = jnp.stack([v.upper for v in values])
    mask = possible.reshape((-1,) + (1,) * (lowers.ndim - 1))
    return Interval(
        jnp.min(jnp.where(mask, lowers, jnp.max(lowers, axis=0)), axis=0),
        jnp.max(jnp.where(mask, uppers, jnp.min(uppers, axis=0)), axis=0),
    )


@register_rule("while")
def _while(*args, **params):
    raise UnsupportedPrimitiveError(
        "lipxai.bounds: 'while' loops have no interval rule (their trip count may depend on "
        "the values); use lax.scan or lax.fori_loop with static bounds"
    )


@register_rule("scan")
def _scan(*args, jaxpr, length, reverse, **params):
    """``lax.scan`` with a fixed trip count, run as a ``lax.scan`` of the interval body.

    Which carries are Intervals is found by a fixpoint on abstract evaluation (a point carry
    becomes an Interval once an Interval flows into it); those start as zero-width Intervals.
    """
    num_consts, num_carry = scan_layout(params)
    consts, init, xs = args[:num_consts], list(args[num_consts:num_consts + num_carry]), \
        args[num_consts + num_carry:]

    def body(carry, x):
        outs = eval_closed(jaxpr, *consts, *carry, *x)
        return outs[:num_carry], outs[num_carry:]

    x_slice = [jax.tree_util.tree_map(lambda a: a[0], v) for v in xs]
    for _ in range(num_carry + 1):
        new_carry, _ys = jax.eval_shape(body, init, x_slice)
        promote = [is_interval(n) and not is_interval(c) for n, c in zip(new_carry, init,
                                                                          strict=True)]
        if not any(promote):
            break
        init = [as_interval(c) if p else c for c, p in zip(init, promote, strict=True)]

    def step(carry, x):
        new_carry, ys = body(carry, x)
        new_carry = [as_interval(n) if is_interval(c) else n
                     for n, c in zip(new_carry, carry, strict=True)]
        return new_carry, [as_interval(y) for y in ys]

    carry, ys = lax.scan(step, init, list(xs), length=length, reverse=reverse)
    return list(carry) + list(ys)
