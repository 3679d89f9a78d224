"""Certified robustness of gradient explanations, from interval bounds on the input gradient.

Wicker, Heo, Costabello & Weller, "Robust Explanation Constraints for Neural Networks"
(ICLR 2023): propagate an input box ``[x - eps, x + eps]`` and/or a parameter box
``[W - delta, W + delta]`` through the forward *and* the backward pass (here:
``interval(jax.grad(...))``) to get ``g_lo <= grad_x score(x', W') <= g_hi`` for every
``x'``, ``W'`` in the boxes.  From these bounds, per example:

* ``change_{l1,l2,linf}``: upper bounds on ``||e(x', W') - e(x, W)||_p`` where ``e`` is the
  explanation (the gradient, or its absolute value for saliency maps), from the per-feature
  worst case ``d_i = max(e_hi_i - e_i, e_i - e_lo_i)``;
* ``topk_certified``: how many of the current top-k features (by ``|gradient|``) certainly
  stay in the top k: feature ``i`` does if fewer than ``k`` other features ``j`` can reach
  it, ``#{j != i : s_hi_j >= s_lo_i} < k`` (``s`` = importance bounds); ``topk_stable`` when
  all ``k`` do (the top-k set cannot change);
* ``sign_stable``: the features whose gradient sign is certain (``g_lo > 0`` or ``g_hi < 0``);
* ``sensitive_excluded``: no feature of a ``sensitive`` mask can enter the top k: each
  sensitive ``s`` has at least ``k`` features ``j`` with ``s_lo_j > s_hi_s`` (the paper's
  tabular experiments);
* ``prediction_certified``: forward IBP on the same boxes certifies the class when
  ``logit_lo[target] > max_{j != target} logit_hi[j]``.

Invalid examples are never certified (the NaN rule of ``lipxai._core.checks``): an example whose
input is not finite, whose box is empty (a negative or NaN ``eps``, ``x`` outside ``domain``,
values that are only seen under ``jit``) or whose target is not a class gets NaN gradient
and logit bounds, and :func:`certify_explanation` turns NaN bounds into NaN changes, False
certificates and ``topk_certified = -1``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lipxai._core.checks import (
    finite_examples,
    floating_array,
    in_range,
    labels_for,
    nan_unless,
    non_empty,
    non_negative,
    ordered_pair,
    positive_int,
)
from lipxai._core.margins import best_other, class_logit
from lipxai.bounds.interval import Interval, as_interval, is_interval
from lipxai.bounds.rules import abs_bounds
from lipxai.bounds.transform import METHODS, interval

#: ``loss=`` names of :func:`gradient_bounds`; a callable ``loss(logits, target) -> [B]`` works too.
SCORES = ("logit", "cross_entropy")


class GradientBounds(NamedTuple):
    """``lower <= grad_x score <= upper`` over the boxes; ``gradient`` at the nominal point;
    ``logits``: forward bounds (an Interval) of the model's outputs over the same boxes."""

    lower: jax.Array
    upper: jax.Array
    gradient: jax.Array
    logits: Interval


def params_box(params, *, relative: float = 0.0, absolute: float = 0.0):
    """The box ``W +/- (relative * |W| + absolute)`` around every floating leaf of ``params``
    (``relative``, ``absolute``: finite and ``>= 0``)."""
    relative, absolute = non_negative("relative", relative), non_negative("absolute", absolute)

    def leaf_box(w):
        w = jnp.asarray(w)
        if not jnp.issubdtype(w.dtype, jnp.floating):
            return w
        r = relative * jnp.abs(w) + absolute
        return Interval(w - r, w + r)

    return jax.tree_util.tree_map(leaf_box, params)


@jax.jit
def softmax(logits):
    """``softmax`` over the last axis as one named call (``jax.nn.softmax`` is inlined into
    its operations), so that :mod:`lipxai.bounds.control` bounds it exactly."""
    return jnp.exp(jax.nn.log_softmax(logits, axis=-1))


@jax.custom_jvp
def cross_entropy(logits, onehot):
    """``-sum_c onehot_c log_softmax(logits)_c`` per row, whose derivative in ``logits`` is
    written ``softmax(logits) - onehot`` with :func:`softmax` (a named call).

    The values are optax's / JAX's; the point is the interval transformation of its gradient:
    ``jax.grad`` of ``log_softmax`` leaves ``exp(z - max z) / sum exp(z - max z)`` as separate
    operations, whose interval quotient ignores that numerator and denominator move together
    (bounds 200x the sampled spread of the gradient at eps = 1e-3 on a small MLP, unbounded
    growth at 0.1), while ``lipxai.bounds`` bounds a ``softmax`` call exactly
    (:mod:`lipxai.bounds.control`).
    """
    return -jnp.sum(onehot * jax.nn.log_softmax(logits, axis=-1), axis=-1)


