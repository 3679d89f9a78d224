r"""Localisation metrics: does the attribution fall on the ground-truth region?

Every metric is a function of ``(attributions, masks)`` returning ``float[B]``, one score per
example.  ``attributions`` has the shape of ``x`` (``[B, ...]``, images NHWC); ``masks``
marks the ground-truth features (an object's segmentation or bounding box): a boolean or
numeric array (non-zero = inside) shaped like ``x``, or without the channel axis (``[B, H,
W]`` or ``[B, H, W, 1]`` for NHWC ``x``; for rank-2 ``x`` only ``x``'s shape).

Features.  With ``features="pixels"`` (default) a feature is a pixel: its attribution is the
sum over the channel (last) axis (of ``|a|`` when ``absolute=True``), and a pixel is inside
the mask when any of its channels is (a mask shaped like ``x`` is reduced with ``any``).
With ``features="elements"`` every entry of ``x`` is a feature and a channel-free mask
covers all the channels of its pixels.  For rank-2 inputs both are the same.  Ties in a
ranking keep the feature order (a stable sort).

Quantus.  The definitions are those of Quantus' ``PointingGame``, ``RelevanceMassAccuracy``,
``RelevanceRankAccuracy``, ``TopKIntersection``, ``AttributionLocalisation`` and ``AUC``
(Quantus 0.6) with ``features="pixels"`` on single-channel inputs (Quantus flattens the
attribution and the mask, which must have the same size), except where a docstring says
otherwise.  Their default max-normalisation does not change any of these scores.

Errors.  Masks of another shape, and masks that mark no feature of some example (where the
score is undefined; Quantus returns NaN), raise ``ValueError`` before tracing; when the
masks are traced (under a caller's ``jax.jit``) an empty mask gives NaN instead.  Each
function is a ``jax.jit`` with its shape parameters static.

NaN rule (:mod:`lipxai.metrics`): an example whose attribution, mask or human map holds a
NaN or an infinity scores NaN.
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lipxai._core.checks import floating_array, is_tracer, nan_unless, one_of, positive_int
from lipxai.metrics._common import (
    FEATURES,
    average_ranks,
    check_attribution_batch,
    descending_rank,
    feature_values,
    finite_in,
    map_shape,
    n_features,
    real_arg,
    spearman,
)

__all__ = [
    "attribution_localisation",
    "human_alignment",
    "pointing_game",
    "relevance_mass",
    "relevance_rank",
    "top_k_intersection",
]


# ---------------------------------------------------------------------------------------
# masks (validation before tracing)
# ---------------------------------------------------------------------------------------


def _mask_shapes(shape):
    shape = tuple(shape)
    if len(shape) >= 3:
        return (shape, shape[:-1], shape[:-1] + (1,))
    return (shape,)


def _features_of(m, shape, features, binary, xp):
    """``[B, F]`` feature values of a mask / map ``m`` of an accepted shape (``xp``: np/jnp)."""
    shape = tuple(shape)
    b = shape[0]
    if len(shape) < 3:
        return m.reshape(b, -1)
    if tuple(m.shape) == shape[:-1]:
        m = m[..., None]
    if features == "pixels":
        m = m.any(axis=-1) if binary else m.mean(axis=-1)
    else:
        m = xp.broadcast_to(m, shape)
    return m.reshape(b, -1)


def _check_map(name, m, shape, *, binary):
    """A mask (``binary``: boolean or numeric, non-zero = inside) or a continuous map
    (floating) of an accepted shape, as a jax array."""
    dtype = getattr(m, "dtype", None)
    if dtype is None:
        m = np.asarray(m)
        dtype = m.dtype
    if tuple(np.shape(m)) not in _mask_shapes(shape):
        allowed = " or ".join(str(s) for s in _mask_shapes(shape))
        raise ValueError(f"{name} must have shape {allowed} (the attributions' shape "
                         f"{tuple(shape)}, or without the channel axis), got "
                         f"{tuple(np.shape(m))}")
    if binary:
        if not (jnp.issubdtype(dtype, jnp.bool_) or jnp.issubdtype(dtype, jnp.number)):
            raise TypeError(f"{name} must be a boolean or numeric array, got dtype {dtype}")
        return jnp.asarray(m)
    return floating_array(name, m)


def _check_nonempty(name, m, shape, features):
    """Raise when a concrete mask marks no feature of some example."""
    if is_tracer(m):
        return
    counts = _features_of(np.asarray(m), shape, features, True, np).sum(-1)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        raise ValueError(f"{name} must mark at least one feature of every example; "
                         f"empty for examples {empty.tolist()}")


def _prepare(attributions, masks, features):
    """The attributions, the masks as ``bool[B, F]`` features (reduced outside the jitted
    metrics, so that every accepted mask shape shares one compilation) and ``bool[B]``, the
    examples whose attribution and mask are finite."""
    a = check_attribution_batch(attributions)
    one_of("features", features, FEATURES)
    m = _check_map("masks", masks, a.shape, binary=True)
    valid = finite_in(a, m)
    m = m != 0
    _check_nonempty("masks", m, a.shape, features)
    return a, _features_of(m, a.shape, features, True, jnp), valid


def _values(a, absolute, features):
    return feature_values(jnp.abs(a) if absolute else a, features)


def _nan_unless_valid(score, mask, valid):
    """The NaN rule, and NaN for an empty (traced) mask."""
    return nan_unless(valid & mask.any(-1), score)


# ---------------------------------------------------------------------------------------
# pointing game
# ---------------------------------------------------------------------------------------


def _dilate(m, tolerance):
    """Dilate the boolean maps ``m[B, *map]`` by a Euclidean ball of radius ``tolerance``."""
    nd = m.ndim - 1
    r = np.arange(-tolerance, tolerance + 1)
    grids = np.meshgrid(*([r] * nd), indexing="ij")
    ball = (sum(g * g for g in grids) <= tolerance * tolerance).astype(np.float32)
    spatial = "DHW"[3 - nd:]  # nd <= 3, checked before tracing
    dn = ("NC" + spatial, "OI" + spatial, "NC" + spatial)
    out = lax.conv_general_dilated(
        m[:, None].astype(jnp.float32), jnp.asarray(ball)[None, None], (1,) * nd, "SAME",
        dimension_numbers=dn)
    return out[:, 0] > 0.5


@functools.partial(jax.jit, static_argnames=("features", "absolute", "tolerance"))
def _pointing_game(a, mask, valid, *, features, absolute, tolerance):
    v = _values(a, absolute, features)
    inside = mask
    if tolerance:
        mshape = map_shape(a.shape)
        inside = _dilate(mask.reshape((a.shape[0],) + mshape), tolerance).reshape(mask.shape)
    best = v == v.max(-1, keepdims=True)
    hit = (best & inside).any(-1).astype(a.dtype)
    return _nan_unless_valid(hit, mask, valid)


def pointing_game(attributions, masks, *, features: str = "pixels", absolute: bool = False,
                  tolerance: int = 0):
    r"""Pointing game: 1 if the feature of largest attribution lies in the mask, else 0,

    .. math:: \mathrm{PG}(a, M) = \mathbb 1\big[\operatorname{argmax}_i a_i \in M\big].

    Zhang et al. 2018, "Top-down neural attention by excitation backprop" (IJCV); Quantus'
    ``PointingGame`` (``tolerance=0``, ``weighted=False``).  When several features share
    the maximum, a hit is scored if any of them is in the mask (as Quantus).  The mean over
    a dataset is the pointing accuracy.  NaN where the attribution or the mask is not finite
    (module docstring).

    Args:
      attributions: floating ``[B, ...]`` (shaped like ``x``).
      masks: ground truth (module docstring).
      features: ``"pixels"`` or ``"elements"`` (module docstring).
      absolute: point at the largest ``|a|`` instead of the largest ``a``.
      tolerance: a hit within ``tolerance`` pixels (Euclidean) of the mask also counts, as
        Zhang et al.'s 15-pixel tolerance (``features="pixels"`` only; default 0, as
        Quantus).
    """
    a, m, valid = _prepare(attributions, masks, features)
    if (not isinstance(tolerance, numbers.Integral) or isinstance(tolerance, bool)
            or tolerance < 0):
        raise ValueError(f"tolerance must be an integer >= 0, got {tolerance!r}")
    if tolerance and features != "pixels":
        raise ValueError("tolerance > 0 needs features='pixels'")
    if tolerance and len(map_shape(a.shape)) > 3:
        raise ValueError(f"tolerance > 0 needs pixel maps of at most 3 dimensions, got "
                         f"{map_shape(a.shape)}")
    return _pointing_game(a, m, valid, features=features, absolute=bool(absolute),
                          tolerance=int(tolerance))


# ---------------------------------------------------------------------------------------
# relevance mass / attribution localisation
# ---------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("features", "positive"))
def _relevance_mass(a, mask, valid, *, features, positive):
    v = feature_values(a, features)
    if positive:
        v = jnp.maximum(v, 0)
    score = jnp.where(mask, v, 0).sum(-1) / v.sum(-1)
    return _nan_unless_valid(score, mask, valid)


def relevance_mass(attributions, masks, *, features: str = "pixels", positive: bool = True):
    r"""Relevance mass accuracy: the share of the (positive) relevance that lies in the mask,

    .. math:: \mathrm{RMA}(a, M) = \frac{\sum_{i \in M} a_i^+}{\sum_i a_i^+},
              \qquad a_i^+ = \max(a_i, 0).

    Arras, Osman & Samek 2022, "CLEVR-XAI: a benchmark dataset for the ground truth
    evaluation of neural network explanations" (Information Fusion), who count positive
    relevance only; with ``features="pixels"`` the attribution is summed over the channels
    before taking its positive part.  ``positive=False`` uses the signed attribution, as
    Quantus' ``RelevanceMassAccuracy`` (which does not clip).  In ``[0, 1]`` (with
    ``positive``); NaN when no relevance is positive, or where the attribution or the mask
    is not finite.

    Args:
      attributions, masks, features: as :func:`pointing_game`.
      positive: keep only positive relevance (default, as Arras et al.).
    """
    a, m, valid = _prepare(attributions, masks, features)
    return _relevance_mass(a, m, valid, features=features, positive=bool(positive))


@functools.partial(jax.jit, static_argnames=("features", "absolute", "weighted"))
def _attribution_localisation(a, mask, valid, *, features, absolute, weighted):
    v = feature_values(jnp.abs(a) if absolute else jnp.maximum(a, 0), features)
    score = jnp.where(mask, v, 0).sum(-1) / v.sum(-1)
    if weighted:
        score = score * mask.shape[-1] / mask.sum(-1)
    return _nan_unless_valid(score, mask, valid)


def attribution_localisation(attributions, masks, *, features: str = "pixels",
                             absolute: bool = True, weighted: bool = False):
    r"""Attribution localisation: the share of the attribution magnitude in the mask,

    .. math:: \mu(a, M) = \frac{\sum_{i \in M} r_i}{\sum_i r_i}, \qquad
              r_i = |a_i| \ \text{(default) or}\ \max(a_i, 0),

    and, with ``weighted=True``, :math:`\mu_w = \mu \cdot N / |M|` (:math:`N` features): the
    ratio to the share a uniform attribution would get, so that 1 is chance level.
    Kohlbrenner et al. 2020, "Towards best practice in explaining neural network decisions
    with LRP" (IJCNN); Quantus' ``AttributionLocalisation`` (default ``abs=True``;
    ``absolute=False`` is its ``positive_attributions=True``).  The magnitude is taken per
    element, then summed over the channels (``features="pixels"``).

    NaN where the attribution or the mask is not finite (module docstring).  Deviations from
    Quantus: no ``1e-9`` in the denominator (NaN for an all-zero attribution, Quantus 0);
    ``weighted`` divides by the mask's share :math:`|M|/N` as Kohlbrenner et al., where
    Quantus multiplies by a size ratio computed from the batch.

    Args:
      attributions, masks, features: as :func:`pointing_game`.
      absolute: ``|a|`` (default) or the positive part of ``a``.
      weighted: divide by the mask's share of the features.
    """
    a, m, valid = _prepare(attributions, masks, features)
    return _attribution_localisation(a, m, valid, features=features,
                                     absolute=bool(absolute), weighted=bool(weighted))


# ---------------------------------------------------------------------------------------
# rankings
# ---------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("features", "absolute"))
def _relevance_rank(a, mask, valid, *, features, absolute):
    rank = descending_rank(_values(a, absolute, features))
    size = mask.sum(-1, keepdims=True)
    hits = (mask & (rank < size)).sum(-1)
    return _nan_unless_valid(hits.astype(a.dtype) / size[:, 0], mask, valid)


def relevance_rank(attributions, masks, *, features: str = "pixels", absolute: bool = False):
    r"""Relevance rank accuracy: the share of the :math:`K = |M|` highest-ranked features that
    lie in the mask,

    .. math:: \mathrm{RRA}(a, M) = |T_K(a) \cap M| \,/\, K,

    with :math:`T_K(a)` the indices of the :math:`K` largest :math:`a_i`.  Arras, Osman &
    Samek 2022 (CLEVR-XAI); Quantus' ``RelevanceRankAccuracy``.  In ``[0, 1]``; NaN where
    the attribution or the mask is not finite.

    Args:
      attributions, masks, features: as :func:`pointing_game`.
      absolute: rank by ``|a|`` (summed over the channels) instead of ``a``.
    """
    a, m, valid = _prepare(attributions, masks, features)
    return _relevance_rank(a, m, valid, features=features, absolute=bool(absolute))


@functools.partial(jax.jit, static_argnames=("k", "features", "absolute"))
def _top_k_intersection(a, mask, valid, *, k, features, absolute):
    rank = descending_rank(_values(a, absolute, features))
    hits = (mask & (rank < k)).sum(-1).astype(a.dtype)
    return _nan_unless_valid(hits / k, mask, valid)


def top_k_intersection(attributions, masks, k: int, *, features: str = "pixels",
                       absolute: bool = False):
    r"""Top-k intersection: the share of the ``k`` highest-ranked features in the mask,

    .. math:: \mathrm{TKI}(a, M) = |T_k(a) \cap M| \,/\, k.

    Theiner, Müller-Budack & Ewerth 2022, "Interpretable semantic photo geolocation"
    (WACV; arXiv 2021); Quantus' ``TopKIntersection`` (``concept_influence=False``).  In
    ``[0, 1]``; 1 when the top ``k`` are all in the mask; NaN where the attribution or the
    mask is not finite.  (To compare two attributions use
    :func:`lipxai.metrics.similarity.top_k_intersection`.)

    Args:
      attributions, masks, features, absolute: as :func:`relevance_rank`.
      k: ``1 <= k <= number of features``.
    """
    a, m, valid = _prepare(attributions, masks, features)
    k = positive_int("k", k)
    n = n_features(a.shape, features)
    if k > n:
        raise ValueError(f"k must be <= the number of features {n} ({features}), got {k}")
    return _top_k_intersection(a, m, valid, k=k, features=features, absolute=bool(absolute))


# ---------------------------------------------------------------------------------------
# human alignment
# ---------------------------------------------------------------------------------------


def _binarise(h, threshold):
    return h > threshold * h.max(-1, keepdims=True)


def _auc(v, positive):
    """ROC-AUC of the scores ``v[B, F]`` for the labels ``positive[B, F]`` (Mann-Whitney,
    ties counted one half, as ``sklearn.metrics.roc_auc_score``)."""
    ranks = average_ranks(v)
    n_pos = positive.sum(-1).astype(v.dtype)
    n_neg = positive.shape[-1] - n_pos
    u = jnp.where(positive, ranks, 0).sum(-1) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


@functools.partial(jax.jit, static_argnames=("measure", "features", "absolute"))
def _human_alignment(a, h, threshold, valid, *, measure, features, absolute):
    v = _values(a, absolute, features)
    score = spearman(v, h) if measure == "spearman" else _auc(v, _binarise(h, threshold))
    return nan_unless(valid, score)


def human_alignment(attributions, human_maps, *, measure: str = "spearman",
                    features: str = "pixels", absolute: bool = False, threshold: float = 0.5):
    r"""Agreement of the attribution with a continuous human saliency map :math:`h`
    (eye-tracking fixation densities, annotators' importance maps, ...):

    * ``measure="spearman"``: Spearman's rank correlation of the attribution and the human
      map over the features, :math:`\rho(a, h)` (ties get their average rank), in
      ``[-1, 1]``;
    * ``measure="auc"``: the ROC-AUC of the attribution as a score for the *salient*
      features :math:`S = \{i : h_i > \tau \max_j h_j\}` (``threshold`` :math:`\tau`),

      .. math:: \mathrm{AUC}(a, S) = \frac{1}{|S|\,|\bar S|}\sum_{i\in S}\sum_{j\notin S}
                \Big(\mathbb 1[a_i > a_j] + \tfrac12\,\mathbb 1[a_i = a_j]\Big),

      in ``[0, 1]``, 0.5 at chance; with a binary map it is Quantus' ``AUC`` (ROC-AUC of the
      attribution against the segmentation mask, ``sklearn.metrics.roc_curve``).

    As in saliency benchmarks (Bylinskii et al. 2019, "What do different evaluation metrics
    tell us about saliency models?", IEEE TPAMI) and human-alignment studies of explanations
    (e.g. Fel et al. 2022, "Harmonizing the object recognition strategies of deep neural
    networks with humans", NeurIPS).  Higher is more aligned.  With ``features="pixels"`` a
    human map shaped like ``x`` is averaged over the channels.

    Args:
      attributions: floating ``[B, ...]`` (shaped like ``x``).
      human_maps: floating maps of a shape accepted for masks (module docstring).
      measure: ``"spearman"`` (default) or ``"auc"``.
      features: ``"pixels"`` or ``"elements"`` (module docstring).
      absolute: compare ``|a|`` (summed over the channels) instead of ``a``.
      threshold: :math:`\tau \in [0, 1)` for ``"auc"``: the share of the map's maximum
        above which a feature is salient (default 0.5).

    Raises ``ValueError`` (when the maps are concrete) for a constant human map
    (``"spearman"``) or one whose binarisation marks no or every feature (``"auc"``).
    NaN for an example whose attribution or human map is not finite, and for every example
    when a traced ``threshold`` is not in ``[0, 1)`` (NaN rule of :mod:`lipxai.metrics`).
    """
    a = check_attribution_batch(attributions)
    one_of("features", features, FEATURES)
    one_of("measure", measure, ("spearman", "auc"))
    threshold, threshold_ok = real_arg("threshold", threshold)
    if not is_tracer(threshold) and threshold >= 1:
        raise ValueError(f"threshold must be a number in [0, 1), got {threshold!r}")
    h = _check_map("human_maps", human_maps, a.shape, binary=False).astype(a.dtype)
    valid = finite_in(a, h) & threshold_ok & (threshold < 1)
    if not (is_tracer(h) or is_tracer(threshold)):  # where finite: a NaN map gives NaN
        hv = _features_of(np.asarray(h), a.shape, features, False, np)
        finite = np.isfinite(hv).all(-1)
        if measure == "spearman":
            bad = np.flatnonzero(finite & (hv.min(-1) == hv.max(-1)))
            what = "is constant"
        else:
            s = _binarise(hv, threshold).sum(-1)
            bad = np.flatnonzero(finite & ((s == 0) | (s == hv.shape[-1])))
            what = "marks no or every feature as salient (threshold)"
        if bad.size:
            raise ValueError(f"human_maps {what} for examples {bad.tolist()}: "
                             f"the {measure} alignment is undefined")
    h = _features_of(h, a.shape, features, False, jnp)
    return _human_alignment(a, h, jnp.asarray(threshold, a.dtype), valid, measure=measure,
                            features=features, absolute=bool(absolute))
