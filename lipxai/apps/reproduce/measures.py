"""Measurements the experiments share: clean accuracy of a run, mean ± standard deviation over
seeds, the similarity of two attribution maps and of several, the digit mask of an image, and
the ratio of a counterfactual's distance to the closest boundary point's.

Each is a small function of arrays (host numpy), so that the experiments' numbers can be
checked by hand in tests/test_reproduce_measures.py.
"""

from __future__ import annotations

import itertools

import numpy as np

from lipxai.apps.certify import predict


def accuracy(run, n: int | None = None, split: str = "test") -> float:
    """The share of the first ``n`` examples of ``split`` (``None``: all) whose argmax logit is
    the label."""
    x, labels = run.split(split, n)
    return float(np.mean(np.argmax(predict(run.apply, x), axis=1) == np.asarray(labels)))


def accuracy_scope(n: int | None) -> str:
    """Where :func:`accuracy` was measured, for a table's caption."""
    return "the whole test split" if n is None else f"the first {n} test images"


def mean_std(values) -> dict:
    """``{"mean", "std", "n"}`` of the finite ``values`` (the standard deviation over seeds with
    ``ddof=1``, 0 for a single value; NaN for none)."""
    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    if not v.size:
        return dict(mean=float("nan"), std=float("nan"), n=0)
    return dict(mean=float(v.mean()), std=float(v.std(ddof=1)) if v.size > 1 else 0.0, n=int(v.size))


def cosine(a, b) -> np.ndarray:
    r"""``float[B]``: the cosine similarity of the flattened maps ``a[i]`` and ``b[i]``,
    :math:`\langle a, b\rangle / (\|a\| \|b\|)`; NaN where either map is all zero or not finite."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.sum(a * b, axis=1) / norms
    return np.where((norms > 0) & np.isfinite(norms), out, np.nan)


def mean_pairwise_cosine(maps) -> np.ndarray:
    """``float[B]``: the mean of :func:`cosine` over every pair of the maps in ``maps`` (a list
    of at least two ``[B, ...]`` arrays), e.g. integrated gradients from several baselines: 1
    when they agree up to scale, near 0 when unrelated."""
    if len(maps) < 2:
        raise ValueError(f"maps must hold at least two attribution batches, got {len(maps)}")
    return np.mean([cosine(a, b) for a, b in itertools.combinations(maps, 2)], axis=0)


def digit_mask(x) -> np.ndarray:
    """``bool[B, H, W]``: the pixels of the images ``x [B, H, W, C]`` that are not background
    (any channel > 0), the object mask of MNIST-like images on a black background."""
    return np.any(np.asarray(x) > 0, axis=-1)


def distance_ratio(distances, flipped, closest, found) -> np.ndarray:
    """``float[B]``: a counterfactual's distance divided by the closest boundary point's,
    ``distances / closest``, where the counterfactual ``flipped`` the prediction and the
    boundary search ``found`` a point at a distance > 0; NaN elsewhere.

    1 means the counterfactual lies on the closest boundary point's sphere; ``t`` for a
    transport step ``t`` times the exact distance.  Below 1 the search missed a closer point
    that the counterfactual found (the search is an upper bound on the true distance)."""
    distances, closest = np.asarray(distances, np.float64), np.asarray(closest, np.float64)
    ok = np.asarray(flipped, bool) & np.asarray(found, bool) & (closest > 0) & np.isfinite(distances)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, distances / np.where(ok, closest, 1.0), np.nan)