@cross_entropy.defjvp
def _cross_entropy_jvp(primals, tangents):
    logits, onehot = primals
    d_logits, d_onehot = tangents
    log_p = jax.nn.log_softmax(logits, axis=-1)
    slope = jnp.sum((softmax(logits) - onehot) * d_logits, axis=-1)
    return -jnp.sum(onehot * log_p, axis=-1), slope - jnp.sum(log_p * d_onehot, axis=-1)


def _score_fn(loss) -> Callable:
    """``score(logits [B, C], target [B]) -> [B]`` whose input gradient is explained."""
    if callable(loss):
        return loss
    if loss == "logit":
        return lambda logits, target: jnp.take_along_axis(logits, target[:, None], 1)[:, 0]
    if loss == "cross_entropy":
        return lambda logits, target: cross_entropy(
            logits, jax.nn.one_hot(target, logits.shape[-1], dtype=logits.dtype))
    raise ValueError(f"loss must be one of {SCORES} or a callable, got {loss!r}")


def _input_box(x, eps, domain) -> Interval | jax.Array:
    if eps is None:
        return x
    radius = jnp.asarray(non_negative("eps", eps), x.dtype)
    if radius.ndim == 1:  # one radius per example
        if radius.shape != x.shape[:1]:
            raise ValueError(f"eps must be a scalar or have shape ({x.shape[0]},), got shape "
                             f"{radius.shape}")
        radius = radius.reshape((-1,) + (1,) * (x.ndim - 1))
    lower, upper = x - radius, x + radius
    if domain is not None:
        lower, upper = jnp.maximum(lower, domain[0]), jnp.minimum(upper, domain[1])
    return Interval(lower, upper)


def _all_ordered(tree) -> jax.Array:
    """Whether every Interval leaf of ``tree`` has ``lower <= upper`` (and no NaN)."""
    ok = jnp.asarray(True)
    for leaf in jax.tree_util.tree_leaves(tree, is_leaf=is_interval):
        if is_interval(leaf):
            ok = ok & jnp.all(leaf.lower <= leaf.upper)
    return ok


def _valid_boxes(x, target, n_classes, box, params_box):
    """``(valid [B], box)``: the examples the NaN rule keeps (finite ``x``, a class as target,
    a non-empty input box, a parameter box with ``lower <= upper``), and the input box with
    the others replaced by the point 0, so that the interval transformation sees valid boxes
    only."""
    valid = finite_examples(x) & in_range(target, n_classes) & _all_ordered(params_box)
    if not is_interval(box):
        return valid, box
    flat = lambda a: a.reshape(a.shape[0], -1)
    valid = valid & jnp.all(flat(box.lower) <= flat(box.upper), axis=1)
    keep = valid.reshape((-1,) + (1,) * (x.ndim - 1))
    zero = jnp.zeros((), x.dtype)
    return valid, Interval(jnp.where(keep, box.lower, zero), jnp.where(keep, box.upper, zero))


