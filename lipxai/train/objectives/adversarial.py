r"""Adversarial and saliency-masking training terms: PGD adversarial training (Madry et al.
2018), TRADES (Zhang et al. 2019), SCAAT (Xu et al. 2023) and saliency guided training
(Ismail et al. 2021), with the PGD attack they share.

Every term is a factory: it checks its hyperparameters at once (a ``ValueError`` naming the
argument) and returns a :class:`~lipxai.train.objectives.base.Term` whose ``fn(ctx)`` gives
``(weighted float32 scalar, aux dict of unweighted scalars)``.

No gradient flows through an attack or a mask: :func:`pgd` runs the model on
:func:`jax.lax.stop_gradient` of the variables and returns a stopped adversarial example, and
saliencies and masks are computed from stopped variables too.  The parameters' gradient of a
term is therefore the gradient at a *fixed* perturbed input (Danskin's theorem for the inner
maximisation, as every paper here trains).  Everything is jit-able: the attack is a
``lax.fori_loop``, masks are ranks, no Python loop runs over traced values.

Per-example attacks assume that the model treats examples independently (no batch
statistics): the attack ascends the gradient of the *sum* over the batch of its objective,
whose block for example ``b`` is that example's own gradient.
"""

from __future__ import annotations

import functools
import math
import numbers

import jax
import jax.numpy as jnp
from jax import lax

from lipxai._core.xla_cpu import for_gradient_loops
from lipxai.explain.gradients import saliency
from lipxai.metrics.complexity import sparseness
from lipxai.train.objectives.base import (
    Context,
    Term,
    choice,
    count,
    cross_entropy,
    fraction,
    nonnegative,
    positive,
)

__all__ = ["NORMS", "ball_sample", "kl_divergence", "lowest_features", "pgd", "pgd_adversarial",
           "saliency_guided", "saliency_masking", "scaat", "scaat_example", "trades",
           "trades_example"]

#: The perturbation norms of :func:`pgd`.
NORMS = ("linf", "l2")

#: The start noise of TRADES' attack (its reference code draws ``0.001 * N(0, 1)``); SCAAT's
#: attack starts the same way, since the KL divergence it ascends has a zero gradient at x.
START_NOISE = 1e-3

_TINY = 1e-12


def _per_example(v, x):
    """``v`` (scalar or ``[B]``) as ``[B, 1, ..., 1]``, broadcastable against ``x [B, ...]``."""
    v = jnp.broadcast_to(jnp.asarray(v, x.dtype), x.shape[:1])
    return v.reshape((-1,) + (1,) * (x.ndim - 1))


def _l2(d):
    """Each example's L2 norm, ``[B, 1, ..., 1]``."""
    return jnp.sqrt(jnp.sum(d * d, axis=tuple(range(1, d.ndim)), keepdims=True))


def _project(delta, eps, norm):
    """``delta`` projected onto the ``norm`` ball of radius ``eps`` (``[B, 1, ..., 1]``)."""
    if norm == "linf":
        return jnp.clip(delta, -eps, eps)
    return delta * jnp.minimum(1.0, eps / jnp.maximum(_l2(delta), _TINY))


def _ascent(g, norm):
    """The steepest-ascent direction of unit ``norm`` for gradient ``g``: ``sign(g)`` (L∞) or
    ``g / ||g||_2`` (L2; 0 where the gradient is 0)."""
    if norm == "linf":
        return jnp.sign(g)
    return g / jnp.maximum(_l2(g), _TINY)


def _frozen(ctx: Context):
    """The model with its variables stopped: what attacks and saliencies run on."""
    return functools.partial(ctx.apply, lax.stop_gradient(ctx.variables))


def _require_key(ctx: Context, name: str):
    if ctx.key is None:
        raise ValueError(f"key: the term {name!r} samples and needs a PRNG key, got None")
    return ctx.key


def kl_divergence(p_logits, q_logits):
    r"""``KL(softmax p || softmax q)`` per example, ``[B]``:
    :math:`\sum_c p_c (\log p_c - \log q_c)`, from logits (log-softmax, so stable)."""
    log_p = jax.nn.log_softmax(p_logits, axis=-1)
    return jnp.sum(jnp.exp(log_p) * (log_p - jax.nn.log_softmax(q_logits, axis=-1)), axis=-1)


