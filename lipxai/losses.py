"""Optimal-transport and margin losses for 1-Lipschitz classifiers.

Every loss is a pure function ``(logits, labels, *, hyperparameters) -> scalar``: the
mean over the batch, computed in float32 (float64 logits stay float64).  Shapes, dtypes
and hyperparameters are validated eagerly (an empty batch is an error); label values are
checked only when they are concrete, so the functions can be called inside ``jax.jit``,
where a label out of range makes the loss NaN rather than a plausible number (as do NaN
logits).  Hyperparameters must be
Python numbers; the computation itself is jitted with them as traced arguments, so an
eager call compiles once per input shape and changing a hyperparameter does not recompile.

The one regulariser, :func:`margin_eikonal`, takes the model function and its inputs
instead of logits, since it penalises input gradients.

Binary losses take ``logits`` of shape ``[B]`` or ``[B, 1]`` (one score, positive means
class 1) and ``labels`` in {0, 1}; multiclass losses take ``logits`` of shape ``[B, C]``
with ``C >= 2`` and ``labels`` in ``[0, C)``.  Labels are integers, never one-hot.

Conventions follow deel-torchlip (``deel.torchlip.functional`` and
``deel.torchlip.modules.loss``; values checked against deel-torchlip 1.0.5):

* ``min_margin`` is the full margin between the classes, so a score only has to reach
  ``min_margin / 2`` on the correct side;
* ``alpha`` weighs a convex combination ``alpha * hinge + (1 - alpha) * kr``.  Older
  deel-lip releases used ``kr + lam * hinge`` with ``lam`` in [0, inf); that is
  ``(1 + lam)`` times the loss here with ``alpha = lam / (1 + lam)``, the mapping
  torchlip itself applies to such values.

References:
    [HKR] M. Serrurier, F. Mamalet, A. González-Sanz, T. Boissin, J.-M. Loubes,
    E. del Barrio. "Achieving robustness in classification using optimal transport with
    hinge regularization", CVPR 2021.
    [OTNN] M. Serrurier, F. Mamalet, T. Fel, L. Béthune, T. Boissin. "On the
    explainable properties of 1-Lipschitz neural networks: an optimal transport
    perspective", NeurIPS 2023.
    [TAU] L. Béthune, T. Boissin, M. Serrurier, F. Mamalet, C. Friedrich, A. González-Sanz.
    "Pay attention to your loss: understanding misconceptions about 1-Lipschitz neural
    networks", NeurIPS 2022.
    [GP] I. Gulrajani, F. Ahmed, M. Arjovsky, V. Dumoulin, A. Courville. "Improved training
    of Wasserstein GANs", NeurIPS 2017.
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp

from lipxai._core import checks
from lipxai._core.margins import runner_up

__all__ = [
    "hinge_margin",
    "hkr",
    "kr",
    "margin_eikonal",
    "multiclass_hinge",
    "multiclass_hkr",
    "multiclass_kr",
    "soft_hkr",
    "tau_cross_entropy",
]


def kr(logits, labels):
    """Negated Kantorovich-Rubinstein estimate of the Wasserstein-1 distance [HKR].

    ``kr = -(mean_{y=1} f(x) - mean_{y=0} f(x))``, to be minimised: for a 1-Lipschitz
    ``f`` its minimum is ``-W1(P_1, P_0)``.  Same value as deel-torchlip's
    ``neg_kr_loss`` / ``NegKRLoss`` (and ``-KR`` in deel-lip) averaged over the batch.

    If one class is absent from the batch, its mean is taken as 0 (as torchlip's
    ``nan_to_num`` and deel-lip's epsilon do), so the result is ``mean f`` over the
    batch when it holds only class 0 and ``-mean f`` when it holds only class 1.
    """
    return _kr(*_binary_inputs(logits, labels))


def hinge_margin(logits, labels, *, min_margin=1.0):
    """Binary hinge loss with deel-lip's centred margin [HKR].

    ``mean relu(min_margin / 2 - y f(x))`` with ``y = +1`` for class 1 and ``-1`` for
    class 0, as deel-lip ``HingeMargin`` and torchlip ``hinge_margin_loss``: both sides
    must clear ``min_margin / 2``, so the two classes are ``min_margin`` apart.
    """
    checks.positive("min_margin", min_margin)
    return _hinge_margin(*_binary_inputs(logits, labels), min_margin)


def hkr(logits, labels, *, alpha=0.9, min_margin=1.0):
    """Hinge-regularised KR loss [HKR]: ``alpha * hinge_margin + (1 - alpha) * kr``.

    Follows deel-torchlip ``hkr_loss`` / ``HKRLoss``: ``alpha`` in [0, 1], 0 giving
    :func:`kr` and 1 giving :func:`hinge_margin`.  A legacy deel-lip weight ``lam``
    (loss ``kr + lam * hinge``) corresponds to ``alpha = lam / (1 + lam)``.
    """
    _check_alpha(alpha)
    checks.positive("min_margin", min_margin)
    return _hkr(*_binary_inputs(logits, labels), alpha, min_margin)


def multiclass_kr(logits, labels):
    """One-vs-all KR loss averaged over classes [HKR].

    ``-(1/C) sum_c (mean_{y=c} f_c(x) - mean_{y!=c} f_c(x))``: the negated value of
    deel-lip ``MulticlassKR`` / torchlip ``KRMulticlassLoss`` (one-hot targets).  A class
    absent from the batch contributes ``mean_{y!=c} f_c`` (its own mean taken as 0).
    """
    return _multiclass_kr(*_multiclass_inputs(logits, labels))


def multiclass_hinge(logits, labels, *, min_margin=1.0):
    """One-vs-all hinge loss of deel-lip ``MulticlassHinge`` / torchlip ``HingeMulticlassLoss``.

    Per example, with ``y`` the true class and ``m = min_margin``::

        (1/C) [(C - 1) relu(m/2 - f_y) + sum_{c != y} relu(m/2 + f_c)]

    i.e. the binary hinge on every output with signs +1/-1, the true class weighted by
    ``C - 1`` to balance it against the ``C - 1`` others; averaged over the batch [HKR].
    """
    checks.positive("min_margin", min_margin)
    return _multiclass_hinge(*_multiclass_inputs(logits, labels), min_margin)


def multiclass_hkr(logits, labels, *, alpha=0.9, min_margin=1.0):
    """Multiclass HKR [HKR]: ``alpha * multiclass_hinge + (1 - alpha) * multiclass_kr``.

    Follows deel-torchlip ``hkr_multiclass_loss`` / ``HKRMulticlassLoss`` with ``alpha``
    in [0, 1]; deel-lip ``MulticlassHKR(alpha=lam)`` (``kr + lam * hinge``) is ``(1 + lam)``
    times this loss at ``alpha = lam / (1 + lam)`` (its default ``lam = 10`` is about 0.91).
    """
    _check_alpha(alpha)
    checks.positive("min_margin", min_margin)
    return _multiclass_hkr(*_multiclass_inputs(logits, labels), alpha, min_margin)


def soft_hkr(logits, labels, *, alpha=0.9, min_margin=1.0, temperature=1.0):
    """Softmax-weighted multiclass HKR of [OTNN] (deel-lip ``MulticlassSoftHKR``).

    With ``s_c = +f_c`` for the true class ``y`` and ``-f_c`` otherwise, per example::

        sum_c w_c [(1 - alpha) (-s_c) + alpha relu(min_margin/2 - s_c)]

    where ``w_y = 1`` and ``w_c`` for ``c != y`` is the softmax of ``t * f_c`` over the
    other classes, so the wrong classes closest to winning dominate; averaged over the
    batch.  ``alpha`` in [0, 1] as in deel-torchlip ``SoftHKRMulticlassLoss``.

    The inverse temperature ``t`` is treated as a constant (no gradient flows through it)::

        t = clip(temperature * min_margin / clip(mean |f|, min_margin, 2e4), 0.005, 250)

    deel-lip and torchlip keep ``mean |f|`` as a running average across calls,
    ``m <- 0.99 m + 0.01 mean|f|`` (``alpha_mean``), starting from ``min_margin``, so the
    softmax sharpness adapts to the logit scale reached during training.  This function
    holds no state and uses the current batch's ``mean |f|`` over all examples and
    classes, i.e. their loss with ``alpha_mean = 0``; while ``mean |f| <= min_margin``
    (early training) both give ``t = temperature``.
    """
    _check_alpha(alpha)
    checks.positive("min_margin", min_margin)
    checks.positive("temperature", temperature)
    return _soft_hkr(*_multiclass_inputs(logits, labels), alpha, min_margin, temperature)


def tau_cross_entropy(logits, labels, *, tau):
    """Cross-entropy at temperature ``tau`` [TAU] (deel-lip ``TauCategoricalCrossentropy``).

    ``mean CE(tau * f(x), y) / tau`` with ``CE(z, y) = logsumexp(z) - z_y``, as deel-lip and
    torchlip ``TauCrossEntropyLoss``.  Since ``max_c f_c <= logsumexp(tau f) / tau <=
    max_c f_c + log(C) / tau``, the loss lies within ``log(C) / tau`` above
    ``mean relu(max_{c != y} f_c - f_y)`` and tends to it as ``tau`` grows.  For a
    1-Lipschitz ``f``, ``tau`` sets the accuracy/robustness trade-off [TAU]: large
    ``tau`` favours accuracy, small ``tau`` keeps pushing margins wider.
    """
    checks.positive("tau", tau)
    return _tau_cross_entropy(*_multiclass_inputs(logits, labels), tau)


def margin_eikonal(fn, x, labels, *, target=1.0):
    r"""Eikonal penalty on the classification margin: ``mean_b (||grad_x m_b(x_b)|| - target)^2``.

    ``m(x) = f_y(x) - max_{j != y} f_j(x)`` for the class ``y = labels[b]`` (usually the
    prediction).  The optimal Kantorovich-Rubinstein potential has a unit-norm gradient and
    decreases linearly along straight transport rays [OTNN]; the same penalty on a critic's
    gradient norm is WGAN-GP's [GP].  Where ``||grad m||`` is the same along the ray,
    ``m / ||grad m||`` is the distance to the boundary along the ray, so the transport
    counterfactual ``x - t m grad m / ||grad m||^2`` (:func:`lipxai.explain.counterfactual`)
    crosses just after ``t = 1`` and lands at ``t`` times the boundary distance.

    Args:
      fn: batched model ``x [B, ...] -> logits [B, C]`` whose examples do not interact (the
        input gradients of all examples come from one backward pass of the summed margins).
      x: float inputs ``[B, ...]``.
      labels: ``int[B]`` in ``[0, C)``.
      target: the gradient norm to hold (positive).

    NaN when an input is not finite or (under ``jit``) a label is out of range.
    """
    checks.positive("target", target)
    x = checks.non_empty("x", checks.floating_array("x", x, min_rank=2))
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    out = jax.eval_shape(fn, jax.ShapeDtypeStruct(x.shape, x.dtype))
    if len(out.shape) != 2 or out.shape[0] != x.shape[0] or out.shape[1] < 2:
        raise ValueError(f"fn must map [B, ...] to logits [B, C >= 2], got {out.shape} for B = {x.shape[0]}")
    labels = checks.labels_for("labels", labels, out.shape[1], x.shape[0])

    def summed_margins(inputs):
        logits = fn(inputs)
        rows = jnp.arange(logits.shape[0])
        # the runner-up by index, not jnp.max: no float equality test in the second backward
        return jnp.sum(logits[rows, labels] - logits[rows, runner_up(logits, labels)])

    grads = jax.grad(summed_margins)(x)
    norms = jnp.sqrt(jnp.sum(grads * grads, axis=tuple(range(1, grads.ndim))) + 1e-12)
    valid = checks.finite_examples(x) & checks.in_range(labels, out.shape[1])
    return jnp.where(jnp.all(valid), jnp.mean((norms - target) ** 2), jnp.nan)


# Kernels: validated inputs in, scalar out.


def _nan_for_bad_labels(kernel):
    """``kernel(logits, labels, ...)``, NaN when a label lies outside ``[0, C)`` (``C = 2``
    for binary logits ``[B]``): labels are checked eagerly only when they are concrete."""

    @functools.wraps(kernel)
    def checked(logits, labels, *args):
        num_classes = 2 if logits.ndim == 1 else logits.shape[1]
        ok = jnp.all(checks.in_range(labels, num_classes))
        return jnp.where(ok, kernel(logits, labels, *args), jnp.nan)

    return checked


@jax.jit
@_nan_for_bad_labels
def _kr(logits, labels):
    return -_class_gap(logits, labels == 1)


@jax.jit
@_nan_for_bad_labels
def _hinge_margin(logits, labels, min_margin):
    return jnp.mean(_hinge_terms(logits, labels == 1, min_margin))


@jax.jit
@_nan_for_bad_labels
def _hkr(logits, labels, alpha, min_margin):
    return alpha * _hinge_margin(logits, labels, min_margin) + (1 - alpha) * _kr(logits, labels)


@jax.jit
@_nan_for_bad_labels
def _multiclass_kr(logits, labels):
    return -jnp.mean(_class_gap(logits, _one_hot(labels, logits.shape[1])))


@jax.jit
@_nan_for_bad_labels
def _multiclass_hinge(logits, labels, min_margin):
    is_true = _one_hot(labels, logits.shape[1])
    weights = jnp.where(is_true, logits.shape[1] - 1.0, 1.0)
    return jnp.mean(weights * _hinge_terms(logits, is_true, min_margin))


@jax.jit
@_nan_for_bad_labels
def _multiclass_hkr(logits, labels, alpha, min_margin):
    hinge = _multiclass_hinge(logits, labels, min_margin)
    return alpha * hinge + (1 - alpha) * _multiclass_kr(logits, labels)


@jax.jit
@_nan_for_bad_labels
def _soft_hkr(logits, labels, alpha, min_margin, temperature):
    is_true = _one_hot(labels, logits.shape[1])
    mean_abs = jnp.clip(jnp.mean(jnp.abs(logits)), min_margin, 2e4)
    t = jax.lax.stop_gradient(jnp.clip(temperature * min_margin / mean_abs, 0.005, 250.0))
    others = jax.nn.softmax(jnp.where(is_true, -jnp.inf, t * logits), axis=-1)
    weights = jnp.where(is_true, 1.0, others)
    signed = jnp.where(is_true, logits, -logits)
    terms = (1 - alpha) * -signed + alpha * jax.nn.relu(min_margin / 2 - signed)
    return jnp.mean(jnp.sum(weights * terms, axis=-1))


@jax.jit
@_nan_for_bad_labels
def _tau_cross_entropy(logits, labels, tau):
    log_probs = jax.nn.log_softmax(tau * logits, axis=-1)
    true_log_probs = jnp.take_along_axis(log_probs, labels[:, None], axis=-1)
    return -jnp.mean(true_log_probs) / tau


def _class_gap(logits, is_pos):
    """``mean f`` over positives minus over negatives along axis 0; an empty side counts 0."""
    pos = is_pos.astype(logits.dtype)
    n_pos = jnp.sum(pos, axis=0)
    n_neg = logits.shape[0] - n_pos
    mean_pos = jnp.sum(logits * pos, axis=0) / jnp.maximum(n_pos, 1)
    mean_neg = jnp.sum(logits * (1 - pos), axis=0) / jnp.maximum(n_neg, 1)
    return mean_pos - mean_neg


def _hinge_terms(logits, is_pos, min_margin):
    """Element-wise ``relu(min_margin / 2 - y f)`` with ``y = +1`` where ``is_pos``, else -1."""
    return jax.nn.relu(min_margin / 2 - jnp.where(is_pos, logits, -logits))


def _one_hot(labels, num_classes):
    return labels[:, None] == jnp.arange(num_classes)


def _check_alpha(alpha):
    checks.non_negative("alpha", alpha)
    if not isinstance(alpha, numbers.Real) or isinstance(alpha, bool) or not 0 <= alpha <= 1:
        raise ValueError(
            "alpha must be a number in [0, 1] (deel-torchlip convention; a deel-lip weight "
            f"lam maps to lam / (1 + lam)), got {alpha!r}"
        )


def _binary_inputs(logits, labels):
    logits = checks.floating_array("logits", logits, min_rank=1)
    if logits.ndim == 2 and logits.shape[1] == 1:
        logits = logits[:, 0]
    elif logits.ndim != 1:
        raise ValueError(f"logits must have shape [B] or [B, 1], got shape {logits.shape}")
    return _batch(logits, labels, 2)


def _multiclass_inputs(logits, labels):
    logits = checks.floating_array("logits", logits, rank=2)
    if logits.shape[1] < 2:
        raise ValueError(
            f"logits must have shape [B, C] with C >= 2 classes, got shape {logits.shape}"
        )
    return _batch(logits, labels, logits.shape[1])


def _batch(logits, labels, num_classes):
    checks.non_empty("logits", logits)
    labels = checks.labels_for("labels", labels, num_classes, logits.shape[0])
    return logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), labels
