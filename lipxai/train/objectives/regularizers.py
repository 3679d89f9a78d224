"""Gradient regularisers: terms that penalise the input gradient of the model, its curvature, its
change over a small box, or the norm of the margin's gradient.

Each factory checks its hyperparameters (a ValueError naming the bad one) and returns a
:class:`~lipxai.train.objectives.base.Term`.  The input gradients are per-example: they come
from one backward pass of the summed per-example values, which is the gradient of each
example's own value when the examples of a batch do not interact (no batch statistics in the
forward pass).  The penalties are differentiated with respect to the parameters by the train
step, so each costs one more backward pass through a backward pass (double backpropagation).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from lipxai import losses
from lipxai.train.objectives.base import Context, Term, choice, count, nonnegative, positive

#: What a gradient is taken of: the true-class logit ``f_y`` or the per-example cross-entropy.
OF = ("logit", "loss")


def _squared_norms(g):
    """``||g_b||^2`` per example of a batch ``[B, ...]``."""
    return jnp.sum(g * g, axis=tuple(range(1, g.ndim)))


def _summed(ctx: Context, of: str):
    """``x -> sum_b s_b(x_b)``, ``s`` the true-class logit or the per-example cross-entropy of the
    model at the context's variables: its gradient holds every example's input gradient."""

    def summed(x):
        logits = ctx.model(x)
        if of == "loss":
            return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, ctx.y))
        return jnp.sum(jnp.take_along_axis(logits, ctx.y[:, None], axis=1))

    return summed


def input_gradient_l2(lam) -> Term:
    r"""Double backpropagation (Ross & Doshi-Velez, "Improving the adversarial robustness and
    interpretability of deep neural networks by regularizing their input gradients", AAAI 2018):

    ``lam * mean_b ||grad_x CE(f(x_b), y_b)||^2``,

    the squared L2 norm of each example's own cross-entropy gradient (not of the batch mean,
    which would scale it by ``1 / B^2``).  Small loss gradients make the prediction locally flat
    and the saliency maps less noisy.  aux: ``grad_sq``, the unweighted mean squared norm.
    """
    lam = nonnegative("lam", lam)

    def fn(ctx: Context):
        grads = jax.grad(_summed(ctx, "loss"))(ctx.x)
        penalty = jnp.mean(_squared_norms(grads))
        return lam * penalty, {"grad_sq": penalty}

    return Term("input_gradient_l2", fn)


def hessian_norm(lam, samples=1, of="logit") -> Term:
    r"""Curvature penalty, the Hessian baseline of Wicker et al. ("Robust explanation constraints
    for neural networks", ICLR 2023):

    ``lam * mean_{b, v} ||grad_x (v^T grad_x s(x_b))||^2 = lam * mean_{b, v} ||H_b v||^2``,

    ``v ~ N(0, I)`` (``samples`` draws per example): ``E ||H v||^2 = ||H||_F^2``, so this is an
    unbiased estimate of the squared Frobenius norm of the input Hessian ``H_b`` of ``s``: the
    true-class logit ``f_y`` (``of="logit"``) or the per-example cross-entropy
    (``of="loss"``).  A flat gradient field makes the saliency map stable under small input
    changes.  The Hessian-vector product is taken forward over reverse (``jax.jvp`` of
    ``jax.grad``), equal to the gradient of ``v^T grad`` since ``H`` is symmetric.

    A piecewise-linear network (ReLU, GroupSort, max-pooling) has a zero logit Hessian almost
    everywhere, so ``of="logit"`` penalises nothing there; the cross-entropy's Hessian is not
    zero (the softmax curves), which is why the configs of such models use ``of="loss"``.
    Needs a key (the draws of ``v``).  aux: ``hvp_sq``, the unweighted mean ``||H v||^2``.
    """
    lam = nonnegative("lam", lam)
    samples = count("samples", samples)
    of = choice("of", of, OF)

    def fn(ctx: Context):
        grad = jax.grad(_summed(ctx, of))
        directions = jax.random.normal(ctx.key, (samples, *ctx.x.shape), ctx.x.dtype)

        def hvp(v):
            return _squared_norms(jax.jvp(grad, (ctx.x,), (v,))[1])

        penalty = jnp.mean(jax.vmap(hvp)(directions))
        return lam * penalty, {"hvp_sq": penalty}

    return Term("hessian_norm", fn, needs_key=True)


def gradient_smoothness(lam, eps) -> Term:
    r"""Gradient-difference penalty, the "L2" baseline of Wicker et al. 2023 (ICLR):

    ``lam * mean_b ||grad_x f_y(x_b) - grad_x f_y(x_b + delta_b)||^2``,

    ``delta_b`` uniform in the L_inf box of radius ``eps`` and ``x + delta`` clipped to the
    context's domain: a sampled version of what ``certified_explanation`` bounds over the whole
    box.  Needs a key (the draws of ``delta``).  aux: ``grad_diff_sq``, the unweighted mean.
    """
    lam = nonnegative("lam", lam)
    eps = nonnegative("eps", eps)

    def fn(ctx: Context):
        grad = jax.grad(_summed(ctx, "logit"))
        delta = jax.random.uniform(ctx.key, ctx.x.shape, ctx.x.dtype, -eps, eps)
        penalty = jnp.mean(_squared_norms(grad(ctx.x) - grad(ctx.clip(ctx.x + delta))))
        return lam * penalty, {"grad_diff_sq": penalty}

    return Term("gradient_smoothness", fn, needs_key=True)


def margin_eikonal(weight, target=1.0) -> Term:
    r"""The eikonal penalty on the margin of the predicted class,
    ``weight * lipxai.losses.margin_eikonal(f, x, argmax f(x), target=target)``
    (``mean_b (||grad_x m_b|| - target)^2``; Serrurier et al., NeurIPS 2023, "On the explainable
    properties of 1-Lipschitz neural networks: an optimal transport perspective"; Gulrajani et
    al. 2017 for the penalty).  The predicted classes carry no gradient.  It holds the margin's
    gradient at norm ``target``, so that the one-step transport counterfactual lands near the
    boundary; the quickstart adds it for its last steps.  aux: ``penalty``, unweighted.
    """
    weight = nonnegative("weight", weight)
    target = positive("target", target)

    def fn(ctx: Context):
        predicted = jax.lax.stop_gradient(jnp.argmax(ctx.logits, -1))
        penalty = losses.margin_eikonal(ctx.model, ctx.x, predicted, target=target)
        return weight * penalty, {"penalty": penalty}

    return Term("margin_eikonal", fn)