def ball_sample(key, x, eps, norm="linf"):
    r"""A perturbation drawn uniformly in each example's ``norm`` ball of radius ``eps``
    (scalar or ``[B]``), shaped like ``x``: PGD's random start (Madry et al. 2018).

    L∞: each feature uniform in ``[-eps, eps]``.  L2: a Gaussian direction scaled to radius
    :math:`\epsilon\, u^{1/d}`, ``u`` uniform in [0, 1] and ``d`` the features of one example,
    which is uniform in the ball.
    """
    norm = choice("norm", norm, NORMS)
    eps = _per_example(eps, x)
    if norm == "linf":
        return eps * jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
    k_dir, k_rad = jax.random.split(key)
    g = jax.random.normal(k_dir, x.shape, x.dtype)
    d = math.prod(x.shape[1:])
    radius = jax.random.uniform(k_rad, eps.shape, x.dtype) ** (1.0 / d)
    return eps * radius * g / jnp.maximum(_l2(g), _TINY)


def pgd(model, x, objective, *, eps, steps, step_size=None, norm="linf", delta0=None,
        domain=None, mask=None):
    r"""Projected gradient ascent of a per-example objective of the logits (Madry et al.,
    "Towards deep learning models resistant to adversarial attacks", ICLR 2018).

    With :math:`\Pi` the projection onto the ``norm`` ball of radius :math:`\epsilon` around
    ``x``, intersected with the domain and restricted to the features of ``mask``,

    .. math:: x_0 = \Pi(x + \delta_0), \qquad
              x_{t+1} = \Pi\big(x_t + \alpha\, d(M \odot \nabla_x J(f(x_t)))\big),

    for ``steps`` steps, where :math:`d(g) = \mathrm{sign}(g)` (L∞) or :math:`g/\|g\|_2` (L2)
    is the steepest-ascent direction of unit norm.  :math:`\Pi` clips the perturbation to the
    ball (L∞: each feature to ``[-eps, eps]``; L2: rescales it onto the sphere when outside),
    then clips ``x + delta`` to ``domain`` (which only shrinks the perturbation feature by
    feature, so the point stays in the ball when ``x`` lies in the domain), then resets every
    feature outside ``mask`` to ``x``: those never change.

    Args:
      model: batched ``model(x) -> logits [B, C]``; pass it with stopped variables (the
        terms do) so that nothing of the attack is differentiated.
      x: inputs ``[B, ...]``.
      objective: ``objective(logits) -> float[B]`` (or a scalar sum or mean of per-example
        terms, e.g. a task loss); the attack ascends the gradient of its sum over the batch,
        which is each example's own gradient (up to a positive factor for a mean, which
        neither direction ``d`` sees) when examples do not interact.
      eps: the radius, a number or ``float[B]`` (one budget per example).
      steps: number of ascent steps ``k >= 1``.
      step_size: :math:`\alpha`, a number; ``None`` takes ``2.5 * eps / steps`` per example
        (Madry et al.'s rule, which lets the iterate cross the ball and back).
      norm: ``"linf"`` or ``"l2"``.
      delta0: the starting perturbation :math:`\delta_0` (shaped like ``x``; e.g.
        :func:`ball_sample` for a random start), ``None`` for ``x`` itself.
      domain: ``(low, high)`` bounds of valid inputs, or ``None``.
      mask: bool (or 0/1) array shaped like ``x``: the features that may change; ``None``
        for all.

    Returns:
      the adversarial examples, shaped like ``x``, under :func:`jax.lax.stop_gradient`.
    """
    norm = choice("norm", norm, NORMS)
    steps = count("steps", steps)
    if isinstance(eps, numbers.Real):
        nonnegative("eps", eps)
    if step_size is not None:
        step_size = positive("step_size", step_size)
    for name, value in (("delta0", delta0), ("mask", mask)):
        if value is not None and jnp.shape(value) != jnp.shape(x):
            raise ValueError(f"{name} must have the shape of x {tuple(jnp.shape(x))}, "
                             f"got {tuple(jnp.shape(value))}")
    x = lax.stop_gradient(x)
    eps = _per_example(eps, x)
    alpha = 2.5 * eps / steps if step_size is None else _per_example(step_size, x)
    keep = jnp.ones(x.shape, bool) if mask is None else jnp.asarray(mask).astype(bool)
    delta0 = jnp.zeros_like(x) if delta0 is None else jnp.asarray(delta0, x.dtype)

    def attack(x, delta0, eps, alpha, keep):
        def place(delta):
            z = x + _project(delta, eps, norm)
            if domain is not None:
                z = jnp.clip(z, *domain)
            return jnp.where(keep, z, x)

        grad = jax.grad(lambda z: jnp.sum(objective(model(z))))

        def step(_, xa):
            g = jnp.where(keep, grad(xa), 0.0)
            return place(xa - x + alpha * _ascent(g, norm))

        return lax.fori_loop(0, steps, step, place(delta0))

    x_adv = for_gradient_loops(attack)(x, lax.stop_gradient(delta0), eps, alpha, keep)
    return lax.stop_gradient(x_adv)


