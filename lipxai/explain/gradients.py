"""Plain gradient attributions: saliency, gradient x input and the SmoothGrad family.

Every method is a pure function of ``(fn, x, target)`` where ``fn`` is a *batched* model
function ``x[B, ...] -> logits[B, C]`` and ``target`` is ``int[B]``; attributions have the
shape of ``x``.

Per-example gradients
---------------------
The gradient of ``logits[b, target[b]]`` with respect to ``x[b]`` is computed, for the
whole batch at once, as the gradient of ``sum_b fn(x)[b, target[b]]`` with respect to ``x``.
This is exact only if examples do not interact through ``fn`` (no batch norm in training
mode, no attention across the batch, ...).  For functions where they may, pass
``per_example=True``: ``fn`` is then applied to one example at a time (``fn(x[b][None])``)
under ``jax.vmap``, which is exact for any ``fn`` (and usually a bit slower).

Chunking
--------
SmoothGrad-like methods evaluate gradients at ``samples`` noisy copies of the batch.  They
never materialise ``samples x B`` inputs at once: the samples are processed in chunks of
``batch_size`` samples, one chunk after the other (a ``lax.scan``: see ``chunked_reduce``),
each chunk evaluated as one batch of ``batch_size * B`` examples.  ``batch_size=None`` uses
:func:`default_chunk` (at most :data:`DEFAULT_CHUNK` samples).

CPU
---
On the CPU backend every method rewrites the convolutions of its gradient computation into
the forms XLA:CPU runs fastest (:func:`lipxai._core.xla_cpu.for_gradients`: explicit
kernel layouts, and padding that leaves them to XLA's multi-threaded kernel); the values are
unchanged (up to float rounding), and nothing changes on other backends.

All functions are jit-compatible (wrap them in ``jax.jit`` with ``fn`` closed over); input
validation happens before tracing.  Invalid examples get NaN attributions (the convention
of :mod:`lipxai.explain`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from lipxai._core.batched import (
    DEFAULT_CHUNK,
    check_batch_size,
    check_inputs,
    chunked_sum,
    default_chunk,
    flat,
    target_grad,
)
from lipxai._core.checks import floating_array, is_tracer, nan_unless, non_negative, positive_int
from lipxai._core.xla_cpu import for_gradients

__all__ = ["DEFAULT_CHUNK", "default_chunk", "gradient_x_input", "saliency", "smoothgrad",
           "squaregrad", "vargrad"]

# ---------------------------------------------------------------------------------------
# saliency, gradient x input
# ---------------------------------------------------------------------------------------


def saliency(fn, x, target, *, absolute: bool = False, per_example: bool = False):
    r"""Saliency map: the gradient :math:`\partial f_{t}(x) / \partial x`.

    Simonyan, Vedaldi & Zisserman 2014, "Deep inside convolutional networks".

    Args:
      fn: batched model function ``x[B, ...] -> logits[B, C]``.
      x: floating inputs ``[B, ...]``.
      target: ``int[B]``, the class whose logit is explained for each example.
      absolute: return ``|gradient|`` (Captum's ``Saliency(abs=True)``) instead of the
        signed gradient.
      per_example: compute each example's gradient with ``fn`` applied to that example
        alone (exact even when examples interact through ``fn``; see module docstring).

    Returns:
      the attribution, shaped like ``x`` (NaN for an invalid example: :mod:`lipxai.explain`).
    """
    x, target, valid = check_inputs(fn, x, target)
    _, grads = for_gradients(target_grad(fn, per_example))(x, target)
    return nan_unless(valid, jnp.abs(grads) if absolute else grads)


def gradient_x_input(fn, x, target, *, per_example: bool = False):
    r"""Gradient times input: :math:`x \odot \partial f_t(x) / \partial x`.

    Shrikumar et al. 2016, "Not just a black box"; Captum's ``InputXGradient``.
    Arguments as in :func:`saliency`.
    """
    x, target, valid = check_inputs(fn, x, target)
    _, grads = for_gradients(target_grad(fn, per_example))(x, target)
    return nan_unless(valid, x * grads)


# ---------------------------------------------------------------------------------------
# SmoothGrad family
# ---------------------------------------------------------------------------------------


def _noisy_moments(fn, x, target, key, samples, noise, batch_size, noise_samples, per_example,
                   powers=(1, 2)):
    """Validate, then return ``mean_s g_s**p`` over noisy gradients for each ``p`` in
    ``powers`` (1 and/or 2; only those are computed), NaN for invalid examples (and for all
    when a traced ``noise`` is negative or not finite)."""
    x, target, valid = check_inputs(fn, x, target)
    batch_size = check_batch_size(batch_size)
    noise = non_negative("noise", noise)
    if noise_samples is not None:
        noise_samples = floating_array("noise_samples", noise_samples)
        if noise_samples.ndim != x.ndim + 1 or tuple(noise_samples.shape[1:]) != tuple(x.shape):
            raise ValueError(
                f"noise_samples must have shape (samples,) + {tuple(x.shape)}, "
                f"got {tuple(noise_samples.shape)}"
            )
        samples = positive_int("samples (the length of noise_samples)", noise_samples.shape[0])
        noise_samples = noise_samples.astype(x.dtype)
        finite = jnp.isfinite(noise_samples).reshape(samples, x.shape[0], math.prod(x.shape[1:]))
        valid = valid & jnp.all(finite, axis=(0, 2))
    else:
        samples = positive_int("samples", samples)
        if key is None:
            raise ValueError(
                "key must be a jax.random key when noise_samples is not given, got None"
            )
        if not is_tracer(key) and not hasattr(key, "shape"):
            raise TypeError(f"key must be a jax.random key, got {type(key).__name__}")
        keys = jax.random.split(key, samples)

    grad = target_grad(fn, per_example)
    scale = jnp.asarray(noise, x.dtype)
    valid = valid & jnp.isfinite(scale) & (scale >= 0)

    def chunk_fn(idx):
        c = idx.shape[0]
        if noise_samples is not None:
            eps = noise_samples[idx]
        else:
            eps = jax.vmap(lambda k: jax.random.normal(k, x.shape, x.dtype))(keys[idx])
        z = x[None] + scale * eps
        _, g = grad(flat(z), jnp.tile(target, c))
        g = g.reshape(z.shape)
        return tuple((g if p == 1 else g * g).sum(0) for p in powers)

    chunk = default_chunk(samples, x.shape) if batch_size is None else batch_size
    return nan_unless(valid, tuple(s / samples for s in chunked_sum(chunk_fn, samples, chunk)))


_NOISE_DOC = """
    Args:
      fn: batched model function ``x[B, ...] -> logits[B, C]``.
      x: floating inputs ``[B, ...]``.
      target: ``int[B]``.
      key: ``jax.random`` key drawing the noise (sample ``s`` uses ``split(key, samples)[s]``,
        so the result does not depend on ``batch_size``).  Not used when ``noise_samples``
        is given.
      samples: number of noisy copies ``S >= 1``.
      noise: standard deviation of the Gaussian noise added to ``x`` (in input units, as
        Captum's ``NoiseTunnel(stdevs=noise)``), finite and ``>= 0``.
      batch_size: number of noisy copies evaluated together (each chunk is one call of
        ``fn`` on ``batch_size * B`` examples); ``None`` uses :func:`default_chunk`
        (at most ``DEFAULT_CHUNK``).
      noise_samples: optional explicit standard-normal draws ``eps`` of shape
        ``(S,) + x.shape``; the noisy inputs are then ``x + noise * eps[s]`` and ``samples``
        is ``S``.  Lets results be compared with other libraries on the same noise.
      per_example: see :func:`saliency`.

    Returns:
      the attribution, shaped like ``x`` (NaN for an invalid example: :mod:`lipxai.explain`).
"""


def smoothgrad(
    fn,
    x,
    target,
    *,
    key=None,
    samples: int = 50,
    noise: float = 0.2,
    batch_size: int | None = None,
    noise_samples=None,
    per_example: bool = False,
):
    r"""SmoothGrad: the mean gradient over Gaussian-noised inputs,
    :math:`\frac1S \sum_s \nabla f_t(x + \sigma\epsilon_s)`.

    Smilkov et al. 2017, "SmoothGrad: removing noise by adding noise"; identical to Captum's
    ``NoiseTunnel(Saliency).attribute(nt_type="smoothgrad", abs=False)``.
    """
    (mean,) = _noisy_moments(
        fn, x, target, key, samples, noise, batch_size, noise_samples, per_example, powers=(1,)
    )
    return mean


def squaregrad(
    fn,
    x,
    target,
    *,
    key=None,
    samples: int = 50,
    noise: float = 0.2,
    batch_size: int | None = None,
    noise_samples=None,
    per_example: bool = False,
):
    r"""SmoothGrad-squared: the mean *squared* gradient over noisy inputs,
    :math:`\frac1S \sum_s (\nabla f_t(x + \sigma\epsilon_s))^2`.

    Hooker et al. 2019, "A benchmark for interpretability methods in deep neural networks";
    Captum's ``nt_type="smoothgrad_sq"``.
    """
    (mean_sq,) = _noisy_moments(
        fn, x, target, key, samples, noise, batch_size, noise_samples, per_example, powers=(2,)
    )
    return mean_sq


def vargrad(
    fn,
    x,
    target,
    *,
    key=None,
    samples: int = 50,
    noise: float = 0.2,
    batch_size: int | None = None,
    noise_samples=None,
    per_example: bool = False,
):
    r"""VarGrad: the (biased, 1/S) variance of the gradient over noisy inputs,
    :math:`\frac1S\sum_s g_s^2 - (\frac1S\sum_s g_s)^2`, clipped at 0 against rounding.

    Adebayo et al. 2018, "Local explanation methods for deep neural networks lack
    sensitivity to parameter values"; Captum's ``nt_type="vargrad"`` (same formula).
    """
    mean, mean_sq = _noisy_moments(
        fn, x, target, key, samples, noise, batch_size, noise_samples, per_example
    )
    return jnp.maximum(mean_sq - mean * mean, 0)


for _f in (smoothgrad, squaregrad, vargrad):
    _f.__doc__ += _NOISE_DOC
del _f
