r"""Faithfulness metrics: does the model's output follow the attribution?

Every metric is a function of ``(fn, x, target, attributions)`` where ``fn`` is a batched
model function ``x[B, ...] -> logits[B, C]``, ``target`` is ``int[B]`` and ``attributions``
has the shape of ``x``; it returns ``float[B]``, one score per example.

Features.  Metrics that remove features in the order of the attribution take
``features="pixels"`` (a feature is a pixel: all the channels of one position, ranked by the
attribution summed over the channel (last) axis; for inputs of rank 2 a feature is an
element) or ``features="elements"`` (every entry of ``x`` is a feature, ranked by its own
attribution, as Quantus does).  Ties in the ranking keep the feature order.

Baselines.  ``baseline`` (the values that replace removed features) is anything
:func:`lipxai.explain.make_baseline` accepts (``"zeros"``/``None``, a number, ``"blur"``,
``"uniform"`` with ``key``, an array broadcastable to ``x``) or Quantus' per-example
``"black"`` (the example's minimum), ``"white"`` (its maximum) or ``"mean"``.

Outputs.  ``output="softmax"`` scores the target's softmax probability, ``"logit"`` its
logit; ROAD also has ``"accuracy"`` (1 when the argmax is the target).

Memory.  The model is evaluated at ``n`` perturbed copies of the batch (steps, random
subsets, noise samples, percentages): they are evaluated in chunks of ``batch_size``
copies (``batch_size * B`` examples per call of ``fn``; ``None`` uses
:func:`lipxai.explain.default_chunk`), see :mod:`lipxai.metrics._common`.  Random draws are
shared by the examples of a batch, so scores do not depend on the batch or the chunking.

The heavy part of each metric is a ``jax.jit`` with ``fn`` static (as
:func:`lipxai.boundary.search`): pass the same ``fn`` object to reuse the compilation.
Validation happens before tracing and raises ``ValueError``/``TypeError`` naming the
argument; an invalid example (a NaN or infinity in its input, attribution or baseline, a
target out of range under ``jit``) or a traced invalid ``noise`` gives NaN scores (the NaN
rule of :mod:`lipxai.metrics`).
"""

from __future__ import annotations

import functools
import math
import numbers

import jax
import jax.numpy as jnp

from lipxai._core.batched import check_inputs, flat
from lipxai._core.checks import (
    floating_array,
    nan_unless,
    one_of,
    positive_int,
)
from lipxai.metrics._common import (
    FEATURES,
    baseline_of,
    check_attributions,
    check_key,
    check_real,
    chunk_of,
    chunked_rows,
    descending_rank,
    draws,
    feature_mask,
    feature_values,
    finite_in,
    model_score,
    pearson,
    real_arg,
    subsets,
)
from lipxai.metrics.imputation import impute

__all__ = [
    "completeness",
    "deletion",
    "infidelity",
    "insertion",
    "mufidelity",
    "pixel_flipping",
    "road",
]

def _common_args(fn, x, target, attributions, output, features):
    """``(x, target, a, valid)``: ``valid: bool[B]``, finite ``x`` and a target in range."""
    x, target, valid = check_inputs(fn, x, target)
    a = check_attributions(attributions, x)
    one_of("output", output, ("softmax", "logit"))
    one_of("features", features, FEATURES)
    return x, target, a, valid


def _n_features(x, features):
    if features == "pixels" and x.ndim >= 3:
        return math.prod(x.shape[1:-1])
    return math.prod(x.shape[1:])


# ---------------------------------------------------------------------------------------
# removal / insertion curves
# ---------------------------------------------------------------------------------------