def lowest_features(s, n):
    """The ``n`` features of lowest ``s`` in each example (ties to the earlier position), as a
    bool mask shaped like ``s [B, ...]``; ``n`` is an int or ``int[B]`` (traced is fine: the
    mask compares ranks, it does not slice)."""
    flat = s.reshape(s.shape[0], -1)
    rank = jnp.argsort(jnp.argsort(flat, axis=1, stable=True), axis=1, stable=True)
    n = jnp.broadcast_to(jnp.asarray(n, jnp.int32), s.shape[:1])
    return (rank < n[:, None]).reshape(s.shape)


def _check_attack(eps, steps, step_size, norm):
    """The checked ``(eps, steps, step_size, norm)`` of a term's attack."""
    eps = nonnegative("eps", eps)
    steps = count("steps", steps)
    step_size = None if step_size is None else positive("step_size", step_size)
    return eps, steps, step_size, choice("norm", norm, NORMS)


def _check_flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------
# PGD adversarial training
# ---------------------------------------------------------------------------------------


def pgd_adversarial(weight=1.0, *, eps, steps, step_size=None, norm="linf",
                    random_start=True) -> Term:
    r"""PGD adversarial training (Madry et al., "Towards deep learning models resistant to
    adversarial attacks", ICLR 2018):

    .. math:: w \cdot \mathcal{L}(f(x_{adv}), y), \qquad
              x_{adv} \approx \arg\max_{\|x' - x\| \le \epsilon,\ x' \in D}
              \mathcal{L}(f(x'), y),

    with :math:`\mathcal{L}` the objective's own task loss and :math:`x_{adv}` found by
    :func:`pgd` (``steps`` steps from a uniform random start in the ball, or from ``x`` with
    ``random_start=False``), clipped to ``ctx.domain``.  Added to the task loss this is the
    mixed clean/adversarial loss; Madry's pure objective is the task weight 0 and this term's
    ``weight`` 1.

    Registry name ``"pgd_adversarial"``.  Needs a key when ``random_start``.  Aux:
    ``adv_loss`` (the task loss at :math:`x_{adv}`), ``adv_accuracy``.
    """
    weight = nonnegative("weight", weight)
    eps, steps, step_size, norm = _check_attack(eps, steps, step_size, norm)
    random_start = _check_flag("random_start", random_start)

    def fn(ctx: Context):
        delta0 = None
        if random_start:
            delta0 = ball_sample(_require_key(ctx, "pgd_adversarial"), ctx.x, eps, norm)
        y = ctx.y
        x_adv = pgd(_frozen(ctx), ctx.x, lambda logits: ctx.task_loss(logits, y), eps=eps,
                    steps=steps, step_size=step_size, norm=norm, delta0=delta0,
                    domain=ctx.domain)
        logits = ctx.model(x_adv)
        loss = jnp.asarray(ctx.task_loss(logits, y), jnp.float32)
        accuracy = jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32))
        return weight * loss, {"adv_loss": loss, "adv_accuracy": accuracy}

    return Term("pgd_adversarial", fn, needs_key=random_start)


