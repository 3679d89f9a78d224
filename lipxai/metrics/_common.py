"""Shared helpers of :mod:`lipxai.metrics`: validation, chunking, scores, ranks, correlations.

Chunking
--------
Metrics that evaluate the model (or an explanation function) at ``n`` perturbed copies of the
batch (deletion steps, noise samples, random subsets, ...) never materialise ``n x B`` inputs
at once: :func:`chunked` evaluates them in chunks of ``batch_size`` copies, one chunk after
the other, each chunk one call of ``fn`` on ``batch_size * B`` examples.  It is
:func:`lipxai._core.batched.chunked_reduce` (chunks in a ``lax.scan``, the same
:func:`lipxai.explain.default_chunk` for ``batch_size=None``), for a sum or a
maximum; curves (one value per step) are collected as a
sum of zero-padded rows (:func:`chunked_rows`), which costs ``n x B`` floats per chunk.

Randomness
----------
Random draws (noise, subsets) are made from ``jax.random.split(key, n)[s]`` for draw ``s``
and have the shape of *one* example: draw ``s`` is shared by every example of the batch.
So an example's score does not depend on the batch it is evaluated in, nor on
``batch_size`` (scores of different examples are correlated through the shared draws; each
example's score is still an average over ``n`` independent draws).  The ``n`` draws are
generated up front by :func:`draws` / :func:`subsets` (``n`` copies of one example: less
memory than one chunk once ``B >= n / batch_size``), outside the metric's jitted
computation, so that the random generator (slow to compile on CPU) is compiled once per
``(n, example shape)`` whatever the batch and the chunking.
"""

from __future__ import annotations

import functools
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from lipxai._core.batched import check_batch_size, chunked_reduce, default_chunk
from lipxai._core.checks import (
    finite_examples,
    floating_array,
    is_tracer,
    labels_for,
    non_empty,
    non_negative,
    one_of,
    positive,
)
from lipxai.explain.integrated import make_baseline

__all__: list[str] = []

FEATURES = ("pixels", "elements")
NORMS = ("l1", "l2", "linf")


# ---------------------------------------------------------------------------------------
# validation (before tracing)
# ---------------------------------------------------------------------------------------


def check_attributions(attributions, x):
    """A floating array of exactly ``x``'s shape, cast to ``x.dtype``."""
    a = floating_array("attributions", attributions)
    if tuple(a.shape) != tuple(x.shape):
        raise ValueError(
            f"attributions must have the shape of x {tuple(x.shape)}, got {tuple(a.shape)}"
        )
    return a.astype(x.dtype)


def check_attribution_batch(attributions, *, min_rank: int = 2):
    """Attributions alone (complexity metrics): a floating ``[B, ...]`` array, ``B >= 1``."""
    return non_empty("attributions", floating_array("attributions", attributions,
                                                    min_rank=min_rank))


def check_key(key, name: str = "key"):
    if key is None:
        raise ValueError(f"{name} must be a jax.random key, got None")
    if not is_tracer(key) and not hasattr(key, "shape"):
        raise TypeError(f"{name} must be a jax.random key, got {type(key).__name__}")
    return key


def check_explain_fn(explain_fn, x, target):
    """Validate ``explain_fn(x, target) -> attributions`` shaped like ``x``; return arrays."""
    if not callable(explain_fn):
        raise TypeError(f"explain_fn must be callable, got {type(explain_fn).__name__}")
    x = non_empty("x", floating_array("x", x, min_rank=2))
    target = labels_for("target", target, np.iinfo(np.int32).max, x.shape[0])
    out = jax.eval_shape(
        explain_fn,
        jax.ShapeDtypeStruct(x.shape, x.dtype),
        jax.ShapeDtypeStruct(target.shape, target.dtype),
    )
    if tuple(getattr(out, "shape", ())) != tuple(x.shape):
        raise ValueError(
            f"explain_fn(x, target) must return attributions of x's shape {tuple(x.shape)}, "
            f"got {getattr(out, 'shape', type(out).__name__)}"
        )
    return x, target