@functools.partial(
    jax.jit, static_argnames=("fn", "counts", "insert", "output", "features", "chunk", "dx")
)
def _replacement_curve(fn, x, target, a, base, valid, *, counts, insert, output, features,
                       chunk, dx):
    """``(auc [B], curve [B, len(counts)])``: the curve is the score after the
    ``counts[k]`` top-ranked features of ``x`` are replaced by ``base`` (``insert=False``),
    or of ``base`` by ``x`` (``insert=True``); ``auc`` its trapezoid area with spacing
    ``dx``; NaN unless ``valid`` and ``a``, ``base`` finite."""
    b = x.shape[0]
    rank = descending_rank(feature_values(a, features))  # [B, F]
    counts_arr = jnp.asarray(counts, jnp.int32)

    def rows(idx):
        c = idx.shape[0]
        top = rank[None] < counts_arr[idx][:, None, None]  # [c, B, F]
        top = feature_mask(top, x.shape, features)  # [c, B, ...]
        if insert:
            z = jnp.where(top, x[None], base[None])
        else:
            z = jnp.where(top, base[None], x[None])
        return model_score(fn, flat(z), jnp.tile(target, c), output).reshape(c, b)

    curve = chunked_rows(rows, len(counts), chunk).T
    return nan_unless(valid & finite_in(a, base), (jnp.trapezoid(curve, dx=dx, axis=1), curve))