# ---------------------------------------------------------------------------------------
# TRADES
# ---------------------------------------------------------------------------------------


def trades_example(model, x, logits, key, *, eps, steps, step_size=None, norm="linf",
                   domain=None):
    r"""TRADES' adversarial example: :func:`pgd` ascending
    :math:`\mathrm{KL}(\mathrm{softmax} f(x) \,\|\, \mathrm{softmax} f(x'))` (the clean
    ``logits`` held fixed) from :math:`x + 0.001\,\mathcal{N}(0, 1)` (drawn with ``key``), as
    the paper's reference code; stopped."""
    clean = lax.stop_gradient(logits)
    delta0 = START_NOISE * jax.random.normal(key, x.shape, x.dtype)
    return pgd(model, x, lambda adv: kl_divergence(clean, adv), eps=eps, steps=steps,
               step_size=step_size, norm=norm, delta0=delta0, domain=domain)


def trades(beta, eps, steps, step_size=None, norm="linf") -> Term:
    r"""TRADES' robustness term (Zhang et al., "Theoretically principled trade-off between
    robustness and accuracy", ICML 2019):

    .. math:: \beta \cdot \frac{1}{B} \sum_b
              \mathrm{KL}\big(\mathrm{softmax} f(x_b) \,\|\, \mathrm{softmax} f(x_{adv,b})\big),

    with :math:`x_{adv}` from :func:`trades_example` (KL ascent in the ``eps`` ball, clipped to
    ``ctx.domain``).  The gradient flows through both :math:`f(x)` (``ctx.logits``) and
    :math:`f(x_{adv})`, as in the paper; with the cross-entropy task loss this is TRADES'
    objective.  The paper's L2 variant ascends with an optimiser on a normalised gradient;
    here the L2 attack is :func:`pgd`'s normalised-gradient step.

    Registry name ``"trades"``.  Needs a key.  Aux: ``kl`` (the unweighted mean KL).
    """
    beta = nonnegative("beta", beta)
    eps, steps, step_size, norm = _check_attack(eps, steps, step_size, norm)

    def fn(ctx: Context):
        x_adv = trades_example(_frozen(ctx), ctx.x, ctx.logits, _require_key(ctx, "trades"),
                               eps=eps, steps=steps, step_size=step_size, norm=norm,
                               domain=ctx.domain)
        kl = jnp.mean(kl_divergence(ctx.logits, ctx.model(x_adv))).astype(jnp.float32)
        return beta * kl, {"kl": kl}

    return Term("trades", fn, needs_key=True)


# ---------------------------------------------------------------------------------------
# SCAAT
# ---------------------------------------------------------------------------------------


