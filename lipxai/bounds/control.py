"""Interval rules for primitives that carry sub-jaxprs: calls, custom derivatives, cond, scan.

Calls (``jit``/``pjit``, ``closed_call``, ``remat``, ``custom_jvp_call``, ``custom_vjp_call``)
interpret their body; the custom-derivative rules are irrelevant to bounding values.  A few
named functions get tighter rules than their bodies would: ``log_softmax`` and ``softmax``
(the shift by the stop-gradient max cancels exactly, which elementwise interval arithmetic
cannot see), ``logaddexp`` (monotone in both arguments; softplus is ``logaddexp(x, 0)``) and
the unit vectors ``x_w / ||x_w||`` in the gradient of L2-norm pooling (in ``[-1, 1]``, where
``x * (1 / sqrt(sum x^2))`` would be unbounded near 0).
The Fourier-domain convolutions of Cayley layers (:data:`lipxai._core.windows.CONV_SPECTRUM_NAME`,
and its transpose in a gradient) are linear: they get their exact hull ``A c +/- |A| r``.
``cond`` with an uncertain index takes the hull of the branches it may run; ``scan`` (fixed
trip count) runs the interval body in a ``lax.scan``.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jcore

from lipxai._core.jaxpr import scan_layout
from lipxai._core.windows import CONV_SPECTRUM_NAME, UNIT_VECTORS_NAME
from lipxai.bounds.interpreter import eval_closed, eval_jaxpr
from lipxai.bounds.interval import (
    Interval,
    as_interval,
    is_interval,
    lower_of,
    unpacked,
    upper_of,
)
from lipxai.bounds.registry import UnsupportedPrimitiveError, register_rule
from lipxai.bounds.rules import abs_bounds

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


#: The spectrum call, bare or as JAX names what it derives from it (``transpose(jvp(f))``).
_CONV_SPECTRUM = re.compile(r"(\w+\()*" + re.escape(CONV_SPECTRUM_NAME) + r"\)*$")

#: Margin of :func:`_abs_convolution`, in units of ``u log2(n1 n2 c)`` (``u``: unit roundoff).
_FFT_MARGIN = 16


def _depends_on(jaxpr, inputs: list[bool]) -> list[bool]:
    """Which outputs of ``jaxpr`` depend on the inputs flagged in ``inputs``.

    ``jit`` calls are followed into their bodies (JAX's residual outputs of a call may be
    constants); any other equation with a dependent input has all its outputs dependent."""
    reached = {v for v, flag in zip(jaxpr.invars, inputs, strict=True) if flag}

    def dependent(v):
        return not isinstance(v, jcore.Literal) and v in reached

    for eqn in jaxpr.eqns:
        flags = [dependent(v) for v in eqn.invars]
        if not any(flags):
            continue
        outs = [True] * len(eqn.outvars)
        if eqn.primitive.name in ("jit", "pjit"):
            outs = _depends_on(eqn.params["jaxpr"].jaxpr, flags)
        reached.update(v for v, flag in zip(eqn.outvars, outs, strict=True) if flag)
    return [dependent(v) for v in jaxpr.outvars]


def _impulse_responses(linear, shape, dtype) -> list:
    """Kernels ``K [n1, n2, c_out, c_in]`` of per-example circular convolutions.

    ``linear`` maps a batch ``[B, n1, n2, c_in]`` to a list of ``[B, n1, n2, c_out]``; its
    response to a unit impulse at pixel ``(0, 0)`` of channel ``i`` is ``K[:, :, :, i]``.
    The ``c_in`` impulses go ``B`` per batch (one per example), the batches under ``vmap``.
    """
    b, _, _, c = shape
    calls = -(-c // b)
    channel = jnp.arange(calls * b).reshape(calls, b)
    impulses = jnp.zeros((calls, *shape), dtype).at[
        jnp.arange(calls)[:, None], jnp.arange(b)[None, :], 0, 0, jnp.minimum(channel, c - 1)
    ].set((channel < c).astype(dtype))  # the examples past the last channel stay 0
    responses = jax.vmap(linear)(impulses)  # [calls, B, n1, n2, c_out] each
    return [jnp.moveaxis(out.reshape(calls * b, *out.shape[2:])[:c], 0, -1)
            for out in responses]


def _abs_convolution(r: jax.Array, kernel: jax.Array) -> jax.Array:
    """``(|A| r)[b, p, o] = sum_{q, i} |K[p - q, o, i]| r[b, q, i]`` (circular), rounded outwards.

    ``r >= 0`` is ``[B, n1, n2, c_in]`` and ``K`` ``[n1, n2, c_out, c_in]``.  Computed by FFT
    (the spectrum of ``|K| * r`` is ``rfft2(|K|)(f) rfft2(r)(f)``), whose rounding errors
    spread over all entries: an entry whose true value is tiny can come out negative or low
    by about ``u log2(n1 n2)`` times the largest entry, which is at most
    ``M_b = max_o sum_{d, i} |K[d, o, i]| max r_b``.  Negative values are raised to 0 and
    ``_FFT_MARGIN u log2(n1 n2 c_in) M_b`` is added (``u``: the unit roundoff), a margin
    that also covers the rounding of ``K`` itself and is 0 for a point (``r = 0``).
    """
    n1, n2, _, c = kernel.shape
    magnitude = jnp.abs(kernel)
    spectrum = jnp.fft.rfft2(magnitude, axes=(0, 1))
    r_hat = jnp.fft.rfft2(r, axes=(1, 2))
    product = jnp.einsum("hwoi,bhwi->bhwo", spectrum, r_hat, precision=lax.Precision.HIGHEST)
    out = jnp.fft.irfft2(product, s=(n1, n2), axes=(1, 2)).astype(r.dtype)
    largest = jnp.max(jnp.sum(magnitude, axis=(0, 1, 3))) * jnp.max(r, axis=(1, 2, 3))
    tol = _FFT_MARGIN * jnp.finfo(r.dtype).eps * np.log2(n1 * n2 * c)
    return jnp.maximum(out, 0) + tol * largest[:, None, None, None]


def _circular_convolution_bounds(closed, args):
    """Exact hull of a spectrum call (:data:`CONV_SPECTRUM_NAME`) on one input box, or None.

    The call is a per-example circular convolution of its Interval input, or (in a gradient)
    the transpose of one, whose other inputs (the spectrum, residuals) are points.  Its
    outputs that depend on ``x in [c - r, c + r]`` ``[B, n1, n2, ch]`` are linear in it,
    ``y = A x`` with ``(A x)[p] = sum_q K[p - q] x[q]``, so their hull over the box is
    ``A c +/- |A| r``: exact, each bound attained at a corner.  ``A c`` (and every other
    output) is the call itself at the centre, ``K`` its response to unit impulses, and
    ``|A| r`` the circular convolution of ``r`` with ``|K|`` (:func:`_abs_convolution`).
    None (so the body is interpreted, and fails loudly at its FFT) unless exactly one input
    is an Interval, of rank 4, and the outputs that depend on it are real arrays of its shape.
    """
    boxes = [i for i, a in enumerate(args) if is_interval(a)]
    if len(boxes) != 1:
        return None
    k = boxes[0]
    box = unpacked(args[k])
    if box.ndim != 4 or not jnp.issubdtype(box.dtype, jnp.floating):
        return None
    closed = closed if hasattr(closed, "consts") else jcore.ClosedJaxpr(closed, ())
    dependent = _depends_on(closed.jaxpr, [i == k for i in range(len(args))])
    avals = [v.aval for v in closed.jaxpr.outvars]
    if not any(dependent) or any(d and (a.shape != box.shape or a.dtype != box.dtype)
                                 for d, a in zip(dependent, avals, strict=True)):
        return None
    call = jcore.jaxpr_as_fun(closed)

    def at(value):
        return call(*args[:k], value, *args[k + 1:])

    kernels = iter(_impulse_responses(
        lambda v: [o for o, d in zip(at(v), dependent, strict=True) if d], box.shape,
        box.dtype))
    outs = []
    for out, d in zip(at(box.center), dependent, strict=True):
        if d:
            radius = _abs_convolution(box.radius, next(kernels))
            out = Interval(out - radius, out + radius)
        outs.append(out)
    return outs


def named_call(name: str, closed, args):
    """Tighter bounds for named jitted functions; None when there is no special rule."""
    if _CONV_SPECTRUM.match(name):
        return _circular_convolution_bounds(closed, args)
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
        named = named_call(params.get("name", ""), closed, args)
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


def function_name(closed) -> str:
    """The name of the Python function a call's jaxpr was traced from (``""`` if unknown)."""
    info = getattr(closed.jaxpr, "debug_info", None)
    src = getattr(info, "func_src_info", None) or ""
    return src.split(" ")[0]


@register_rule("custom_jvp_call")
def _custom_jvp_call(*args, call_jaxpr, num_consts, **params):
    if function_name(call_jaxpr) == "logaddexp" and len(args) == 2:
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
