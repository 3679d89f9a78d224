"""Symbolic (linear) bounds of forward values: ``interval(fun, method="symbolic")``.

Plain interval propagation (IBP) forgets that the values of a network are correlated through
the input: ``x @ W1 @ W2`` gets the radius ``|W1| |W2| r`` instead of ``|W1 W2| r``, and the
ReLU pre-activations of deeper layers come out so wide that many neurons are *undecided*
(their interval contains 0).  In a gradient, an undecided ReLU has the derivative mask
``[0, 1]``, and the interval interpretation of the backward pass (the Fast-Lip recursion of
Weng et al., "Towards Fast Computation of Certified Robustness for ReLU Networks", ICML 2018)
widens with every one of them.

This module holds the linear-bound rules; :mod:`lipxai.bounds.symbolic_interpreter` runs them
alongside the interval interpreter (:mod:`lipxai.bounds.interpreter`): while
the jaxpr is interpreted on Intervals as usual, each value ``v`` that depends on the input
through linear operations and ReLUs may also carry *linear bounds* in the input::

    A_lo eps + c_lo  <=  v  <=  A_hi eps + c_hi     for every input in the box,

where ``x = center + radius * eps`` with ``eps`` in ``[-1, 1]^n`` (the input box, normalised;
bounds linear in ``x`` are the same bounds after this change of variable, which makes the
concretisation a sum of ``|A|`` and a zero-width box exact).  After each equation, the output
interval is the intersection of the interval rule's result with the concretisation
``[c_lo - sum |A_lo|, c_hi + sum |A_hi|]``.  This is symbolic interval propagation (Wang,
Pei, Whitehouse, Yang & Jana, "Formal Security Analysis of Neural Networks using Symbolic
Intervals" (ReluVal), USENIX Security 2018) with the ReLU relaxation of CROWN / DeepPoly
(Zhang, Weng, Chen, Hsieh & Daniel, "Efficient Neural Network Robustness Certification with
General Activation Functions", NeurIPS 2018; Singh, Gehr, Pueschel & Vechev, "An Abstract
Domain for Certifying Neural Networks", POPL 2019, forward mode).  The backward pass is then
interpreted by the ordinary interval rules, with fewer undecided ReLUs.

Layout: ``A`` has shape ``(n,) + v.shape`` where ``n`` is the number of input features of
*one* example (all Interval arguments' features, concatenated) and ``v.shape[0]`` is the batch:
``A[i, b]`` is the coefficient of feature ``i`` *of example b* in ``v[b]``.  Examples never
interact: every rule checks that the operation keeps axis 0 as the example axis (no
contraction, slicing, broadcast or reduction over it); otherwise the output carries an
interval only.  The linear part is a ``vmap`` over the leading axis of the operation itself.

Rules (linear maps with point weights are exact on ``A``): ``dot_general``,
``conv_general_dilated`` (point weights), ``add``/``add_any``/``sub`` (of symbolic values,
points, or Intervals, which shift the constants), ``neg``, ``mul``/``div`` by a point,
``reshape``, ``broadcast_in_dim``, ``transpose``, ``squeeze``, ``convert_element_type``
(float, not narrowing), ``slice``, ``pad``, ``concatenate``, ``stack``, ``reduce_sum``,
``reduce_window_sum``, ``copy``; calls (``jit``, ``closed_call``, ``custom_jvp_call`` -- the
primal body of e.g. ``jax.nn.relu`` --, ``custom_vjp_call``, remat) are interpreted
recursively.  Non-linear rules:

* ``max(z, p)`` / ``min(z, p)`` with a point ``p`` (ReLU is ``max(z, 0)``), with
  ``t = z - p`` in ``[l, u]``: exact when decided (``l >= 0``: ``z``; ``u <= 0``: ``p``);
  otherwise the triangle upper bound ``p + u / (u - l) (t - l)`` and the lower bound ``p + t``
  if ``u > -l`` else ``p`` (the adaptive choice of CROWN / DeepPoly);
* ``reduce_max`` (max pooling by blocks) and ``reduce_window_max`` with tiling windows
  (``flax.linen.max_pool`` with ``strides == window``, no padding): DeepPoly's rule: the lower
  bound of the element with the largest lower bound; the upper bound of that element if its
  lower bound dominates every other upper bound, else the constant ``max u``.
* ``lipxai.nn.pooling.window_l2_norms`` (L2NormPool, a named custom-JVP function) with tiling
  windows of at most :data:`MAX_L2_WINDOW` elements: ``g . x <= ||x|| <= g . x + b`` per
  window, with ``g`` the unit vector of the box's centre (Cauchy-Schwarz below; above, ``b``
  the largest ``||v|| - g . v`` over the box's vertices, where a convex function peaks);
* ``max(a, b)`` / ``min(a, b)`` of two symbolic values (GroupSort's pairs): the same rule on
  a window of two.  In the backward pass, ``jax.grad`` routes a cotangent through ``max(a, b)``
  by ``a == max(a, b)``, i.e. ``a >= b`` (:class:`lipxai.bounds.patterns.MaxFacts`); that
  comparison also uses the linear bounds of ``a - b``, in which the input's contributions to
  both cancel.

Any other primitive gives its outputs an interval only (the interval rule's), which is sound
by construction: the linear part is an optional refinement.

Cost: per example, ``A`` has ``n`` x (size of the value) entries, twice once the lower and
upper bounds differ (after the first relaxed ReLU), and each linear layer costs about ``2 n``
times its forward pass.  The input's own coefficients are kept diagonal (:class:`Diagonal`)
until the first layer, so a first dense layer costs ``n`` x its outputs, not an ``n x n``
product.  So memory and time grow with the input size times the activations: already for
an MNIST MLP the gradient bounds take far longer than IBP, and the conv32-conv64-dense128 CNN
of ``benchmarks/_common.py`` (28x28x32 conv outputs: 784 x 25088 coefficients) needs hundreds
of MB per example (figures in docs/results.md).  Batch the examples accordingly.  Parameter
boxes are not supported (the linear bounds are in the input only).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lipxai.bounds.control import function_name
from lipxai.bounds.interval import Interval, is_interval, lower_of, upper_of
from lipxai.bounds.linear import Diagonal, Linear, affine, broadcast, densify, negate, sum_terms
from lipxai.bounds.registry import register_symbolic_rule

lo, hi = lower_of, upper_of


# --------------------------------------------------------------------------- the rules

def _map(fn, lin: Linear) -> Linear:
    """A linear map with non-negative coefficients (layouts, sums): applied to each bound."""
    vfn = jax.vmap(fn)
    a_lo, c_lo = vfn(lin.a_lo), fn(lin.c_lo)
    if lin.exact:
        return affine(a_lo, c_lo)
    return Linear(a_lo, c_lo, vfn(lin.a_hi), fn(lin.c_hi))


def _signed(apply, lin: Linear, w) -> Linear:
    """``apply(v, w)``, linear in ``v`` with a point ``w`` of any sign: in centre-radius form,
    ``apply(m, w) -/+ apply(r, |w|)`` with ``m, r = (hi + lo) / 2, (hi - lo) / 2`` (as linear
    functions), which is ``W+ lo + W- hi`` and ``W+ hi + W- lo``."""
    vapply = jax.vmap(apply, in_axes=(0, None))
    if lin.exact:
        return affine(vapply(lin.a_lo, w), apply(lin.c_lo, w))
    aw = jnp.abs(w)
    a_mid, a_rad = vapply((lin.a_hi + lin.a_lo) / 2, w), vapply((lin.a_hi - lin.a_lo) / 2, aw)
    c_mid, c_rad = apply((lin.c_hi + lin.c_lo) / 2, w), apply((lin.c_hi - lin.c_lo) / 2, aw)
    return Linear(a_mid - a_rad, c_mid - c_rad, a_mid + a_rad, c_mid + c_rad)


def _structural(prim_name: str, keeps_batch: Callable):
    """Rule for a layout primitive of one operand (non-negative, exact on ``A``)."""

    def rule(invals, lins, out_aval, **params):
        (lin,) = lins[:1]
        if lin is None or any(v is not None for v in lins[1:]) or len(invals) != 1:
            return None
        if not keeps_batch(invals[0], out_aval, **params):
            return None
        prim = _PRIMS[prim_name]
        if isinstance(lin.a_lo, Diagonal):  # a reshape keeping the batch: same flat order
            d = lin.a_lo
            c = prim.bind(lin.c_lo, **params)
            return affine(Diagonal(prim.bind(d.scale, **params), d.offset, d.n), c)
        return _map(lambda v: prim.bind(v, **params), lin)

    return rule


def _shape(value):
    return tuple(lo(value).shape)


def _reshape_ok(x, out, *, dimensions=None, **_):
    return dimensions is None and out.shape[:1] == _shape(x)[:1]


def _broadcast_ok(x, out, *, broadcast_dimensions, **_):
    shape = _shape(x)
    return (len(shape) >= 1 and broadcast_dimensions[0] == 0
            and out.shape[0] == shape[0])


def _transpose_ok(x, out, *, permutation, **_):
    return permutation[0] == 0


def _squeeze_ok(x, out, *, dimensions, **_):
    return 0 not in dimensions


def _slice_ok(x, out, *, start_indices, limit_indices, strides=None, **_):
    return (start_indices[0] == 0 and limit_indices[0] == _shape(x)[0]
            and (strides is None or strides[0] == 1))


def _reduce_ok(x, out, *, axes, **_):
    return 0 not in axes


def _window_ok(x, out, *, window_dimensions, window_strides, padding, base_dilation,
               window_dilation, **_):
    return (window_dimensions[0] == 1 and window_strides[0] == 1
            and tuple(padding[0]) == (0, 0) and base_dilation[0] == 1
            and window_dilation[0] == 1)


def _convert_ok(x, out, *, new_dtype, **_):
    old, new = jnp.dtype(lo(x).dtype), jnp.dtype(new_dtype)
    return (jnp.issubdtype(old, jnp.floating) and jnp.issubdtype(new, jnp.floating)
            and new.itemsize >= old.itemsize)


_PRIMS = {p.name: p for p in (
    lax.reshape_p, lax.broadcast_in_dim_p, lax.transpose_p, lax.squeeze_p, lax.slice_p,
    lax.reduce_sum_p, lax.reduce_window_sum_p, lax.convert_element_type_p, lax.copy_p,
    lax.pad_p, lax.concatenate_p, lax.dot_general_p, lax.conv_general_dilated_p)}

for _name, _ok in (("reshape", _reshape_ok), ("broadcast_in_dim", _broadcast_ok),
                   ("transpose", _transpose_ok), ("squeeze", _squeeze_ok),
                   ("slice", _slice_ok), ("convert_element_type", _convert_ok),
                   ("copy", lambda x, out, **_: True)):
    register_symbolic_rule(_name)(_structural(_name, _ok))
for _name, _ok in (("reduce_sum", _reduce_ok), ("reduce_window_sum", _window_ok)):
    register_symbolic_rule(_name, tightens=True)(_structural(_name, _ok))


@register_symbolic_rule("pad")
def _pad(invals, lins, out_aval, *, padding_config):
    (_, value), (lin, value_lin) = invals, lins
    if lin is None or value_lin is not None or tuple(padding_config[0]) != (0, 0, 0):
        return None
    pad = lambda v, p: lax.pad_p.bind(v, p, padding_config=padding_config)  # noqa: E731
    zero = jnp.zeros((), lin.a_lo.dtype)
    vpad = jax.vmap(lambda a: pad(a, zero))
    a_lo, c_lo = vpad(lin.a_lo), pad(lin.c_lo, jnp.asarray(lo(value), lin.c_lo.dtype))
    if lin.exact and not is_interval(value):
        return affine(a_lo, c_lo)
    a_hi = a_lo if lin.a_lo is lin.a_hi else vpad(lin.a_hi)
    return Linear(a_lo, c_lo, a_hi, pad(lin.c_hi, jnp.asarray(hi(value), lin.c_hi.dtype)))


def _joined(join):
    """Rule of ``concatenate`` / ``stack`` (``join(values, axis)``) along a non-batch axis."""

    def rule(invals, lins, out_aval, **params):
        axis = params["dimension" if "dimension" in params else "axis"]
        if axis == 0:
            return None
        some = next(lin for lin in lins if lin is not None)
        n, dtype = some.a_lo.shape[0], some.a_lo.dtype
        parts = []
        for value, lin in zip(invals, lins, strict=True):
            if lin is None:
                zeros = jnp.zeros((n,) + _shape(value), dtype)
                lin = (affine(zeros, jnp.asarray(value, dtype)) if not is_interval(value)
                       else Linear(zeros, value.lower, zeros, value.upper))
            parts.append(lin)
        a_lo, c_lo = join([p.a_lo for p in parts], axis + 1), join([p.c_lo for p in parts], axis)
        if all(p.exact for p in parts):
            return affine(a_lo, c_lo)
        return Linear(a_lo, c_lo, join([p.a_hi for p in parts], axis + 1),
                      join([p.c_hi for p in parts], axis))

    return rule


_stack = _joined(lambda vs, axis: jnp.stack(vs, axis=axis))
register_symbolic_rule("concatenate")(_joined(lambda vs, axis: jnp.concatenate(vs, axis=axis)))
register_symbolic_rule("stack")(_stack)


def _constant(value, dtype) -> Linear | None:
    """A point or an Interval operand as a Linear with ``A = 0`` (``A`` left as None)."""
    if is_interval(value):
        return Linear(None, value.lower.astype(dtype), None, value.upper.astype(dtype))
    value = jnp.asarray(value, dtype)
    return Linear(None, value, None, value)


def _terms(invals, lins, dtype):
    return [lin if lin is not None else _constant(v, dtype) for v, lin in zip(invals, lins,
                                                                             strict=True)]


def _add(invals, lins, out_aval, **params):
    return sum_terms(_terms(invals, lins, out_aval.dtype), out_aval.shape)


def _negated(t: Linear) -> Linear:
    if t.a_lo is None:
        return Linear(None, -t.c_hi, None, -t.c_lo)
    return negate(t)


register_symbolic_rule("add", tightens=True)(_add)
register_symbolic_rule("add_any", tightens=True)(_add)


@register_symbolic_rule("sub", tightens=True)
def _sub(invals, lins, out_aval, **params):
    first, second = _terms(invals, lins, out_aval.dtype)
    return sum_terms([first, _negated(second)], out_aval.shape)


@register_symbolic_rule("neg")
def _neg_rule(invals, lins, out_aval, **params):
    return negate(lins[0])


def _scaled(op):
    """``mul`` / ``div`` of a symbolic value by a point (``div``: the divisor)."""

    def rule(invals, lins, out_aval, **params):
        for i, lin in enumerate(lins):
            other = invals[1 - i]
            if lin is None or is_interval(other) or (op == "div" and i == 1):
                continue
            lin = broadcast(lin, out_aval.shape)
            if lin is None:
                return None
            apply = (lambda v, w: v * w) if op == "mul" else (lambda v, w: v / w)
            return _signed(apply, lin, jnp.asarray(other, lin.c_lo.dtype))
        return None

    return rule


register_symbolic_rule("mul")(_scaled("mul"))
register_symbolic_rule("div")(_scaled("div"))


@register_symbolic_rule("dot_general", tightens=True)
def _dot_general(invals, lins, out_aval, *, dimension_numbers, **params):
    (contract_l, contract_r), (batch_l, batch_r) = dimension_numbers
    (a, b), (lin_a, lin_b) = invals, lins
    bind = lambda x, y: lax.dot_general_p.bind(  # noqa: E731
        x, y, dimension_numbers=dimension_numbers, **params)
    if lin_a is not None and lin_b is None and not is_interval(b):
        # axis 0 of the lhs must become axis 0 of the output: a leading batch dimension or,
        # without batch dimensions, the first free dimension
        if 0 in contract_l or (0 in batch_l and batch_l[0] != 0) or (
                0 not in batch_l and len(batch_l)):
            return None
        if isinstance(lin_a.a_lo, Diagonal):
            first = _dense_layer_of_input(lin_a, b, contract_l, contract_r, batch_l, out_aval)
            if first is not None:
                return affine(first, bind(lin_a.c_lo, b))
            lin_a = densify(lin_a)
        return _signed(bind, lin_a, b)
    lin_a, lin_b = densify(lin_a), densify(lin_b)
    if lin_b is not None and lin_a is None and not is_interval(a):
        free_l = len(_shape(a)) - len(contract_l) - len(batch_l)
        if 0 in contract_r or (0 in batch_r and batch_r[0] != 0) or (
                0 not in batch_r and (len(batch_r) or free_l)):
            return None
        return _signed(lambda y, x: bind(x, y), lin_b, a)
    return None


def _dense_layer_of_input(lin, w, contract_l, contract_r, batch_l, out_aval):
    """``A`` of ``x @ W`` for an input ``x`` (a Diagonal) contracted over all its features:
    ``A[i, b] = scale[b, i] W[i]`` (elementwise, no product with an identity), or None."""
    d = lin.a_lo
    rank = len(d.scale.shape)
    if batch_l or sorted(contract_l) != list(range(1, rank)):
        return None
    w = jnp.asarray(w)
    paired = [contract_r[list(contract_l).index(j)] for j in range(1, rank)]
    free = [k for k in range(w.ndim) if k not in contract_r]
    batch, size = d.scale.shape[0], int(np.prod(d.scale.shape[1:], dtype=int))
    rows = jnp.transpose(w, paired + free).reshape(size, -1)  # [features, outputs]
    a = d.scale.reshape(batch, size).T[:, :, None] * rows[:, None, :]
    a = a.reshape((size,) + tuple(out_aval.shape)).astype(out_aval.dtype)
    if size != d.n:
        a = jnp.pad(a, [(d.offset, d.n - d.offset - size)] + [(0, 0)] * (a.ndim - 1))
    return a


@register_symbolic_rule("conv_general_dilated", tightens=True)
def _conv(invals, lins, out_aval, **params):
    (_, w), (lin_x, lin_w) = invals, lins
    dn = params["dimension_numbers"]
    if (lin_x is None or lin_w is not None or is_interval(w) or dn is None
            or dn.lhs_spec[0] != 0 or dn.out_spec[0] != 0 or params["batch_group_count"] != 1):
        return None
    return _signed(lambda v, k: lax.conv_general_dilated_p.bind(v, k, **params), lin_x, w)


def _relu_shift(lin: Linear, z: Interval, p) -> Linear:
    """Linear bounds of ``max(z, p)`` (``p`` a point) from those of ``z`` in ``[l, u]``."""
    dtype = lin.c_lo.dtype
    p = jnp.asarray(p, dtype)
    low, high = z.lower - p, z.upper - p
    active, inactive = low >= 0, high <= 0
    finite = jnp.isfinite(low) & jnp.isfinite(high)
    undecided = ~active & ~inactive
    relaxed = undecided & finite  # an infinite bound: the constant upper bound below
    one, zero = jnp.ones((), dtype), jnp.zeros((), dtype)
    safe_width = jnp.where(relaxed, high - low, one)
    upper_slope = jnp.where(relaxed, jnp.where(relaxed, high, zero) / safe_width,
                            jnp.where(active, one, zero))
    upper_shift = p * (1 - upper_slope) + jnp.where(
        relaxed, -upper_slope * jnp.where(relaxed, low, zero),
        jnp.where(undecided, high, zero))
    lower_slope = jnp.where(undecided, (high > -low).astype(dtype), active.astype(dtype))
    lower_shift = p * (1 - lower_slope)
    return Linear(lin.a_lo * lower_slope, lin.c_lo * lower_slope + lower_shift,
                  lin.a_hi * upper_slope, lin.c_hi * upper_slope + upper_shift)


def _extreme(largest: bool):
    def rule(invals, lins, out_aval, **params):
        if all(lin is not None for lin in lins):
            return _max_of_two(invals, lins, out_aval.shape, largest)
        for i in (0, 1):
            lin, z, other = lins[i], invals[i], invals[1 - i]
            if lin is None or lins[1 - i] is not None or is_interval(other):
                continue
            lin = broadcast(lin, out_aval.shape)
            if lin is None:
                return None
            z = Interval(jnp.broadcast_to(z.lower, out_aval.shape),
                         jnp.broadcast_to(z.upper, out_aval.shape))
            if largest:
                return _relu_shift(lin, z, other)
            # min(z, p) = -max(-z, -p)
            neg_z = Interval(-z.upper, -z.lower)
            return negate(_relu_shift(negate(lin), neg_z, -jnp.asarray(other)))
        return None

    return rule


def _max_of_two(invals, lins, shape, largest: bool) -> Linear | None:
    """``max(a, b)`` (``min`` when not ``largest``) of two symbolic values: the
    :func:`_reduce_max` rule on the pair stacked along a new last axis (DeepPoly's max of a
    window of two); ``min(a, b) = -max(-a, -b)``.  This keeps GroupSort (pairs of
    ``min``/``max``) symbolic."""
    lins = [broadcast(lin, shape) for lin in lins]
    if any(lin is None for lin in lins):
        return None
    values = [Interval(jnp.broadcast_to(lo(v), shape), jnp.broadcast_to(hi(v), shape))
              for v in invals]
    if not largest:
        values = [Interval(-v.upper, -v.lower) for v in values]
        lins = [negate(lin) for lin in lins]
    axis = len(shape)
    pair = Interval(jnp.stack([v.lower for v in values], axis),
                    jnp.stack([v.upper for v in values], axis))
    out = _reduce_max([pair], [_stack(values, lins, None, axis=axis)], None, axes=(axis,))
    return out if largest else negate(out)


register_symbolic_rule("max")(_extreme(True))
register_symbolic_rule("min")(_extreme(False))


@register_symbolic_rule("reduce_max")
def _reduce_max(invals, lins, out_aval, *, axes, **params):
    """DeepPoly's max: lower bound from the element with the largest lower bound; upper
    bound from it too if it dominates (its lower bound >= every other upper bound), else the
    constant largest upper bound."""
    (z,), (lin,) = invals, lins
    if lin is None or 0 in axes:
        return None
    rank = z.ndim
    kept = [i for i in range(rank) if i not in axes]
    perm = kept + list(axes)
    out_shape = tuple(z.shape[i] for i in kept)

    def windows(v, lead=0):  # (..., out_shape, window)
        moved = jnp.transpose(v, tuple(range(lead)) + tuple(lead + i for i in perm))
        return moved.reshape(v.shape[:lead] + out_shape + (-1,))

    low, high = windows(z.lower), windows(z.upper)
    best = jnp.argmax(low, axis=-1)
    onehot = jax.nn.one_hot(best, low.shape[-1], dtype=bool)
    best_low = jnp.max(low, axis=-1)
    others_high = jnp.max(jnp.where(onehot, -jnp.inf, high), axis=-1)
    dominant = best_low >= others_high

    def pick(v, lead):
        return jnp.sum(jnp.where(onehot, windows(v, lead), 0), axis=-1)

    a_lo, c_lo = pick(lin.a_lo, 1), pick(lin.c_lo, 0)
    a_hi = jnp.where(dominant, pick(lin.a_hi, 1) if not lin.exact else a_lo, 0)
    c_hi = jnp.where(dominant, pick(lin.c_hi, 0) if not lin.exact else c_lo,
                     jnp.max(high, axis=-1))
    return Linear(a_lo, c_lo, a_hi.astype(a_lo.dtype), c_hi.astype(c_lo.dtype))


@register_symbolic_rule("reduce_window_max")
def _reduce_window_max(invals, lins, out_aval, *, window_dimensions, window_strides, padding,
                       base_dilation, window_dilation, **params):
    """Max pooling with windows that tile (``flax.linen.max_pool`` with ``strides ==
    window``, no padding): the windows as axes of a reshape, then :func:`_reduce_max`."""
    (z,), (lin,) = invals, lins
    if (lin is None or tuple(window_dimensions) != tuple(window_strides)
            or window_dimensions[0] != 1 or any(tuple(p) != (0, 0) for p in padding)
            or any(d != 1 for d in (*base_dilation, *window_dilation))):
        return None
    windows = _tiling_windows(window_dimensions, out_aval.shape)
    z = Interval(windows(z.lower), windows(z.upper))
    a_lo, c_lo = windows(lin.a_lo, 1), windows(lin.c_lo)
    lin = (affine(a_lo, c_lo) if lin.exact
           else Linear(a_lo, c_lo, windows(lin.a_hi, 1), windows(lin.c_hi)))
    return _reduce_max([z], [lin], out_aval, axes=tuple(range(1, 2 * len(out_aval.shape), 2)))


def _tiling_windows(window, out_shape):
    """``windows(v, lead)``: ``v`` (with ``lead`` leading axes) cropped to the windows that
    tile it and reshaped to ``(lead..., out_0, w_0, out_1, w_1, ...)``; the window axes are
    the odd ones after ``lead``."""
    crop = tuple(slice(0, n * w) for n, w in zip(out_shape, window, strict=True))
    blocks = tuple(d for n, w in zip(out_shape, window, strict=True) for d in (n, w))

    def windows(v, lead=0):
        return v[(slice(None),) * lead + crop].reshape(v.shape[:lead] + blocks)

    return windows


#: Windows of at most this many elements get the vertex bound of :func:`_window_l2_norms`
#: (``2 ** size`` vertices per window); larger ones keep the interval only.
MAX_L2_WINDOW = 4


def _window_l2_norms(invals, lins, out_aval, body):
    """``||x_w||_2`` over tiling windows (``lipxai.nn.pooling.window_l2_norms``, the
    L2NormPool of lipxai's 1-Lipschitz CNNs), with ``g_w = c_w / ||c_w||`` from the centre
    ``c`` of the box of ``x``: ``g_w . x_w <= ||x_w|| <= g_w . x_w + b_w`` where the lower
    bound is Cauchy-Schwarz (``||g_w|| <= 1``) and ``b_w`` is the largest ``||v|| - g_w . v``
    over the vertices ``v`` of the window's box (a convex function peaks at a vertex)."""
    sums = [e for e in body.jaxpr.eqns if e.primitive is lax.reduce_window_sum_p]
    (z,), (lin,) = invals, lins
    if lin is None or len(sums) != 1:
        return None
    p = sums[0].params
    window = tuple(p["window_dimensions"])
    if (window != tuple(p["window_strides"]) or window[0] != 1
            or any(tuple(q) != (0, 0) for q in p["padding"])
            or any(d != 1 for d in (*p["base_dilation"], *p["window_dilation"]))
            or not 0 < np.prod(window) <= MAX_L2_WINDOW):
        return None
    windows = _tiling_windows(window, out_aval.shape)
    rank = len(out_aval.shape)
    axes = tuple(range(1, 2 * rank, 2))
    low, high = windows(z.lower), windows(z.upper)
    center = (low + high) / 2
    norm = jnp.sqrt(jnp.sum(center * center, axis=axes, keepdims=True))
    g = jnp.where(norm > 0, center / jnp.where(norm > 0, norm, 1), 0)

    def elements(v):  # the window's elements, each shaped like the output
        v = jnp.transpose(v, tuple(range(0, 2 * rank, 2)) + axes)
        v = v.reshape(tuple(out_aval.shape) + (-1,))
        return [v[..., i] for i in range(v.shape[-1])]

    lows, highs, gs = elements(low), elements(high), elements(g)
    gap = None  # max over the box's vertices v of ||v|| - g . v
    for corner in itertools.product((False, True), repeat=len(lows)):
        v = [top if up else bottom for bottom, top, up in zip(lows, highs, corner, strict=True)]
        value = jnp.sqrt(sum(e * e for e in v)) - sum(gi * e for gi, e in zip(gs, v, strict=True))
        gap = value if gap is None else jnp.maximum(gap, value)
    g_pos, g_neg = jnp.maximum(g, 0), jnp.minimum(g, 0)
    a_lo_w, c_lo_w = windows(lin.a_lo, 1), windows(lin.c_lo)
    a_hi_w, c_hi_w = (a_lo_w, c_lo_w) if lin.exact else (windows(lin.a_hi, 1), windows(lin.c_hi))
    shifted = tuple(a + 1 for a in axes)
    return Linear(jnp.sum(g_pos[None] * a_lo_w + g_neg[None] * a_hi_w, axis=shifted),
                  jnp.sum(g_pos * c_lo_w + g_neg * c_hi_w, axis=axes),
                  jnp.sum(g_pos[None] * a_hi_w + g_neg[None] * a_lo_w, axis=shifted),
                  jnp.sum(g_pos * c_hi_w + g_neg * c_lo_w, axis=axes) + gap)


@register_symbolic_rule("custom_jvp_call", tightens=True)
def _custom_jvp_call(invals, lins, out_aval, *, call_jaxpr, **params):
    """The named custom-JVP functions of :data:`NAMED_CUSTOM_JVP` (the others are
    interpreted through their bodies: :mod:`lipxai.bounds.symbolic_interpreter`)."""
    rule = NAMED_CUSTOM_JVP.get(function_name(call_jaxpr))
    return None if rule is None else rule(invals, lins, out_aval, call_jaxpr)


#: Custom-JVP functions with a rule of their own, by name: ``logaddexp`` keeps the interval
#: rule's exact bounds (no linear bounds), ``window_l2_norms`` gets :func:`_window_l2_norms`.
NAMED_CUSTOM_JVP = {"logaddexp": lambda *args: None, "window_l2_norms": _window_l2_norms}