def scaat_example(model, x, y, logits, key, *, eps, steps, q=0.5, q_max=0.9, norm="linf",
                  adaptive="sparseness", step_size=None, domain=None):
    r"""SCAAT's adversarial example, its mask and its budget: ``(x_adv, mask, eps_b)``.

    1. Saliency of the true class, :math:`s = |\nabla_x f_y(x)|`
       (:func:`lipxai.explain.saliency`).
    2. Each example's fraction :math:`q_b` of irrelevant features and its budget
       :math:`\epsilon_b` (``adaptive``):

       * ``"sparseness"``: with :math:`G_b \in [0, 1)` the Gini index of :math:`s_b`
         (:func:`lipxai.metrics.sparseness`), :math:`q_b = q + (q_{max} - q)\, G_b`: the
         sparser the saliency, the more features it calls irrelevant.  The L∞ budget is
         :math:`\epsilon_b = \epsilon \sqrt{q / q_b}`, so that a perturbation filling its
         mask has the same L2 energy :math:`\epsilon \sqrt{q d}` for every example: the
         adaptive rule moves the adversary's energy to where the saliency says nothing, it
         does not strengthen it.  The L2 budget is a total energy already:
         :math:`\epsilon_b = \epsilon`.
       * ``"none"``: :math:`q_b = q`, :math:`\epsilon_b = \epsilon`.

    3. The mask :math:`M_b`: the :math:`\lfloor q_b d \rfloor` features of lowest saliency
       (:func:`lowest_features`): only they may change.
    4. :math:`x_{adv}`: :func:`pgd` ascending
       :math:`\mathrm{KL}(\mathrm{softmax} f(x) \| \mathrm{softmax} f(x'))` within
       :math:`\epsilon_b` and :math:`M_b`, from :math:`x` plus masked
       :math:`0.001\,\mathcal{N}(0, 1)` noise (the KL's gradient is 0 at :math:`x` itself).

    ``mask`` is bool shaped like ``x``, ``eps_b`` is ``float[B]``; all three stopped.
    """
    clean = lax.stop_gradient(logits)
    s = lax.stop_gradient(saliency(model, x, y, absolute=True))
    b, d = x.shape[0], math.prod(x.shape[1:])
    if adaptive == "sparseness":
        q_b = q + (q_max - q) * sparseness(s)
        eps_b = eps * jnp.sqrt(q / q_b) if norm == "linf" else jnp.full((b,), eps, x.dtype)
    else:
        q_b = jnp.full((b,), q, x.dtype)
        eps_b = jnp.full((b,), eps, x.dtype)
    mask = lowest_features(s, jnp.floor(q_b * d).astype(jnp.int32))
    delta0 = START_NOISE * jax.random.normal(key, x.shape, x.dtype)
    x_adv = pgd(model, x, lambda adv: kl_divergence(clean, adv), eps=eps_b, steps=steps,
                step_size=step_size, norm=norm, delta0=delta0, domain=domain, mask=mask)
    return x_adv, mask, lax.stop_gradient(eps_b)


def scaat(lam, eps, steps, q=0.5, norm="linf", ce_weight=0.0, adaptive="sparseness",
          q_max=0.9, step_size=None) -> Term:
    r"""Saliency-Constrained Adaptive Adversarial Training (Xu, Qin, Huang, Wang & Luo,
    "SCAAT: Improving neural network interpretability via saliency constrained adaptive
    adversarial training", BMVC 2023).

    The full algorithm text is not available to us; this is lipxai's reading of the paper's
    abstract (adversarial samples built under the guidance of the saliency map make it
    sparser and more faithful): the adversary may change **only the features the saliency
    calls irrelevant**, and the model is trained to keep its output there,

    .. math:: \lambda \cdot \frac{1}{B} \sum_b \mathrm{KL}\big(\mathrm{softmax} f(x_b) \,\|\,
              \mathrm{softmax} f(x_{adv,b})\big)
              + w_{ce} \cdot \mathrm{CE}(f(x_{adv}), y),

    with :math:`x_{adv}` from :func:`scaat_example`: true-class saliency, a per-example
    fraction :math:`q_b` of lowest-saliency features and budget :math:`\epsilon_b` set from
    the saliency's sparseness (``adaptive="sparseness"``: :math:`q_b = q + (q_{max} - q) G_b`,
    L∞ :math:`\epsilon_b = \epsilon \sqrt{q/q_b}`; ``"none"``: :math:`q`, :math:`\epsilon`),
    ``steps`` PGD steps of KL ascent restricted to that mask, clipped to ``ctx.domain``.  The
    gradient flows through both :math:`f(x)` and :math:`f(x_{adv})`; the task loss is added
    by the objective.

    Registry name ``"scaat"``.  Needs a key (the attack's start noise).  Aux: ``kl``,
    ``adv_ce`` (unweighted), ``masked_fraction`` (mean fraction of features the adversary
    may change), ``budget`` (mean :math:`\epsilon_b`).
    """
    lam = nonnegative("lam", lam)
    eps, steps, step_size, norm = _check_attack(eps, steps, step_size, norm)
    q = fraction("q", q, closed=False)
    q_max = fraction("q_max", q_max, closed=False)
    if q_max < q:
        raise ValueError(f"q_max must be >= q = {q!r}, got {q_max!r}")
    ce_weight = nonnegative("ce_weight", ce_weight)
    adaptive = choice("adaptive", adaptive, ("none", "sparseness"))

    def fn(ctx: Context):
        x_adv, mask, eps_b = scaat_example(
            _frozen(ctx), ctx.x, ctx.y, ctx.logits, _require_key(ctx, "scaat"), eps=eps,
            steps=steps, q=q, q_max=q_max, norm=norm, adaptive=adaptive, step_size=step_size,
            domain=ctx.domain)
        adv_logits = ctx.model(x_adv)
        kl = jnp.mean(kl_divergence(ctx.logits, adv_logits)).astype(jnp.float32)
        ce = cross_entropy(adv_logits, ctx.y).astype(jnp.float32)
        aux = {"kl": kl, "adv_ce": ce, "masked_fraction": jnp.mean(mask.astype(jnp.float32)),
               "budget": jnp.mean(eps_b).astype(jnp.float32)}
        return lam * kl + ce_weight * ce, aux

    return Term("scaat", fn, needs_key=True)


