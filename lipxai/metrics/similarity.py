r"""Similarity of two explanations: ``measure(a, b) -> float[B]``, one score per example.

``a`` and ``b`` are two batches of attributions of the same shape ``[B, ...]`` (e.g. the
explanations of one batch by two models, two methods, or of an input and of a perturbed
input); example ``i`` of ``a`` is compared with example ``i`` of ``b`` only, so scores do not
depend on the batch.  These are the measures used by sanity checks
(:func:`lipxai.metrics.model_randomization`, :func:`lipxai.metrics.random_logit`) and by
attacks on explanations (Ghorbani et al. 2019).

Features.  ``features="pixels"`` (default) compares one value per pixel, the attribution
summed over the channel (last) axis (for inputs of rank 2 a feature is an element), as
:func:`lipxai.metrics._common.feature_values`; ``features="elements"`` compares every entry.
:func:`ssim` and :func:`center_of_mass_shift` work on the *pixel map* of each example, of
shape ``shape[1:-1]`` (``[H, W]`` for NHWC images; ``[L]`` for ``[B, L, C]``; ``[D]`` for
``[B, D]``): give a channel-free ``[B, H, W]`` map a trailing axis of size 1.

This module is exported as :mod:`lipxai.metrics.similarity` (``lx.metrics.similarity.ssim``),
not function by function: its :func:`top_k_intersection` compares two attributions, while
:func:`lipxai.metrics.top_k_intersection` compares an attribution with a ground-truth mask.
Every function validates its input before tracing and runs as a ``jax.jit`` with its shape
parameters (``k``, ``win_size``, ``features``) static.  An example where ``a`` or ``b``
holds a NaN or an infinity scores NaN (the NaN rule of :mod:`lipxai.metrics`).
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp
from jax import lax

from lipxai._core.checks import (
    floating_array,
    nan_unless,
    non_empty,
    non_negative,
    one_of,
    positive,
    positive_int,
)
from lipxai.metrics import _common
from lipxai.metrics._common import (
    FEATURES,
    descending_rank,
    feature_values,
    finite_in,
    map_shape,
    n_features,
    pixel_map,
)

__all__ = ["top_k_intersection", "spearman", "pearson", "ssim", "mse", "center_of_mass_shift"]


def _pair(a, b, features="pixels"):
    a = non_empty("a", floating_array("a", a, min_rank=2))
    b = floating_array("b", b, min_rank=2)
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    one_of("features", features, FEATURES)
    dtype = jnp.result_type(a.dtype, b.dtype)
    return a.astype(dtype), b.astype(dtype)


# ---------------------------------------------------------------------------------------
# top-k intersection
# ---------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("k", "features", "absolute"))
def _top_k_intersection(a, b, *, k, features, absolute):
    valid = finite_in(a, b)
    if absolute:
        a, b = jnp.abs(a), jnp.abs(b)
    top_a = descending_rank(feature_values(a, features)) < k
    top_b = descending_rank(feature_values(b, features)) < k
    return nan_unless(valid, (top_a & top_b).sum(-1).astype(a.dtype) / k)


def top_k_intersection(a, b, k: int, *, features: str = "pixels", absolute: bool = True):
    r"""The share of the ``k`` most important features of ``a`` that are among the ``k`` most
    important features of ``b``,

    .. math:: \mathrm{TopK}(a, b) = |T_k(a) \cap T_k(b)| \,/\, k,

    with :math:`T_k(a)` the indices of the ``k`` largest :math:`|a_i|` (ties keep the feature
    order).  Ghorbani, Abid & Zou 2019, "Interpretation of neural networks is fragile"
    (AAAI), who report it between the saliency maps of an input and of an attacked input.
    1 for identical rankings of the top ``k``, in ``[0, 1]``; NaN where ``a`` or ``b`` is not
    finite (module docstring).

    Args:
      a, b: floating attributions of the same shape ``[B, ...]``.
      k: number of top features, ``1 <= k <= number of features``.
      features: ``"pixels"`` (``|a|`` summed over the channels) or ``"elements"``.
      absolute: rank by ``|a|`` (default, as Ghorbani et al.); ``False`` ranks by ``a``.
    """
    a, b = _pair(a, b, features)
    n = n_features(a.shape, features)
    k = positive_int("k", k)
    if k > n:
        raise ValueError(f"k must be <= the number of features {n} ({features}), got {k}")
    return _top_k_intersection(a, b, k=k, features=features, absolute=bool(absolute))


# ---------------------------------------------------------------------------------------
# correlations, mse
# ---------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("features",))
def spearman_unchecked(a, b, *, features):
    """:func:`spearman` on validated maps (traceable; ``lipxai.metrics.sanity`` calls it under ``jit``)."""
    score = _common.spearman(feature_values(a, features), feature_values(b, features))
    return nan_unless(finite_in(a, b), score)


def spearman(a, b, *, features: str = "pixels"):
    r"""Spearman's rank correlation of the features of ``a`` and ``b``: the Pearson correlation
    of their ranks (ties get their average rank, as ``scipy.stats.spearmanr``),

    .. math:: \rho(a, b) = \mathrm{corr}\big(\mathrm{rank}(a), \mathrm{rank}(b)\big).

    Adebayo et al. 2018, "Sanity checks for saliency maps" (NeurIPS); Ghorbani et al. 2019.
    In ``[-1, 1]``, 1 for identical rankings; NaN when either map is constant or not
    finite.  Apply
    ``jnp.abs`` to the inputs for the rank correlation of magnitudes.

    Args:
      a, b: floating attributions of the same shape ``[B, ...]``.
      features: ``"pixels"`` (summed over the channels) or ``"elements"``.
    """
    a, b = _pair(a, b, features)
    return spearman_unchecked(a, b, features=features)


@functools.partial(jax.jit, static_argnames=("features",))
def pearson_unchecked(a, b, *, features):
    """:func:`pearson` on validated maps (traceable; ``lipxai.metrics.sanity`` calls it under ``jit``)."""
    score = _common.pearson(feature_values(a, features), feature_values(b, features))
    return nan_unless(finite_in(a, b), score)


def pearson(a, b, *, features: str = "pixels"):
    r"""Pearson's correlation of the features of ``a`` and ``b``,

    .. math:: r(a, b) = \frac{\sum_i (a_i - \bar a)(b_i - \bar b)}
              {\sqrt{\sum_i (a_i - \bar a)^2 \sum_i (b_i - \bar b)^2}}.

    Used to compare explanations by Adebayo et al. 2018 and Quantus
    (``correlation_pearson``).  In ``[-1, 1]``; NaN when either map is constant or not
    finite.

    Args: as :func:`spearman`.
    """
    a, b = _pair(a, b, features)
    return pearson_unchecked(a, b, features=features)


@functools.partial(jax.jit, static_argnames=("features",))
def mse_unchecked(a, b, *, features):
    """:func:`mse` on validated maps (traceable; ``lipxai.metrics.sanity`` calls it under ``jit``)."""
    d = feature_values(a, features) - feature_values(b, features)
    return nan_unless(finite_in(a, b), (d * d).mean(-1))


def mse(a, b, *, features: str = "pixels"):
    r"""Mean squared difference of the features, :math:`\frac1N \sum_i (a_i - b_i)^2`.

    A distance (0 for identical maps, lower is more similar), e.g. between explanations of
    an input and of an attacked input (Dombrowski et al. 2019, "Explanations can be
    manipulated and geometry is to blame", NeurIPS).  NaN where ``a`` or ``b`` is not finite.

    Args: as :func:`spearman` (with ``"pixels"`` the maps summed over channels are compared).
    """
    a, b = _pair(a, b, features)
    return mse_unchecked(a, b, features=features)


# ---------------------------------------------------------------------------------------
# structural similarity
# ---------------------------------------------------------------------------------------


def _window_mean(z, win_size):
    """Means over every full ``win_size^d`` window of ``z[B, *map]`` (``VALID``)."""
    nd = z.ndim - 1
    window = (1,) + (win_size,) * nd
    total = lax.reduce_window(z, 0.0, lax.add, window, (1,) * z.ndim, "VALID")
    return total / win_size**nd


@functools.partial(jax.jit, static_argnames=("win_size", "auto_range"))
def ssim_unchecked(a, b, data_range, *, win_size, auto_range):
    """:func:`ssim` on validated maps (traceable; ``lipxai.metrics.sanity`` calls it under ``jit``)."""
    x, y = pixel_map(a), pixel_map(b)
    axes = tuple(range(1, x.ndim))
    if auto_range:
        hi = jnp.maximum(x.max(axis=axes), y.max(axis=axes))
        lo = jnp.minimum(x.min(axis=axes), y.min(axis=axes))
        data_range = hi - lo
    r_b = jnp.broadcast_to(data_range, x.shape[:1])
    r = r_b.reshape((-1,) + (1,) * (x.ndim - 1))
    c1, c2 = (0.01 * r) ** 2, (0.03 * r) ** 2
    npix = win_size ** (x.ndim - 1)
    cov_norm = npix / (npix - 1)
    ux, uy = _window_mean(x, win_size), _window_mean(y, win_size)
    # (co)variances from maps centred on their means: the same in exact arithmetic, less
    # cancellation in float32 (skimage computes in float64)
    xc = x - x.mean(axis=axes, keepdims=True)
    yc = y - y.mean(axis=axes, keepdims=True)
    mx, my = _window_mean(xc, win_size), _window_mean(yc, win_size)
    vx = cov_norm * (_window_mean(xc * xc, win_size) - mx * mx)
    vy = cov_norm * (_window_mean(yc * yc, win_size) - my * my)
    vxy = cov_norm * (_window_mean(xc * yc, win_size) - mx * my)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return nan_unless(finite_in(a, b) & jnp.isfinite(r_b) & (r_b > 0), s.mean(axis=axes))


def ssim(a, b, *, data_range=None, win_size: int = 7):
    r"""Structural similarity (SSIM) of the pixel maps of ``a`` and ``b``, averaged over the
    windows that lie inside the map,

    .. math:: \mathrm{SSIM}(a, b) = \operatorname{mean}_w
              \frac{(2\mu_a\mu_b + C_1)(2\sigma_{ab} + C_2)}
                   {(\mu_a^2 + \mu_b^2 + C_1)(\sigma_a^2 + \sigma_b^2 + C_2)},

    with :math:`\mu, \sigma^2, \sigma_{ab}` the mean, sample variance and sample covariance
    over a ``win_size`` x ``win_size`` window :math:`w`, :math:`C_1 = (0.01 R)^2`,
    :math:`C_2 = (0.03 R)^2`.  Wang et al. 2004, "Image quality assessment: from error
    visibility to structural similarity" (IEEE TIP); used for explanations by Adebayo et al.
    2018 and Quantus (``ssim``).  Equal to ``skimage.metrics.structural_similarity(a_i, b_i,
    win_size=7, data_range=R)`` (uniform windows, ``gaussian_weights=False``,
    ``use_sample_covariance=True``) per example, computed in float32 (skimage: float64).

    Each example is compared on its pixel map (module docstring): NHWC attributions are
    summed over the channels first, then compared as ``[H, W]`` images; a rank-2 ``[B, D]``
    batch is compared as 1-D signals (windows of ``win_size`` elements).  Quantus'
    ``RandomLogit`` applies skimage to the *flattened* attribution (1-D SSIM over the
    flattened rows); this compares the 2-D maps, as Adebayo et al.

    1 for identical maps, at most 1.  NaN when both maps are equal and constant (then
    :math:`R = 0`), for an example whose maps are not finite, and where a traced
    ``data_range`` is not finite and ``> 0``.

    Args:
      a, b: floating attributions of the same shape ``[B, ...]``.
      data_range: :math:`R`, the dynamic range of the values; ``None`` (default, as Quantus)
        uses per example :math:`\max(a_i, b_i) - \min(a_i, b_i)` over both maps; else a
        number > 0 or an array ``[B]``.
      win_size: odd window side ``>= 3``, at most the map's smallest side (skimage's 7).
    """
    a, b = _pair(a, b)
    win_size = positive_int("win_size", win_size, minimum=3)
    side = min(map_shape(a.shape))
    if win_size % 2 == 0 or win_size > side:
        raise ValueError(f"win_size must be odd and <= the map's smallest side {side} "
                         f"(map shape {map_shape(a.shape)}), got {win_size}")
    if data_range is None:
        r = jnp.zeros((), a.dtype)
    elif isinstance(data_range, numbers.Real) and not isinstance(data_range, bool):
        r = jnp.asarray(positive("data_range", data_range), a.dtype)
    else:
        r = non_negative("data_range", floating_array("data_range", data_range))
        if r.shape not in ((), (a.shape[0],)):
            raise ValueError(f"data_range must be a number or have shape ({a.shape[0]},), "
                             f"got {tuple(r.shape)}")
        r = r.astype(a.dtype)
    return ssim_unchecked(a, b, r, win_size=win_size, auto_range=data_range is None)


# ---------------------------------------------------------------------------------------
# centre of mass
# ---------------------------------------------------------------------------------------


def _centre(m):
    """``[B, d]``: centre of mass of the non-negative maps ``m[B, *map]`` (grid units)."""
    axes = tuple(range(1, m.ndim))
    total = m.sum(axis=axes)
    coords = []
    for d, size in enumerate(m.shape[1:]):
        shape = [1] * m.ndim
        shape[d + 1] = size
        grid = jnp.arange(size, dtype=m.dtype).reshape(shape)
        coords.append((m * grid).sum(axis=axes) / total)
    return jnp.stack(coords, axis=-1)


@jax.jit
def center_of_mass_shift_unchecked(a, b):
    """:func:`center_of_mass_shift` on validated maps (traceable; ``lipxai.metrics.sanity`` calls it under ``jit``)."""
    d = _centre(pixel_map(jnp.abs(a))) - _centre(pixel_map(jnp.abs(b)))
    return nan_unless(finite_in(a, b), jnp.sqrt((d * d).sum(-1)))


def center_of_mass_shift(a, b):
    r"""Distance between the centres of mass of the saliency maps :math:`|a|` and :math:`|b|`,

    .. math:: \Big\| \frac{\sum_p |a_p|\, p}{\sum_p |a_p|} - \frac{\sum_p |b_p|\, p}
              {\sum_p |b_p|} \Big\|_2,

    with :math:`p` the (integer) coordinates of the pixels and :math:`|a_p|` the absolute
    attributions summed over the channels.  Ghorbani, Abid & Zou 2019 (their "center
    attack" moves it).  In pixels; 0 for identical maps.  NaN when a map is zero or not
    finite.

    Args:
      a, b: floating attributions of the same shape ``[B, ...]`` (pixel maps: module
        docstring).
    """
    a, b = _pair(a, b)
    return center_of_mass_shift_unchecked(a, b)
