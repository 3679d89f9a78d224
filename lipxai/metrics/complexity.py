r"""Complexity metrics: how concentrated is an attribution?

Functions of the attributions alone (``[B, ...]``, any shape per example) returning
``float[B]``.  They are defined exactly as Quantus' ``Sparseness``, ``Complexity`` and
``EffectiveComplexity`` (``quantus/metrics/complexity/*.py``, Quantus 0.6), including the
pre-processing of ``quantus.metrics.base.Metric``: with ``normalise=True`` (Quantus' default)
the attribution is first divided by its maximum absolute value, then, with ``absolute=True``
(Quantus' default), replaced by its absolute value.

One deviation, for batch independence: Quantus' default ``normalise_by_max`` divides by the
maximum over the *whole batch* (all axes of ``a_batch``), so a score depends on the other
examples of the batch (through the ``1e-7``/``1e-12`` offsets and, for the effective
complexity, the threshold).  Here the maximum is taken *per example*: the scores equal
Quantus' with ``normalise_func_kwargs={"normalise_axes": (1, 2, 3)}`` (image batches), or
on a batch of one.  An all-zero example is left as is (Quantus: all-zero batch only).

An example whose attribution holds a NaN or an infinity scores NaN (the NaN rule of
:mod:`lipxai.metrics`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lipxai._core.checks import finite_examples, nan_unless
from lipxai.metrics._common import check_attribution_batch, normalised, real_arg

__all__ = ["sparseness", "complexity", "effective_complexity"]


def _prepare(a, normalise: bool, absolute: bool):
    a = normalised(a, normalise, absolute)
    return a.reshape(a.shape[0], -1)


@functools.partial(jax.jit, static_argnames=("normalise", "absolute"))
def _sparseness(a, *, normalise, absolute):
    s = jnp.sort(_prepare(a, normalise, absolute) + 1e-7, axis=-1)
    n = s.shape[-1]
    i = jnp.arange(1, n + 1, dtype=s.dtype)
    return nan_unless(finite_examples(a), ((2 * i - n - 1) * s).sum(-1) / (n * s.sum(-1)))


def sparseness(attributions, *, normalise: bool = True, absolute: bool = True):
    r"""Sparseness: the Gini index of the (normalised, absolute) attribution.

    Chalasani et al. 2020, "Concise explanations of neural networks using adversarial
    training" (ICML); Quantus' ``Sparseness``.  With the :math:`N` values sorted increasingly,
    each offset by :math:`10^{-7}` as Quantus (so that an all-zero map is defined),

    .. math:: G(a) = \frac{\sum_{i=1}^N (2i - N - 1)\, a_{(i)}}{N \sum_{i=1}^N a_{(i)}}.

    0 for a constant map, :math:`1 - 1/N` for a one-hot map.  Higher is sparser.  NaN for
    an attribution that is not finite (module docstring).

    Args:
      attributions: floating ``[B, ...]``.
      normalise: divide each example by its maximum ``|a|`` first (module docstring).
      absolute: take ``|a|`` (after normalising).
    """
    a = check_attribution_batch(attributions)
    return _sparseness(a, normalise=bool(normalise), absolute=bool(absolute))


@functools.partial(jax.jit, static_argnames=("normalise", "absolute"))
def _complexity(a, *, normalise, absolute):
    v = _prepare(a, normalise, absolute)
    p = v / jnp.abs(v).sum(-1, keepdims=True)
    return nan_unless(finite_examples(a), -(p * jnp.log(p + 1e-12)).sum(-1))


def complexity(attributions, *, normalise: bool = True, absolute: bool = True):
    r"""Complexity: the entropy of the attribution seen as a distribution over features,

    .. math:: H(a) = -\sum_i p_i \log(p_i + 10^{-12}), \qquad p_i = a_i / \sum_j |a_j|.

    Bhatt, Weller & Moura 2020, "Evaluating and aggregating feature-based model
    explanations" (IJCAI); Quantus' ``Complexity`` (the same :math:`10^{-12}`).  0 for a
    one-hot map, :math:`\log N` for a constant one.  Lower is simpler.  NaN for an all-zero
    map (as Quantus) and for one that is not finite.

    Args: as :func:`sparseness`.
    """
    a = check_attribution_batch(attributions)
    return _complexity(a, normalise=bool(normalise), absolute=bool(absolute))


@functools.partial(jax.jit, static_argnames=("normalise", "absolute"))
def _effective_complexity(a, eps, eps_ok, *, normalise, absolute):
    v = _prepare(a, normalise, absolute)
    return nan_unless(finite_examples(a) & eps_ok, (v > eps).sum(-1).astype(v.dtype))


def effective_complexity(attributions, *, eps: float = 1e-5, normalise: bool = True,
                         absolute: bool = True):
    r"""Effective complexity: the number of features whose (normalised, absolute)
    attribution exceeds ``eps``, :math:`\#\{i : a_i > \varepsilon\}`.

    Nguyen & Rodríguez Martínez 2020, "On quantitative aspects of model interpretability";
    Quantus' ``EffectiveComplexity`` (default ``eps=1e-5``; with ``absolute=False`` only
    positive values count, as Quantus).  Returned as ``float[B]`` (integer values; NaN
    for an attribution that is not finite, and for every example when a traced ``eps`` is
    not finite and ``>= 0``).  Lower is simpler.

    Args:
      attributions, normalise, absolute: as :func:`sparseness`.
      eps: the threshold, ``>= 0``.
    """
    a = check_attribution_batch(attributions)
    eps, eps_ok = real_arg("eps", eps)
    return _effective_complexity(a, jnp.asarray(eps, a.dtype), eps_ok,
                                 normalise=bool(normalise), absolute=bool(absolute))
