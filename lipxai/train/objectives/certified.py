"""The certified-explanation term: the width of sound interval bounds on the input gradient.

Wicker, Heo, Costabello & Weller, "Robust Explanation Constraints for Neural Networks"
(ICLR 2023).  Over the input box ``B(x) = [x - e, x + e] ∩ domain`` and, optionally, the
relative parameter box ``P(W) = [W - g|W|, W + g|W|]``, interval arithmetic through the forward
*and* the backward pass gives per-feature bounds

    L(x) <= grad_x s(x', W') <= U(x)    for every x' in B(x), W' in P(W),

where ``s`` is the per-example softmax cross-entropy of the true class (``target="loss"``) or
the true-class logit (``target="logit"``).  Training penalises the width ``U - L``: where it is
small, no perturbation inside the boxes can move the explanation much, and the trained model's
explanations can then be certified (``lipxai.bounds.certify_explanation``).  The optional κ
term is the IBP training loss of Gowal et al. (2018): the cross-entropy of the worst-case
logits (the lower bound of the true class, the upper bounds of the others) over the same boxes.

Soundness.  The authors' released code propagates hand-written bounds whose backward pass
skips the ReLU mask of the first hidden layer and seeds it with ``p_y - 1`` on the true class
and zero elsewhere, dropping the ``p_j`` terms of the other classes of the softmax derivative
``p - onehot(y)``; its intervals need not contain the gradient they claim to bound.  Here the
bounds come from ``lipxai.bounds``, which interprets the program ``jax.grad`` actually runs
(every ReLU mask, the full softmax backward ``softmax(z) - onehot(y)``, bounded as one
softmax call so that numerator and denominator move together): the true gradient at every
point of the boxes lies inside ``[L, U]``, and at ``e = g = 0`` the bounds are ``jax.grad``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from lipxai.bounds import METHODS, GradientBounds, gradient_bounds, params_box
from lipxai.train.objectives.base import Context, Term, choice, fraction, nonnegative, ramp

#: ``target=`` of :func:`certified_explanation`: the score whose input gradient is bounded.
TARGETS = ("loss", "logit")

_SCORES = {"loss": "cross_entropy", "logit": "logit"}


def explanation_bounds(ctx: Context, eps=None, gamma=None, *, target: str = "loss",
                       method: str = "ibp") -> GradientBounds:
    """Interval bounds on the per-example input gradient of the target's score over the boxes.

    ``eps``: the L_inf radius of the input box (clipped to ``ctx.domain``), None for fixed
    inputs; ``gamma``: the relative radius of the box ``W ± gamma|W|`` on every floating leaf
    of ``ctx.variables["params"]`` (other collections stay fixed), None for fixed weights; at
    least one is given, either may be traced.  One interval interpretation of ``x -> (logits,
    grad_x score)`` gives both the gradient bounds and the forward logit bounds (``.logits``)
    that the κ term uses.
    """
    params = ctx.variables["params"]

    def apply(p, xs):
        return ctx.apply({**ctx.variables, "params": p}, xs)

    score = _SCORES[target]
    if gamma is not None:
        return gradient_bounds(apply, ctx.x, ctx.y, eps=eps, params=params,
                               params_box=params_box(params, relative=gamma),
                               loss=score, domain=ctx.domain, method=method)
    return gradient_bounds(lambda xs: apply(params, xs), ctx.x, ctx.y, eps=eps, loss=score,
                           domain=ctx.domain, method=method)


def worst_case_logits(logits, y):
    """The logits an adversary in the boxes can reach at worst: the lower bound of the true
    class and the upper bounds of the others (an :class:`~lipxai.bounds.Interval` in)."""
    own = jax.nn.one_hot(y, logits.shape[-1], dtype=jnp.bool_)
    return jnp.where(own, logits.lower, logits.upper)


def certified_explanation(alpha, eps, *, gamma=0.0, kappa=0.0, ramp_fraction=0.0,
                          target: str = "loss", method: str = "ibp") -> Term:
    """The term ``α · mean(U - L) + κ · CE(worst-case logits)`` (Wicker et al., ICLR 2023).

    Args:
      alpha: weight α >= 0 of the mean width, over the batch and every input feature, of the
        gradient bounds ``[L, U]`` (the reference code sums over the batch instead of
        averaging: its α is this one divided by the batch size).
      eps: L_inf radius ε >= 0 of the input box around each example, clipped to
        ``ctx.domain``.
      gamma: relative radius γ >= 0 of the parameter box ``W ± γ|W|`` on every floating leaf
        of ``variables["params"]`` (0: the weights are fixed).
      kappa: weight κ >= 0 of the softmax cross-entropy of the worst-case IBP logits over the
        same boxes (Gowal et al. 2018), computed from the same interval pass.
      ramp_fraction: ε and γ grow linearly from 0 to their values over this fraction of
        training (``progress`` in the context), then stay; 0: no ramp.
      target: ``"loss"``: the input gradient of each example's softmax cross-entropy of its
        true class, whatever the objective's task loss (a 1-Lipschitz model trained with HKR
        can take ``"logit"``); ``"logit"``: the input gradient of the true-class logit.
      method: ``"ibp"`` (interval bound propagation) or ``"symbolic"`` (tighter forward
        bounds from linear bounds in the input, ``lipxai.bounds.interval``; input boxes only,
        so ``gamma`` must be 0; memory grows with input features x neurons per example).

    Returns the :class:`Term` ``"certified_explanation"``; its aux holds the unweighted
    ``width`` (the mean of ``U - L``), the ramped ``eps`` and ``gamma``, and, when κ > 0,
    ``worst_case_ce``.  Examples must not interact in the model (no batch statistics in
    training mode), and inputs outside ``ctx.domain`` have empty boxes whose bounds are NaN
    (``lipxai.bounds.gradient_bounds``).  See the module docstring for soundness.
    """
    alpha = nonnegative("alpha", alpha)
    eps = nonnegative("eps", eps)
    gamma = nonnegative("gamma", gamma)
    kappa = nonnegative("kappa", kappa)
    ramp_fraction = fraction("ramp_fraction", ramp_fraction)
    target = choice("target", target, TARGETS)
    method = choice("method", method, METHODS)
    if method == "symbolic" and gamma > 0:
        raise ValueError("gamma must be 0 with method='symbolic' (symbolic bounds take input "
                         f"boxes only; use method='ibp' for a parameter box), got {gamma!r}")
    # a zero radius needs no box; with both zero the input box is kept (of zero width) so that
    # the term still bounds a gradient (then equal to jax.grad) and its logits
    input_box = eps > 0 or gamma == 0

    def fn(ctx: Context):
        factor = ramp(ctx.progress, ramp_fraction)
        eps_now, gamma_now = eps * factor, gamma * factor
        bounds = explanation_bounds(ctx, eps_now if input_box else None,
                                    gamma_now if gamma > 0 else None, target=target,
                                    method=method)
        width = jnp.mean(bounds.upper - bounds.lower)
        value = alpha * width
        aux = {"width": width, "eps": eps_now, "gamma": gamma_now}
        if kappa > 0:
            worst = optax.softmax_cross_entropy_with_integer_labels(
                worst_case_logits(bounds.logits, ctx.y), ctx.y).mean()
            value = value + kappa * worst
            aux["worst_case_ce"] = worst
        return value.astype(jnp.float32), aux

    return Term("certified_explanation", fn, needs_key=False)