# ---------------------------------------------------------------------------------------
# Saliency guided training
# ---------------------------------------------------------------------------------------


def saliency_masking(model, x, y, key, *, k_fraction=0.5, fill="uniform", domain=None):
    r"""Saliency guided training's masked input: ``(x_masked, mask)``.

    The :math:`\lfloor k d \rfloor` features of lowest true-class saliency
    :math:`|\nabla_x f_y(x)|` of each example (:func:`lowest_features`) are replaced:
    ``fill="uniform"`` by values uniform in ``domain`` (drawn with ``key``), ``"low"`` by the
    domain's lower end (a black image); without a domain the batch's own range
    ``[min x, max x]`` stands for it.  ``mask`` (bool, shaped like ``x``) marks the replaced
    features; both stopped.
    """
    x = lax.stop_gradient(x)
    s = lax.stop_gradient(saliency(model, x, y, absolute=True))
    mask = lowest_features(s, int(k_fraction * math.prod(x.shape[1:])))
    low, high = (jnp.min(x), jnp.max(x)) if domain is None else domain
    if fill == "uniform":
        values = jax.random.uniform(key, x.shape, x.dtype, low, high)
    else:
        values = jnp.full(x.shape, low, x.dtype)
    return jnp.where(mask, values, x), mask


def saliency_guided(lam, k_fraction=0.5, fill="uniform") -> Term:
    r"""Saliency guided training (Ismail, Corrada Bravo & Feizi, "Improving deep learning
    interpretability by saliency guided training", NeurIPS 2021):

    .. math:: \lambda \cdot \frac{1}{B} \sum_b \mathrm{KL}\big(\mathrm{softmax} f(x_b) \,\|\,
              \mathrm{softmax} f(\tilde x_b)\big),

    with :math:`\tilde x` the input whose fraction ``k_fraction`` of lowest-saliency features
    (per example, saliency :math:`|\nabla_x f_y(x)|`) is replaced by random values
    (:func:`saliency_masking`; ``fill="uniform"`` in ``ctx.domain`` as the paper, ``"low"``
    by the domain's lower end).  The gradient flows through both :math:`f(x)` and
    :math:`f(\tilde x)`, not through the mask; the task loss is added by the objective.

    Registry name ``"saliency_guided"``.  Needs a key with ``fill="uniform"``.  Aux: ``kl``.
    """
    lam = nonnegative("lam", lam)
    k_fraction = fraction("k_fraction", k_fraction, closed=False)
    fill = choice("fill", fill, ("uniform", "low"))

    def fn(ctx: Context):
        key = _require_key(ctx, "saliency_guided") if fill == "uniform" else None
        x_masked, _ = saliency_masking(_frozen(ctx), ctx.x, ctx.y, key, k_fraction=k_fraction,
                                       fill=fill, domain=ctx.domain)
        kl = jnp.mean(kl_divergence(ctx.logits, ctx.model(x_masked))).astype(jnp.float32)
        return lam * kl, {"kl": kl}

    return Term("saliency_guided", fn, needs_key=fill == "uniform")
