r"""Robustness metrics: how much does an explanation change when the input barely does?

Every metric is a function of ``(explain_fn, x, target)`` where ``explain_fn(x, target) ->
attributions`` is a *batched* explanation function (attributions shaped like ``x``; e.g.
``lambda x, t: lipxai.explain.saliency(fn, x, t)``), and returns ``float[B]``.

The explanation is recomputed at ``samples`` perturbed copies of the batch; they are
evaluated in chunks of ``batch_size`` copies (each chunk one call of ``explain_fn`` on
``batch_size * B`` examples with the targets tiled; ``None`` uses
:func:`lipxai.explain.default_chunk`).  Perturbation ``s`` is drawn from
``jax.random.split(key, samples)[s]`` with the shape of one example and shared by every
example of the batch, so scores do not depend on the batch nor on ``batch_size``.

``explain_fn`` must be traceable by JAX; the computation is a ``jax.jit`` with
``explain_fn`` static: pass the same object to reuse the compilation.

NaN rule (:mod:`lipxai.metrics`): an example whose input or explanation (at ``x`` or at a
perturbed copy) holds a NaN or an infinity scores NaN, so does one whose target
``explain_fn`` marks invalid with a NaN explanation (as :mod:`lipxai.explain` does for a
target out of range under ``jit``), and every example when a traced ``radius`` / ``noise``
is not finite and ``> 0``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lipxai._core.batched import flat
from lipxai._core.checks import nan_unless, one_of, positive_int
from lipxai.metrics._common import (
    NORMS,
    check_explain_fn,
    check_key,
    chunk_of,
    chunked,
    draws,
    finite_in,
    norm,
    normalised,
    real_arg,
    spearman,
)

__all__ = ["max_sensitivity", "avg_sensitivity", "local_lipschitz_estimate", "stability"]


@functools.partial(
    jax.jit,
    static_argnames=("explain_fn", "measure", "reduce", "normalise", "absolute", "chunk"),
)
def _resample(explain_fn, x, target, deltas, valid, *, measure, reduce, normalise, absolute,
              chunk):
    """``reduce_s measure(a(x), a(x + delta_s), delta_s)`` over the perturbations ``deltas``
    (``[S, *x.shape[1:]]``, shared by the examples); NaN unless ``valid``, ``x`` and the
    explanations finite."""
    b = x.shape[0]
    a0 = normalised(explain_fn(x, target), normalise, absolute).reshape(b, -1)
    samples = deltas.shape[0]

    def chunk_fn(idx):
        c = idx.shape[0]
        delta = deltas[idx]  # [c, ...]
        z = x[None] + delta[:, None]
        a = explain_fn(flat(z), jnp.tile(target, c))
        a = normalised(a, normalise, absolute).reshape(c, b, -1)
        s = measure(a0[None], a, delta.reshape(c, 1, -1))  # [c, B]
        s = jnp.where(jnp.isfinite(a).all(-1), s, jnp.nan)  # a perturbed explanation
        return s.max(0) if reduce == "max" else s.sum(0)

    total = chunked(chunk_fn, samples, chunk, "max" if reduce == "max" else "sum")
    return nan_unless(valid & finite_in(x, a0), total if reduce == "max" else total / samples)


def _check(explain_fn, x, target, key, samples):
    x, target = check_explain_fn(explain_fn, x, target)
    check_key(key)
    return x, target, positive_int("samples", samples)


def _sensitivity(explain_fn, x, target, key, radius, samples, norm_, normalise, absolute,
                 batch_size, reduce):
    x, target, samples = _check(explain_fn, x, target, key, samples)
    radius, radius_ok = real_arg("radius", radius, strict=True)
    one_of("norm", norm_, NORMS)

    def measure(a0, a, delta):
        return norm(a - a0, norm_) / norm(a0, norm_)

    chunk = chunk_of(batch_size, samples, x.shape)
    deltas = draws(key, samples, x.shape[1:], x.dtype, "uniform", radius)
    return _resample(explain_fn, x, target, deltas, radius_ok,
                     measure=_Measure(measure, ("sens", norm_)), reduce=reduce,
                     normalise=bool(normalise), absolute=bool(absolute), chunk=chunk)


class _Measure:
    """A hashable measure (its ``tag`` identifies it for the jit cache)."""

    def __init__(self, f, tag):
        self.f, self.tag = f, tag

    def __call__(self, *args):
        return self.f(*args)

    def __hash__(self):
        return hash(self.tag)

    def __eq__(self, other):
        return isinstance(other, _Measure) and other.tag == self.tag


_SENS_DOC = """
    Args:
      explain_fn: batched ``explain_fn(x, target) -> attributions`` (shaped like ``x``).
      x: floating inputs ``[B, ...]``.
      target: ``int[B]``.
      key: ``jax.random`` key (module docstring).
      radius: half-width :math:`r > 0` of the L-inf ball (Quantus' ``lower_bound``, 0.2).
      samples: number of perturbations ``>= 1`` (Quantus' ``nr_samples``, 200).
      norm: ``"l2"`` (Frobenius, Quantus' ``fro_norm``), ``"l1"`` or ``"linf"``; used in
        the numerator and the denominator.
      normalise, absolute: divide each explanation by its maximum ``|a|`` / take ``|a|``
        before comparing (both off by default, as Quantus).
      batch_size: perturbations evaluated together per chunk.
"""


def max_sensitivity(explain_fn, x, target, *, key, radius: float = 0.2, samples: int = 200,
                    norm: str = "l2", normalise: bool = False, absolute: bool = False,
                    batch_size: int | None = None):
    r"""Max-sensitivity: the largest relative change of the explanation under uniform noise
    in an L-inf ball,

    .. math:: \mathrm{SENS}_{\max}(x) = \max_{s} \frac{\|a(x + \delta_s) - a(x)\|}{\|a(x)\|},
              \qquad \delta_s \sim \mathcal U([-r, r]^D).

    Yeh et al. 2019, "On the (in)fidelity and sensitivity of explanations" (NeurIPS);
    defined as Quantus' ``MaxSensitivity`` with its defaults (``batch_uniform_noise`` with
    ``lower_bound=0.2``, no clipping, ``difference`` then ``fro_norm`` divided by the
    explanation's ``fro_norm``, 200 samples; Quantus' optional
    ``return_nan_when_prediction_changes`` is not implemented).  Lower is better; inf or NaN
    when :math:`a(x) = 0`; NaN for an invalid example or ``radius`` (module docstring).
    """
    return _sensitivity(explain_fn, x, target, key, radius, samples, norm, normalise,
                        absolute, batch_size, "max")


def avg_sensitivity(explain_fn, x, target, *, key, radius: float = 0.2, samples: int = 200,
                    norm: str = "l2", normalise: bool = False, absolute: bool = False,
                    batch_size: int | None = None):
    r"""Avg-sensitivity: as :func:`max_sensitivity` with the mean over the perturbations,
    :math:`\frac1S \sum_s \|a(x + \delta_s) - a(x)\| / \|a(x)\|`.

    Yeh et al. 2019; Quantus' ``AvgSensitivity`` (same defaults).  NaN for an invalid
    example or ``radius`` (module docstring).
    """
    return _sensitivity(explain_fn, x, target, key, radius, samples, norm, normalise,
                        absolute, batch_size, "mean")


max_sensitivity.__doc__ += _SENS_DOC
avg_sensitivity.__doc__ += _SENS_DOC


def _lipschitz(a0, a, delta):
    return norm(a - a0, "l2") / (norm(delta, "l2") + 1e-10)


def local_lipschitz_estimate(explain_fn, x, target, *, key, noise: float = 0.1,
                             samples: int = 200, normalise: bool = True,
                             absolute: bool = False, batch_size: int | None = None):
    r"""Local Lipschitz estimate of the explanation, by random search:

    .. math:: \hat L(x) = \max_s \frac{\|a(x + \delta_s) - a(x)\|_2}{\|\delta_s\|_2 + 10^{-10}},
              \qquad \delta_s \sim \mathcal N(0, \sigma^2 \mathrm{Id}).

    Alvarez-Melis & Jaakkola 2018, "On the robustness of interpretability methods" (they
    maximise over a ball by optimisation; this samples, as Quantus'
    ``LocalLipschitzEstimate``, with its defaults: Gaussian noise of standard deviation
    0.1, 200 samples, Euclidean distances, ``1e-10``, explanations normalised by their
    maximum ``|a|``; here per example where Quantus' default divides by the batch's
    maximum).  Lower is better; NaN for an invalid example or ``noise`` (module docstring).

    Args:
      explain_fn, x, target, key, samples, absolute, batch_size: as :func:`max_sensitivity`.
      noise: standard deviation :math:`\sigma > 0` of the Gaussian perturbation.
      normalise: divide each explanation by its maximum ``|a|`` (default True, as Quantus).
    """
    x, target, samples = _check(explain_fn, x, target, key, samples)
    noise, noise_ok = real_arg("noise", noise, strict=True)
    chunk = chunk_of(batch_size, samples, x.shape)
    deltas = draws(key, samples, x.shape[1:], x.dtype, "normal", noise)
    return _resample(explain_fn, x, target, deltas, noise_ok,
                     measure=_Measure(_lipschitz, "lipschitz"), reduce="max",
                     normalise=bool(normalise), absolute=bool(absolute), chunk=chunk)


def _spearman(a0, a, delta):
    return spearman(jnp.broadcast_to(a0, a.shape), a)


def stability(explain_fn, x, target, *, key, noise: float = 0.1, samples: int = 20,
              absolute: bool = False, batch_size: int | None = None):
    r"""Stability: the mean Spearman rank correlation between the explanation and the
    explanations of Gaussian-noised inputs,

    .. math:: \mathrm{Stab}(x) = \frac1S\sum_s \rho\big(a(x), a(x + \delta_s)\big),
              \qquad \delta_s \sim \mathcal N(0, \sigma^2\mathrm{Id}),

    with :math:`\rho` Spearman's rank correlation over the features (ties get their average
    rank, as ``scipy.stats.spearmanr``).  As used to compare the saliency maps of
    1-Lipschitz (OTNN) and unconstrained networks in Serrurier et al. 2023, "On the
    explainable properties of 1-Lipschitz neural networks: an optimal transport
    perspective" (NeurIPS); the defaults (``noise=0.1``, 20 samples) are lipxai's.  Higher
    is more stable (1: the ranking of the features does not change).  NaN when an
    explanation is constant, and for an invalid example or ``noise`` (module docstring).

    Args:
      explain_fn, x, target, key, batch_size: as :func:`max_sensitivity`.
      noise: standard deviation :math:`\sigma > 0` of the noise (input units).
      samples: number of noisy copies ``>= 1``.
      absolute: compare the rankings of ``|a|`` instead of ``a``.
    """
    x, target, samples = _check(explain_fn, x, target, key, samples)
    noise, noise_ok = real_arg("noise", noise, strict=True)
    chunk = chunk_of(batch_size, samples, x.shape)
    deltas = draws(key, samples, x.shape[1:], x.dtype, "normal", noise)
    return _resample(explain_fn, x, target, deltas, noise_ok,
                     measure=_Measure(_spearman, "spearman"), reduce="mean", normalise=False,
                     absolute=bool(absolute), chunk=chunk)