def check_real(name: str, value, *, strict: bool = False):
    """A finite real number ``>= 0`` (``> 0`` if ``strict``) as a float (a static argument of
    the jitted metrics): the shared checks of ``lipxai._core.checks``, which reject NaN."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} 0, "
                         f"got {value!r}")
    return float((positive if strict else non_negative)(name, value))


def real_arg(name: str, value, *, strict: bool = False):
    """``(value, ok)`` for a real argument that may be traced (noise, radius, thresholds).

    A concrete ``value`` is checked by :func:`check_real` (``ok`` is True); a traced one
    passes unchecked and ``ok`` is a traced 0-d bool, whether it is finite and ``>= 0``
    (``> 0`` if ``strict``): the metric's scores are NaN where it is False (the NaN rule of
    :mod:`lipxai.metrics`)."""
    if not is_tracer(value):
        return check_real(name, value, strict=strict), True
    return value, jnp.isfinite(value) & ((value > 0) if strict else (value >= 0))


def finite_in(*arrays):
    """``bool[B]``: the examples with no NaN and no infinity in any of ``arrays`` (each
    ``[B, ...]``)."""
    return functools.reduce(jnp.logical_and, map(finite_examples, arrays))


def chunk_of(batch_size, n: int, x_shape) -> int:
    """The chunk (copies per chunk) for ``n`` copies of a batch of shape ``x_shape``."""
    batch_size = check_batch_size(batch_size)
    return default_chunk(n, x_shape) if batch_size is None else min(batch_size, n)


def baseline_of(x, baseline, *, key=None, sigma: float = 5.0):
    """The replacement values, shaped like ``x``.

    ``baseline`` is anything :func:`lipxai.explain.make_baseline` accepts (``None`` /
    ``"zeros"``, a number, ``"uniform"`` with ``key``, ``"blur"``, an array broadcastable to
    ``x``), or one of Quantus' per-example values: ``"black"`` (the example's minimum),
    ``"white"`` (its maximum), ``"mean"`` (its mean).
    """
    if isinstance(baseline, str) and baseline in ("black", "white", "mean"):
        axes = tuple(range(1, x.ndim))
        red = {"black": jnp.min, "white": jnp.max, "mean": jnp.mean}[baseline]
        return jnp.broadcast_to(red(x, axis=axes, keepdims=True), x.shape)
    if isinstance(baseline, str) and baseline not in ("zeros", "uniform", "blur"):
        one_of("baseline", baseline, ("zeros", "uniform", "blur", "black", "white", "mean"))
    return make_baseline(x, baseline, key=key, sigma=sigma)


# ---------------------------------------------------------------------------------------
# random draws
# ---------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("n", "shape", "dtype", "kind"))
def _draws(key, scale, *, n, shape, dtype, kind):
    keys = jax.random.split(key, n)
    if kind == "uniform":
        one = lambda k: jax.random.uniform(k, shape, dtype, minval=-scale, maxval=scale)
    else:
        one = lambda k: scale * jax.random.normal(k, shape, dtype)
    return jax.vmap(one)(keys)


def draws(key, n: int, shape, dtype, kind: str, scale):
    """``[n, *shape]``: draw ``s`` is ``U([-scale, scale])`` (``kind="uniform"``) or
    ``scale * N(0, 1)`` (``"normal"``) from ``jax.random.split(key, n)[s]``.

    Drawn up front, outside the metric's jitted computation: ``n`` copies of *one* example
    (less than one chunk of ``batch_size * B`` examples when ``B >= n / batch_size``), and
    the generator (whose compilation is slow on CPU) is compiled once per ``(n, shape)``,
    whatever the batch and the chunking.
    """
    return _draws(key, jnp.asarray(scale, dtype), n=n, shape=tuple(shape),
                  dtype=jnp.dtype(dtype), kind=kind)


@functools.partial(jax.jit, static_argnames=("n", "features", "size"))
def _subsets(key, *, n, features, size):
    def one(k):
        perm = jax.random.permutation(k, features)
        return jnp.zeros((features,), bool).at[perm[:size]].set(True)

    return jax.vmap(one)(jax.random.split(key, n))


def subsets(key, n: int, features: int, size: int):
    """``bool[n, features]``: row ``s`` marks ``size`` features drawn without replacement
    from ``jax.random.split(key, n)[s]`` (drawn up front, as :func:`draws`)."""
    return _subsets(key, n=n, features=features, size=size)


# ---------------------------------------------------------------------------------------
# chunking
# ---------------------------------------------------------------------------------------


def chunked(chunk_fn, n: int, chunk: int, reduce: str = "sum"):
    """``reduce_k chunk_fn(idx_k)`` over consecutive index chunks covering ``range(n)``.

    ``chunk_fn(idx: int32[c])`` returns a pytree already reduced (``reduce="sum"`` or
    ``"max"``) over its ``c`` indices: :func:`lipxai._core.batched.chunked_reduce`
    (full chunks in a ``lax.scan``, a shorter remainder chunk evaluated last).
    """
    op, fill = {"sum": (jnp.add, 0), "max": (jnp.maximum, -jnp.inf)}[reduce]
    return chunked_reduce(chunk_fn, n, chunk, op, fill)


def chunked_rows(rows_fn, n: int, chunk: int):
    """Stack ``rows_fn(idx) -> [c, ...]`` over ``idx`` covering ``range(n)``: ``[n, ...]``."""

    def chunk_fn(idx):
        rows = rows_fn(idx)
        return jnp.zeros((n,) + rows.shape[1:], rows.dtype).at[idx].set(rows)

    return chunked(chunk_fn, n, chunk, "sum")


# ---------------------------------------------------------------------------------------
# scores, features, ranks, statistics (traced)
# ---------------------------------------------------------------------------------------


def score(logits, target, output: str):
    """Per-example ``logits[b, t]``, ``softmax(logits)[b, t]`` or ``argmax == t`` (float)."""
    t = target[:, None].astype(jnp.int32)
    if output == "accuracy":
        return (jnp.argmax(logits, axis=1) == target).astype(logits.dtype)
    if output == "softmax":
        logits = jax.nn.softmax(logits, axis=1)
    return jnp.take_along_axis(logits, t, axis=1)[:, 0]


def model_score(fn, z, target, output: str):
    return score(fn(z), target, output)


def feature_values(a, features: str):
    """``[B, F]``: one value per feature (``"pixels"``: summed over the last axis)."""
    if features == "pixels" and a.ndim >= 3:
        a = a.sum(axis=-1)
    return a.reshape(a.shape[0], -1)


def feature_mask(mask, x_shape, features: str):
    """A ``[..., B, F]`` boolean feature mask broadcast to ``[..., *x_shape]``."""
    lead = mask.shape[:-1]
    if features == "pixels" and len(x_shape) >= 3:
        return jnp.broadcast_to(mask.reshape(lead + tuple(x_shape[1:-1]) + (1,)),
                                lead + tuple(x_shape[1:]))
    return mask.reshape(lead + tuple(x_shape[1:]))


def descending_rank(values):
    """``rank[b, i]``: position of feature ``i`` when sorted by decreasing value (0 = largest).

    Ties keep the feature order (a stable sort), as Quantus' ``np.argsort(-a)`` on distinct
    values.
    """
    order = jnp.argsort(-values, axis=-1, stable=True)
    n = values.shape[-1]
    ranks = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), values.shape)
    return jnp.zeros(values.shape, jnp.int32).at[
        jnp.arange(values.shape[0])[:, None], order
    ].set(ranks)


def norm(v, kind: str):
    """Per-row norm of ``v[..., D]`` (``l1``, ``l2`` = Frobenius, ``linf``)."""
    if kind == "l1":
        return jnp.abs(v).sum(-1)
    if kind == "linf":
        return jnp.abs(v).max(-1)
    return jnp.sqrt((v * v).sum(-1))


def pearson(a, b, axis: int = -1):
    """Pearson correlation along ``axis`` (two-pass; NaN when either side is constant)."""
    a = a - a.mean(axis=axis, keepdims=True)
    b = b - b.mean(axis=axis, keepdims=True)
    return (a * b).sum(axis) / jnp.sqrt((a * a).sum(axis) * (b * b).sum(axis))


def average_ranks(v):
    """1-based ranks of ``v[..., D]`` along the last axis, ties given their average rank
    (``scipy.stats.rankdata(method="average")``)."""

    def one(row):
        s = jnp.sort(row)
        lo = jnp.searchsorted(s, row, side="left")
        hi = jnp.searchsorted(s, row, side="right")
        return (lo + hi + 1).astype(row.dtype) / 2

    flat_v = v.reshape(-1, v.shape[-1])
    return jax.vmap(one)(flat_v).reshape(v.shape)


def spearman(a, b):
    """Spearman rank correlation of ``a[..., D]`` and ``b[..., D]`` (average ranks for ties)."""
    return pearson(average_ranks(a), average_ranks(b))


def normalised(a, normalise: bool, absolute: bool):
    """``a`` divided by its per-example maximum ``|a|`` (``normalise``), then ``|.|``
    (``absolute``): the preprocessing Quantus applies to explanations."""
    if normalise:
        a = max_normalise(a)
    return jnp.abs(a) if absolute else a


def max_normalise(a):
    """Per example, ``a / max|a|`` (an all-zero example is left as is)."""
    axes = tuple(range(1, a.ndim))
    m = jnp.max(jnp.abs(a), axis=axes, keepdims=True)
    return jnp.where(m > 0, a / jnp.where(m > 0, m, 1), a)


# ---------------------------------------------------------------------------------------
# pixel maps (similarity, localisation)
# ---------------------------------------------------------------------------------------


def map_shape(shape) -> tuple:
    """The shape of one example's pixel map: ``shape[1:-1]`` for rank >= 3 (the last axis
    holds the channels), ``shape[1:]`` for rank 2 -- the convention of :func:`feature_values`."""
    return tuple(shape[1:-1]) if len(shape) >= 3 else tuple(shape[1:])


def n_features(shape, features: str) -> int:
    """The number of features per example of a ``[B, ...]`` array (pixels or elements)."""
    return math.prod(map_shape(shape) if features == "pixels" else tuple(shape[1:]))


def pixel_map(a):
    """``[B, *map_shape]``: ``a`` summed over its channel (last) axis when of rank >= 3."""
    return a.sum(axis=-1) if a.ndim >= 3 else a