def _deletion_insertion(fn, x, target, attributions, *, insert, steps, baseline, output,
                        features, return_curve, batch_size, key, sigma):
    x, target, a, valid = _common_args(fn, x, target, attributions, output, features)
    steps = positive_int("steps", steps)
    chunk = chunk_of(batch_size, steps + 1, x.shape)
    base = baseline_of(x, baseline, key=key, sigma=sigma)
    n = _n_features(x, features)
    counts = tuple((k * n) // steps for k in range(steps + 1))
    auc, curve = _replacement_curve(fn, x, target, a, base, valid, counts=counts, insert=insert,
                                    output=output, features=features, chunk=chunk,
                                    dx=1.0 / steps)
    return (auc, curve) if return_curve else auc


_CURVE_DOC = """
    Args:
      fn: batched model function ``x[B, ...] -> logits[B, C]``.
      x: floating inputs ``[B, ...]``.
      target: ``int[B]``, the explained class.
      attributions: shaped like ``x``; features are taken in order of *decreasing*
        (signed) attribution.
      steps: number of steps ``K >= 1``; after step ``k`` the top
        ``floor(k * N / K)`` of the ``N`` features are {done}.
      baseline: the replacement values (module docstring); default {default}.
      output: ``"softmax"`` (the target's probability, as RISE) or ``"logit"``.
      features: ``"pixels"`` (default, as RISE) or ``"elements"`` (module docstring).
      return_curve: also return the curve ``float[B, K + 1]`` (``k = 0 .. K``).
      batch_size: steps evaluated together per chunk (``None``: ``default_chunk``).
      key: ``jax.random`` key, only for ``baseline="uniform"``.
      sigma: blur standard deviation (pixels) for ``baseline="blur"``.

    Returns:
      ``float[B]``, the area under the curve over the removed fraction ``k / K`` in
      ``[0, 1]`` (trapezoid rule, as RISE's ``auc``), or ``(auc, curve)``; NaN for an
      invalid example (NaN rule of :mod:`lipxai.metrics`).
"""


def deletion(fn, x, target, attributions, *, steps: int = 100, baseline="zeros",
             output: str = "softmax", features: str = "pixels", return_curve: bool = False,
             batch_size: int | None = None, key=None, sigma: float = 5.0):
    r"""Deletion: area under the target's score as the most relevant features are removed.

    Petsiuk, Das & Saenko 2018, "RISE: randomized input sampling for explanation of
    black-box models".  With :math:`x^{(k)}` the input whose top
    :math:`\lfloor kN/K\rfloor` features are replaced by the baseline,

    .. math:: \mathrm{Deletion}(x) = \int_0^1 s(x^{(\lfloor uK \rfloor)})\,du
              \approx \frac1K\sum_{k=0}^{K-1}\frac{s(x^{(k)}) + s(x^{(k+1)})}{2},

    where :math:`s` is the target's softmax probability (or logit).  Lower is better: a
    faithful attribution removes the evidence for the class first.
    """
    return _deletion_insertion(fn, x, target, attributions, insert=False, steps=steps,
                               baseline=baseline, output=output, features=features,
                               return_curve=return_curve, batch_size=batch_size, key=key,
                               sigma=sigma)


def insertion(fn, x, target, attributions, *, steps: int = 100, baseline="blur",
              output: str = "softmax", features: str = "pixels", return_curve: bool = False,
              batch_size: int | None = None, key=None, sigma: float = 5.0):
    r"""Insertion: area under the target's score as the most relevant features of ``x`` are
    inserted into the baseline (a blurred copy of ``x`` by default, as RISE).

    Petsiuk, Das & Saenko 2018 (RISE).  The mirror of :func:`deletion`: starting from the
    baseline, the top :math:`\lfloor kN/K\rfloor` features take their values in ``x``;
    :math:`\int_0^1 s\,du` by the trapezoid rule.  Higher is better.
    """
    return _deletion_insertion(fn, x, target, attributions, insert=True, steps=steps,
                               baseline=baseline, output=output, features=features,
                               return_curve=return_curve, batch_size=batch_size, key=key,
                               sigma=sigma)


deletion.__doc__ += _CURVE_DOC.format(done="replaced by the baseline", default='"zeros"')
insertion.__doc__ += _CURVE_DOC.format(done="inserted", default='"blur"')


def pixel_flipping(fn, x, target, attributions, *, features_per_step: int = 1,
                   baseline="black", output: str = "softmax", features: str = "elements",
                   return_curve: bool = False, batch_size: int | None = None, key=None,
                   sigma: float = 5.0):
    r"""Pixel flipping: the target's score as features are flipped to the baseline, most
    relevant first, ``features_per_step`` at a time, until all are flipped.

    Bach et al. 2015, "On pixel-wise explanations for non-linear classifier decisions by
    layer-wise relevance propagation"; defined as Quantus' ``PixelFlipping``: the curve is
    :math:`c_k = s(x^{(m_k)})` for :math:`k = 0 .. \lceil N/m\rceil - 1`, with
    :math:`m_k = \min((k+1)m, N)` top features flipped (the unperturbed input is not a point
    of the curve), and the score is its area by the trapezoid rule with unit spacing,
    :math:`\sum_k c_k - (c_0 + c_{last})/2` (Quantus' ``return_auc_per_sample=True``, i.e.
    ``np.trapz(curve, dx=1)``).  Lower is better.

    Args:
      fn, x, target, attributions: as :func:`deletion`.
      features_per_step: features flipped per step ``m >= 1`` (Quantus'
        ``features_in_step``).
      baseline: replacement values; default ``"black"``, the example's minimum (Quantus'
        default ``perturb_baseline``).
      output: ``"softmax"`` (default, as Quantus' ``PixelFlipping.__call__(softmax=True)``)
        or ``"logit"``.
      features: ``"elements"`` (default, as Quantus) or ``"pixels"``.
      return_curve: also return the curve ``float[B, ceil(N / m)]``.
      batch_size: steps evaluated together per chunk.
      key, sigma: for ``baseline="uniform"`` / ``"blur"``.

    Returns:
      ``float[B]`` (the area), or ``(area, curve)``; NaN for an invalid example (NaN rule of
      :mod:`lipxai.metrics`).
    """
    x, target, a, valid = _common_args(fn, x, target, attributions, output, features)
    m = positive_int("features_per_step", features_per_step)
    n = _n_features(x, features)
    counts = tuple(min((k + 1) * m, n) for k in range(-(-n // m)))
    chunk = chunk_of(batch_size, len(counts), x.shape)
    base = baseline_of(x, baseline, key=key, sigma=sigma)
    auc, curve = _replacement_curve(fn, x, target, a, base, valid, counts=counts, insert=False,
                                    output=output, features=features, chunk=chunk, dx=1.0)
    return (auc, curve) if return_curve else auc


# ---------------------------------------------------------------------------------------
# correlation / perturbation metrics
# ---------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("fn", "output", "features", "chunk"))
def _mufidelity(fn, x, target, a, base, masks, valid, *, output, features, chunk):
    b = x.shape[0]
    av = feature_values(a, features)  # [B, F]
    n = av.shape[1]
    f0 = model_score(fn, x, target, output)

    def rows(idx):
        c = idx.shape[0]
        m = masks[idx]  # [c, F]
        att = jnp.where(m[:, None, :], av[None], 0).sum(-1)  # [c, B]
        sel = feature_mask(jnp.broadcast_to(m[:, None, :], (c, b, n)), x.shape, features)
        z = jnp.where(sel, base[None], x[None])
        drop = f0[None] - model_score(fn, flat(z), jnp.tile(target, c), output).reshape(c, b)
        return jnp.stack([att, drop], axis=-1)

    r = chunked_rows(rows, masks.shape[0], chunk)  # [S, B, 2]
    return nan_unless(valid & finite_in(a, base), pearson(r[..., 0], r[..., 1], axis=0))


def mufidelity(fn, x, target, attributions, *, key, samples: int = 100,
               subset_size: int = 224, baseline="black", output: str = "logit",
               features: str = "elements", batch_size: int | None = None, sigma: float = 5.0):
    r"""MuFidelity (faithfulness correlation): the Pearson correlation, over random subsets
    :math:`S` of ``subset_size`` features, between the attribution mass of :math:`S` and the
    output drop when :math:`S` is replaced by the baseline :math:`\bar x`:

    .. math:: \mu F(x) = \operatorname{corr}_{S}\Big(\sum_{i\in S} a_i,\;
              f_t(x) - f_t(x_{[x_S = \bar x_S]})\Big).

    Bhatt, Weller & Moura 2020, "Evaluating and aggregating feature-based model
    explanations" (IJCAI); Quantus' ``FaithfulnessCorrelation`` (same defaults:
    100 subsets of 224 elements, ``"black"`` baseline, logits).  Higher is better; NaN when
    either side is constant over the subsets, and for an invalid example (NaN rule of
    :mod:`lipxai.metrics`).

    Args:
      fn, x, target, attributions: as :func:`deletion`.
      key: ``jax.random`` key; subset ``s`` is drawn from ``split(key, samples)[s]`` and is
        the same for every example of the batch.
      samples: number of random subsets ``>= 2``.
      subset_size: features per subset, ``1 <= subset_size <= N``.
      baseline, output, features: see the module docstring (defaults as Quantus).
      batch_size: subsets evaluated together per chunk.
      sigma: for ``baseline="blur"``.
    """
    x, target, a, valid = _common_args(fn, x, target, attributions, output, features)
    check_key(key)
    samples = positive_int("samples", samples, minimum=2)
    n = _n_features(x, features)
    subset_size = positive_int("subset_size", subset_size)
    if subset_size > n:
        raise ValueError(f"subset_size must be <= the number of features {n}, got {subset_size}")
    uniform = isinstance(baseline, str) and baseline == "uniform"
    base_key = jax.random.fold_in(key, 0x7FFFFFFF) if uniform else None  # not the subsets'
    base = baseline_of(x, baseline, key=base_key, sigma=sigma)
    chunk = chunk_of(batch_size, samples, x.shape)
    masks = subsets(key, samples, n, subset_size)
    return _mufidelity(fn, x, target, a, base, masks, valid, output=output, features=features,
                       chunk=chunk)


@functools.partial(jax.jit, static_argnames=("fn", "normalize", "output", "chunk"))
def _infidelity(fn, x, target, a, perts, valid, *, normalize, output, chunk):
    b = x.shape[0]
    f0 = model_score(fn, x, target, output)
    red = tuple(range(2, x.ndim + 1))

    def rows(idx):
        c = idx.shape[0]
        pert = perts[idx]
        dot = (pert[:, None] * a[None]).sum(red)  # [c, B]
        z = x[None] - pert[:, None]
        drop = f0[None] - model_score(fn, flat(z), jnp.tile(target, c), output).reshape(c, b)
        return jnp.stack([dot, drop], axis=-1)

    r = chunked_rows(rows, perts.shape[0], chunk)
    dot, drop = r[..., 0], r[..., 1]
    if normalize:
        den = (dot * dot).mean(0)
        beta = jnp.where(den > 0, (dot * drop).mean(0) / jnp.where(den > 0, den, 1), 0)
        dot = beta[None] * dot
    return nan_unless(valid & finite_in(a), ((dot - drop) ** 2).mean(0))


def infidelity(fn, x, target, attributions, *, key, samples: int = 50, noise: float = 0.1,
               normalize: bool = False, output: str = "logit",
               batch_size: int | None = None):
    r"""Infidelity with Gaussian perturbations:

    .. math:: \mathrm{INFD}(a, f, x) = \mathbb{E}_{I\sim\mathcal N(0,\sigma^2 \mathrm{Id})}
              \Big[\big(I^\top a - (f_t(x) - f_t(x - I))\big)^2\Big],

    estimated with ``samples`` draws.  Yeh et al. 2019, "On the (in)fidelity and sensitivity
    of explanations" (NeurIPS), with their "noisy baseline" perturbation :math:`x - I`;
    computed as Captum's ``infidelity`` (``normalize=True`` rescales the attribution by the
    optimal :math:`\beta = \mathbb{E}[I^\top a\,\Delta f] / \mathbb{E}[(I^\top a)^2]`, as
    Yeh et al.'s code and Captum).  Quantus' ``Infidelity`` perturbs patches with a baseline
    instead; this is not that.  Lower is better: for a linear model the gradient has
    infidelity 0.  NaN for an invalid example, and for every example when a traced
    ``noise`` is not finite and ``> 0`` (NaN rule of :mod:`lipxai.metrics`).

    Args:
      fn, x, target, attributions: as :func:`deletion`.
      key: ``jax.random`` key; draw ``s`` comes from ``split(key, samples)[s]``, shared by
        the examples of the batch.
      samples: number of noise draws ``>= 1``.
      noise: standard deviation :math:`\sigma` of the perturbation (input units), ``> 0``.
      normalize: rescale the attribution optimally first (see above).
      output: ``"logit"`` (default) or ``"softmax"``.
      batch_size: draws evaluated together per chunk.
    """
    x, target, a, valid = _common_args(fn, x, target, attributions, output, "elements")
    check_key(key)
    samples = positive_int("samples", samples)
    noise, noise_ok = real_arg("noise", noise, strict=True)
    chunk = chunk_of(batch_size, samples, x.shape)
    perts = draws(key, samples, x.shape[1:], x.dtype, "normal", noise)
    return _infidelity(fn, x, target, a, perts, valid & noise_ok, normalize=bool(normalize),
                       output=output, chunk=chunk)


@functools.partial(jax.jit, static_argnames=("fn", "output", "relative"))
def _completeness(fn, x, target, a, base, valid, *, output, relative):
    b = x.shape[0]
    s = model_score(fn, jnp.concatenate([x, base]), jnp.tile(target, 2), output)
    diff = s[:b] - s[b:]
    res = jnp.abs(a.reshape(b, -1).sum(-1) - diff)
    return nan_unless(valid & finite_in(a, base), res / jnp.abs(diff) if relative else res)


def completeness(fn, x, target, attributions, *, baseline="zeros", output: str = "logit",
                 relative: bool = False, key=None, sigma: float = 5.0):
    r"""Completeness error: :math:`|\sum_i a_i - (f_t(x) - f_t(\bar x))|`.

    The completeness ("summation to delta") axiom of Sundararajan, Taly & Yan 2017,
    "Axiomatic attribution for deep networks" (and Shrikumar et al. 2017).  0 for Integrated
    Gradients with an exact quadrature on the same baseline.  Quantus' ``Completeness``
    returns the boolean ``sum(a) == f(x) - f(baseline)`` (exact equality, default baseline
    ``"black"``); this returns the error itself.  NaN for an invalid example (NaN rule of
    :mod:`lipxai.metrics`).

    Args:
      fn, x, target, attributions: as :func:`deletion`.
      baseline: :math:`\bar x` (module docstring); default ``"zeros"``, IG's default.
      output: ``"logit"`` (default) or ``"softmax"``.
      relative: divide by :math:`|f_t(x) - f_t(\bar x)|` (inf or NaN where it is 0).
      key, sigma: for ``baseline="uniform"`` / ``"blur"``.
    """
    x, target, a, valid = _common_args(fn, x, target, attributions, output, "elements")
    base = baseline_of(x, baseline, key=key, sigma=sigma)
    return _completeness(fn, x, target, a, base, valid, output=output, relative=bool(relative))


# ---------------------------------------------------------------------------------------
# ROAD
# ---------------------------------------------------------------------------------------

@functools.partial(
    jax.jit, static_argnames=("fn", "counts", "morf", "output", "chunk", "iterations", "tol")
)
def _road(fn, x, target, a, eps, valid, *, counts, morf, output, chunk, iterations, tol):
    b, h, w, ch = x.shape
    av = feature_values(a, "pixels")
    rank = descending_rank(av if morf else -av)
    counts_arr = jnp.asarray(counts, jnp.int32)

    def rows(idx):
        c = idx.shape[0]
        m = (rank[None] < counts_arr[idx][:, None, None]).astype(x.dtype).reshape(c, b, h, w, 1)
        imp = impute(jnp.broadcast_to(x[None], (c,) + x.shape), m, iterations, tol)
        z = imp + m * eps[idx][:, None]
        return model_score(fn, flat(z), jnp.tile(target, c), output).reshape(c, b)

    curve = chunked_rows(rows, len(counts), chunk).T
    return nan_unless(valid & finite_in(a), (curve.mean(axis=1), curve))


def road(fn, x, target, attributions, *, key, percentages=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6,
         0.7, 0.8, 0.9), order: str = "morf", noise: float = 0.01, output: str = "accuracy",
         return_curve: bool = False, iterations: int = 200, tol: float = 1e-5,
         batch_size: int | None = None):
    r"""ROAD (RemOve And Debias): the model's score after the most (``order="morf"``) or
    least (``"lerf"``) relevant pixels are removed and imputed by
    :func:`~lipxai.metrics.imputation.noisy_linear_imputation`, averaged over the removed fractions.

    Rong et al. 2022, "A consistent and efficient evaluation strategy for attribution
    methods" (ICML).  For each fraction :math:`p`, the top :math:`\lfloor pHW\rfloor` pixels
    (ranked by the attribution summed over channels) are imputed; the curve is the score
    (by default, as the paper and Quantus' ``ROAD``, whether the prediction is still the
    target) at each fraction and the result its mean over the fractions.  MoRF: lower is
    better; LeRF: higher is better.  NaN for an invalid example, and for every example
    when a traced ``noise`` is not finite and ``>= 0`` (NaN rule of :mod:`lipxai.metrics`).

    Args:
      fn, x, target, attributions: as :func:`deletion`; ``x`` must be images
        ``[B, H, W, C]``.
      key: ``jax.random`` key for the imputation noise (fraction ``k`` uses
        ``split(key, P)[k]``, shared by the examples of the batch).
      percentages: removed fractions, each in ``(0, 1]`` (Quantus takes percents: its
        ``list(range(1, 100, 2))`` is ``[p / 100 for p in range(1, 100, 2)]`` here).
      order: ``"morf"`` (most relevant first) or ``"lerf"`` (least relevant first).
      noise: imputation noise standard deviation, ``>= 0`` (0.01 as the paper and Quantus).
      output: ``"accuracy"`` (default), ``"softmax"`` or ``"logit"``.
      return_curve: also return the curve ``float[B, P]``.
      iterations, tol: CG settings of :func:`~lipxai.metrics.imputation.noisy_linear_imputation`.
      batch_size: fractions evaluated together per chunk.
    """
    x = floating_array("x", x)
    if x.ndim != 4:
        raise ValueError(f"x must be images [B, H, W, C] for road, got shape {tuple(x.shape)}")
    x, target, valid = check_inputs(fn, x, target)
    a = check_attributions(attributions, x)
    one_of("output", output, ("accuracy", "softmax", "logit"))
    one_of("order", order, ("morf", "lerf"))
    check_key(key)
    noise, noise_ok = real_arg("noise", noise)
    iterations = positive_int("iterations", iterations)
    tol = check_real("tol", tol, strict=True)
    try:
        percentages = tuple(float(p) for p in percentages)
    except TypeError:
        raise TypeError(f"percentages must be a sequence of numbers, got {percentages!r}") from None
    if not percentages or any(
        not isinstance(p, numbers.Real) or not 0 < p <= 1 for p in percentages
    ):
        raise ValueError(f"percentages must be a non-empty sequence of fractions in (0, 1], "
                         f"got {percentages!r}")
    n = x.shape[1] * x.shape[2]
    counts = tuple(int(math.floor(n * p + 1e-9)) for p in percentages)
    chunk = chunk_of(batch_size, len(counts), x.shape)
    eps = draws(key, len(counts), x.shape[1:], x.dtype, "normal", noise)
    score, curve = _road(fn, x, target, a, eps, valid & noise_ok, counts=counts,
                         morf=order == "morf", output=output, chunk=chunk,
                         iterations=iterations, tol=tol)
    return (score, curve) if return_curve else score