def gradient_bounds(fn: Callable, x, target, *, eps=None, params=None, params_box=None,
                    loss="logit", domain: tuple[float, float] | None = None,
                    method: str = "ibp") -> GradientBounds:
    """Bounds on the input gradient of the target's score over an input and/or parameter box.

    Args:
      fn: a batched model ``fn(x) -> logits``; with ``params``, ``fn(params, x)``.
      x: ``[B, ...]`` inputs; ``target``: ``int[B]`` classes.
      eps: L_inf radius of the input box (a scalar or one per example); ``None``: no input box.
      params, params_box: nominal parameters and a pytree of Intervals around them (see
        :func:`params_box`); ``None``: the parameters are fixed.
      loss: ``"logit"`` (the target logit), ``"cross_entropy"``, or ``loss(logits, target)
        -> [B]``.  Examples must not interact in ``fn`` (no batch norm in training mode).
      domain: ``(low, high)`` with ``low <= high`` (finite numbers) clips the input box,
        e.g. ``(0, 1)`` for images.
      method: ``"ibp"`` (default): interval bound propagation through the forward and the
        backward pass.  ``"symbolic"``: the forward values also carry linear bounds in the
        input (symbolic intervals, Wang et al. 2018, with the CROWN/DeepPoly ReLU relaxation,
        Zhang et al. 2018 / Singh et al. 2019; see :mod:`lipxai.bounds.symbolic`), which
        decide more ReLUs, so the backward pass (the Fast-Lip recursion, Weng et al. 2018)
        gives tighter, never looser, gradient bounds.  Input boxes only (a ``params_box``
        raises ``ValueError``); memory and time grow with (input features) x (neurons) per
        example: run it on small batches.

    Returns a :class:`GradientBounds` with ``[B, ...]`` arrays shaped like ``x``.  Everything
    is a jax.numpy function of ``x``, ``eps`` and the parameters: differentiable, jittable
    (call it under ``jax.jit``: the jaxpr interpretation then happens once, at trace time).
    Concrete invalid arguments raise ``ValueError``; an example that is invalid as data or
    under ``jit`` (non-finite ``x``, ``x`` outside ``domain``, a negative or NaN ``eps``, a
    target out of range) gets NaN bounds, gradient and logit bounds (module docstring).
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    x = non_empty("x", floating_array("x", x, min_rank=2))
    if domain is not None:
        domain = ordered_pair("domain", domain)
    if (params is None) != (params_box is None):
        raise ValueError("params and params_box must be given together (fn(params, x))")
    if eps is None and params_box is None:
        raise ValueError("give eps (an input box) and/or params_box (a parameter box)")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "symbolic" and params_box is not None:
        raise ValueError("method='symbolic' bounds input boxes only; for a params_box use "
                         "method='ibp'")

    def apply(p, xs):
        return fn(xs) if params is None else fn(p, xs)

    n_classes = jax.eval_shape(apply, params, x).shape[-1]
    target = labels_for("target", target, n_classes, x.shape[0])
    score = _score_fn(loss)

    def logits_and_gradient(p, xs):
        # one forward pass serves both outputs (interpreted once, not once per output)
        logits, pullback = jax.vjp(lambda z: apply(p, z), xs)
        (grad,) = pullback(jax.grad(lambda lg: jnp.sum(score(lg, target)))(logits))
        return logits, grad

    valid, box = _valid_boxes(x, target, n_classes, _input_box(x, eps, domain), params_box)
    _, gradient = logits_and_gradient(params, x)
    outs = interval(logits_and_gradient, method)(params_box, box)
    logits, bounded = (as_interval(v) for v in outs)
    lower, upper, gradient, logits_lo, logits_hi = nan_unless(
        valid, (bounded.lower, bounded.upper, gradient, logits.lower, logits.upper))
    return GradientBounds(lower, upper, gradient, Interval(logits_lo, logits_hi))


def _count_at_least(sorted_values, thresholds, *, strict: bool):
    """Per row: how many of ``sorted_values`` are ``> thresholds`` (strict) or ``>=``."""
    side = "right" if strict else "left"
    idx = jax.vmap(lambda s, t: jnp.searchsorted(s, t, side=side))(sorted_values, thresholds)
    return sorted_values.shape[1] - idx


def _topk_certified(imp_lo, imp_hi, importance, k: int):
    """Number of current top-k features that certainly stay in the top k (see module doc)."""
    top = jax.lax.top_k(importance, k)[1]
    lo_top = jnp.take_along_axis(imp_lo, top, axis=1)
    reach = _count_at_least(jnp.sort(imp_hi, axis=1), lo_top, strict=False) - 1  # minus itself
    return jnp.sum(reach < k, axis=1)


def certify_explanation(bounds: GradientBounds, target=None, *, k: int = 20,
                        explanation: str = "saliency", sensitive=None) -> dict[str, jax.Array]:
    """Per-example explanation certificates from :func:`gradient_bounds` (see module doc).

    Args:
      bounds: the gradient bounds; ``target`` (``int[B]``): for ``prediction_certified``.
      k: size of the top-k set (features = all entries of one example's gradient).
      explanation: ``"saliency"`` (``|gradient|``) or ``"gradient"`` (signed) for the
        ``change_*`` bounds; top-k always ranks by ``|gradient|``.
      sensitive: optional boolean mask shaped like one example (or like the batch) of
        features that must not enter the top k.

    Returns a dict of arrays: ``change_l1``, ``change_l2``, ``change_linf``,
    ``relative_change_l2`` (over ``||e||_2``), ``topk_certified`` (int), ``topk_stable``,
    ``sign_stable_fraction`` (float[B]), ``sign_stable`` (bool, shaped like the gradient),
    and, when given, ``sensitive_excluded`` and ``prediction_certified``.  An example with a
    NaN bound or gradient is certified nowhere: NaN floats, False booleans,
    ``topk_certified = -1``.
    """
    if not isinstance(bounds, GradientBounds):
        raise TypeError(f"bounds must be the GradientBounds of gradient_bounds, got "
                        f"{type(bounds).__name__}")
    lower, upper, gradient = bounds.lower, bounds.upper, bounds.gradient
    batch = non_empty("bounds.gradient", gradient).shape[0]
    n_features = int(np.prod(gradient.shape[1:]))
    k = positive_int("k", k)
    if k > n_features:
        raise ValueError(f"k must be <= the number of features {n_features}, got {k}")
    if explanation not in ("saliency", "gradient"):
        raise ValueError(f"explanation must be 'saliency' or 'gradient', got {explanation!r}")
    flat = lambda a: a.reshape(batch, -1)
    g_lo, g_hi, g = flat(lower), flat(upper), flat(gradient)
    imp_lo, imp_hi = abs_bounds(Interval(g_lo, g_hi))
    imp = jnp.abs(g)
    if explanation == "saliency":
        dev = jnp.maximum(imp_hi - imp, imp - imp_lo)
        e_norm = jnp.linalg.norm(imp, axis=1)
    else:
        dev = jnp.maximum(g_hi - g, g - g_lo)
        e_norm = jnp.linalg.norm(g, axis=1)
    dev = jnp.maximum(dev, 0.0)
    valid = ~jnp.any(jnp.isnan(g_lo) | jnp.isnan(g_hi) | jnp.isnan(g), axis=1)
    change_l2 = jnp.linalg.norm(dev, axis=1)
    certified_top = _topk_certified(imp_lo, imp_hi, imp, k)
    sign_stable = (g_lo > 0) | (g_hi < 0)
    out = dict(
        change_l1=jnp.sum(dev, axis=1),
        change_l2=change_l2,
        change_linf=jnp.max(dev, axis=1),
        relative_change_l2=change_l2 / jnp.maximum(e_norm, jnp.finfo(g.dtype).tiny),
        topk_certified=certified_top,
        topk_stable=certified_top == k,
        sign_stable=sign_stable.reshape(gradient.shape),
        sign_stable_fraction=jnp.mean(sign_stable, axis=1),
    )
    if sensitive is not None:
        out["sensitive_excluded"] = _sensitive_excluded(imp_lo, imp_hi, sensitive, gradient, k)
    if target is not None:
        out["prediction_certified"] = prediction_certified(bounds.logits, target)
    return nan_unless(valid, out)


def _sensitive_excluded(imp_lo, imp_hi, sensitive, gradient, k):
    mask = jnp.asarray(sensitive)
    if mask.dtype != jnp.bool_:
        raise TypeError(f"sensitive must be a boolean mask, got dtype {mask.dtype}")
    if mask.shape == gradient.shape[1:]:
        mask = jnp.broadcast_to(mask, gradient.shape)
    if mask.shape != gradient.shape:
        raise ValueError(f"sensitive must have shape {gradient.shape[1:]} or {gradient.shape}, "
                         f"got {mask.shape}")
    mask = mask.reshape(imp_lo.shape)
    above = _count_at_least(jnp.sort(imp_lo, axis=1), imp_hi, strict=True)
    return jnp.all(~mask | (above >= k), axis=1)


def prediction_certified(logits: Interval, target) -> jax.Array:
    """``logit_lo[target] > max_{j != target} logit_hi[j]`` (forward IBP certificate).

    False for an example with a NaN logit bound or (under ``jit``) a target out of range."""
    if not is_interval(logits) or logits.ndim != 2:
        raise TypeError(f"logits must be an Interval of shape [B, C], got {logits!r}")
    batch, n_classes = non_empty("logits", logits).shape
    target = labels_for("target", target, n_classes, batch)
    own, rival = class_logit(logits.lower, target), best_other(logits.upper, target)
    finite = ~jnp.any(jnp.isnan(logits.lower) | jnp.isnan(logits.upper), axis=1)
    return (own > rival) & finite & in_range(target, n_classes)
