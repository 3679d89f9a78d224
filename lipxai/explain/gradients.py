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
``batch_size`` samples, one chunk after the other (a ``lax.scan``: see ``_chunked_reduce``),
each chunk evaluated as one batch of ``batch_size * B`` examples.  ``batch_size=None`` uses
:func:`default_chunk` (at most :data:`DEFAULT_CHUNK` samples).

CPU
---
On the CPU backend every method rewrites the convolutions of its gradient computation into
the forms XLA:CPU runs fastest (:func:`lipxai._cpu_convolutions.for_gradients`: explicit
kernel layouts, and padding that leaves them to XLA's multi-threaded kernel); the values are
unchanged (up to float rounding), and nothing changes on other backends.

All functions are jit-compatible (wrap them in ``jax.jit`` with ``fn`` closed over); input
validation happens before tracing.  Invalid examples get NaN attributions (the convention
of :mod:`lipxai.explain`).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from lipxai._checks import (
    _is_tracer,
    finite_examples,
    floating_array,
    in_range,
    labels_for,
    nan_unless,
    non_empty,
    non_negative,
    positive_int,
)
from lipxai._cpu_convolutions import for_gradient_loops, for_gradients

__all__ = ["saliency", "gradient_x_input", "smoothgrad", "vargrad", "squaregrad", "default_chunk"]

#: Upper bound on the number of path steps / noise samples evaluated together in one chunk
#: when ``batch_size=None``, and the default on accelerators: at most ``DEFAULT_CHUNK * B``
#: examples (inputs, activations and their gradients) are materialised at once.  On CPU the
#: default is usually smaller: see :func:`default_chunk`.
DEFAULT_CHUNK = 16

#: On CPU, :func:`default_chunk` aims at chunks of about this many input elements
#: (``chunk * x.size``; 2**17 = 167 MNIST images): the gradient of a small CNN costs more
#: per example in larger batches once its activations leave the cache.
CPU_CHUNK_ELEMENTS = 2**17


def default_chunk(n: int, x_shape) -> int:
    """The chunk (path steps / noise samples per chunk) that ``batch_size=None`` uses.

    For ``n`` steps or samples of inputs of shape ``x_shape`` (``[B, ...]``):

    * on accelerators, ``min(DEFAULT_CHUNK, n)``;
    * on CPU, the largest chunk of at most :data:`CPU_CHUNK_ELEMENTS` input elements
      (``chunk * x.size``), at least 1 and at most :data:`DEFAULT_CHUNK`, then balanced over
      the chunks it needs: ``ceil(n / ceil(n / chunk))``.

    So the default materialises at most ``DEFAULT_CHUNK * B`` noisy inputs / path points
    (with the model's activations and their gradients for them) at once on every backend,
    and on CPU about ``max(B, CPU_CHUNK_ELEMENTS / example size)`` examples.

    Measured with benchmarks/attributions.py (its MNIST CNN, 2 shared Xeon cores, load 1.4
    to 1.6, medians of 5 interleaved calls), chunks in a ``lax.scan`` with the convolution
    kernels laid out for XLA:CPU (see :func:`_chunked_reduce`), ms per image at batch 128:
    IG-64 13.6 / 20.1 / 20.6 / 21.7 / 46.3 with 1 / 8 / 16 / 32 / 64 steps per chunk
    (Captum 15.4 with ``internal_batch_size`` of one step, 28.5 with 16); SmoothGrad-32 6.9 /
    10.6 / 11.0 / 11.3 with 1 / 8 / 16 / 32 samples (Captum 7.9 with ``nt_samples_batch_size``
    1, 14.9 with 16).  At batch 16: IG-64 13.7 / 14.4 / 15.3 / 20.0 with 8 / 10 / 16 / 32
    steps, SmoothGrad-32 7.1 / 8.5 / 11.1 with 8 / 16 / 32 samples.  Smaller chunks are faster
    while a chunk's activations stay in the cache, so batch 128 gets chunks of 1 step or
    sample, batch 16 chunks of 10 steps for IG-64 and 8 samples for SmoothGrad-32.  (The
    previous default, up to 8 chunks unrolled in the traced program to avoid the slow loop
    kernel, took 20.7 ms per image for IG-64 at batch 128.)
    """
    n = positive_int("n", n)
    if jax.default_backend() != "cpu":
        return min(DEFAULT_CHUNK, n)
    chunk = max(1, min(DEFAULT_CHUNK, n, CPU_CHUNK_ELEMENTS // max(1, math.prod(x_shape))))
    return -(-n // -(-n // chunk))


# ---------------------------------------------------------------------------------------
# shared helpers (also used by lipxai.explain.integrated)
# ---------------------------------------------------------------------------------------


def _check_inputs(fn, x, target):
    """Validate ``x`` (floating, a non-empty batch) and ``target`` (int[B] in [0, C), checked
    when concrete); return ``(x, target, valid)`` with ``valid: bool[B]`` the examples whose
    input is finite and whose target is a class (:mod:`lipxai.explain`'s NaN convention)."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    x = non_empty("x", floating_array("x", x, min_rank=2))
    out = jax.eval_shape(fn, jax.ShapeDtypeStruct(x.shape, x.dtype))
    out_shape = tuple(getattr(out, "shape", ()))
    if len(out_shape) != 2 or out_shape[0] != x.shape[0]:
        raise ValueError(
            f"fn must map x of shape {tuple(x.shape)} to logits of shape ({x.shape[0]}, C), "
            f"got output shape {out_shape}"
        )
    target = labels_for("target", target, out_shape[1], x.shape[0])
    return x, target, finite_examples(x) & in_range(target, out_shape[1])


def _check_batch_size(batch_size):
    if batch_size is None:
        return None
    return positive_int("batch_size", batch_size)


def _target_grad(fn, per_example: bool = False):
    """Return ``g(z, t) -> (logits[b, t[b]] : [N], d logit / d z : z.shape)``."""

    def batched(z, t):
        def total(z):
            logits = fn(z)
            picked = jnp.take_along_axis(logits, t[:, None].astype(jnp.int32), axis=1)[:, 0]
            return picked.sum(), picked

        (_, values), grads = jax.value_and_grad(total, has_aux=True)(z)
        return values, grads

    if not per_example:
        return batched

    def single(zi, ti):
        values, grads = batched(zi[None], ti[None])
        return values[0], grads[0]

    return jax.vmap(single)


def _target_logit(fn, per_example: bool = False):
    """Return ``f(z, t) -> logits[b, t[b]]`` (forward only)."""

    def batched(z, t):
        logits = fn(z)
        return jnp.take_along_axis(logits, t[:, None].astype(jnp.int32), axis=1)[:, 0]

    if not per_example:
        return batched
    return jax.vmap(lambda zi, ti: batched(zi[None], ti[None])[0])


def _chunked_reduce(chunk_fn, n: int, chunk: int | None, op=jnp.add, fill=0,
                    rewrite=for_gradient_loops):
    """``op``-reduce ``chunk_fn(idx_k)`` over consecutive index chunks covering ``range(n)``.

    ``chunk_fn(idx: int32[c])`` returns a pytree of arrays already reduced by ``op`` over its
    ``c`` indices; ``fill`` is ``op``'s identity.  Full chunks of size ``chunk`` run one after
    the other in a ``lax.scan`` (only one chunk's intermediates are live at a time); a shorter
    remainder chunk (when ``chunk`` does not divide ``n``) is evaluated once after them, so
    no work is wasted.

    The whole computation goes through ``rewrite``, one of the convolution rewrites of
    :mod:`lipxai._cpu_convolutions` (which change nothing off CPU): by default
    :func:`~lipxai._cpu_convolutions.for_gradient_loops`, as XLA:CPU compiles the input
    gradient of a convolution to its library kernel only outside loops unless the kernel is
    laid out explicitly (without it, SmoothGrad-32 on the benchmark CNN, batch 16, 2 chunks
    of 16 samples, load ~3, took 408 ms in the scan against 233 ms for all 32 samples at
    once); the explanation methods, whose chunks only take gradients, use
    :func:`~lipxai._cpu_convolutions.for_gradients`.
    """
    c = n if chunk is None else min(chunk, n)
    n_full, rem = divmod(n, c)
    comb = functools.partial(jax.tree_util.tree_map, op)

    def reduce(idx):
        if n_full == 1:
            total = chunk_fn(idx[0])
        else:
            init = jax.tree_util.tree_map(
                lambda s: jnp.full(s.shape, fill, s.dtype), jax.eval_shape(chunk_fn, idx[0])
            )
            total = lax.scan(lambda acc, i: (comb(acc, chunk_fn(i)), None), init, idx)[0]
        if rem:
            total = comb(total, chunk_fn(jnp.arange(n_full * c, n, dtype=jnp.int32)))
        return total

    return rewrite(reduce)(jnp.arange(n_full * c, dtype=jnp.int32).reshape(n_full, c))


def _chunked_sum(chunk_fn, n: int, chunk: int | None):
    """``sum_k chunk_fn(idx_k)`` over index chunks covering ``range(n)``, for chunks that take
    gradients (:func:`_chunked_reduce` with :func:`~lipxai._cpu_convolutions.for_gradients`)."""
    return _chunked_reduce(chunk_fn, n, chunk, rewrite=for_gradients)


def _flat(z):
    """[c, B, ...] -> [c * B, ...]."""
    return z.reshape((z.shape[0] * z.shape[1],) + z.shape[2:])


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
    x, target, valid = _check_inputs(fn, x, target)
    _, grads = for_gradients(_target_grad(fn, per_example))(x, target)
    return nan_unless(valid, jnp.abs(grads) if absolute else grads)


def gradient_x_input(fn, x, target, *, per_example: bool = False):
    r"""Gradient times input: :math:`x \odot \partial f_t(x) / \partial x`.

    Shrikumar et al. 2016, "Not just a black box"; Captum's ``InputXGradient``.
    Arguments as in :func:`saliency`.
    """
    x, target, valid = _check_inputs(fn, x, target)
    _, grads = for_gradients(_target_grad(fn, per_example))(x, target)
    return nan_unless(valid, x * grads)


# ---------------------------------------------------------------------------------------
# SmoothGrad family
# ---------------------------------------------------------------------------------------


def _noisy_moments(fn, x, target, key, samples, noise, batch_size, noise_samples, per_example,
                   powers=(1, 2)):
    """Validate, then return ``mean_s g_s**p`` over noisy gradients for each ``p`` in
    ``powers`` (1 and/or 2; only those are computed), NaN for invalid examples (and for all
    when a traced ``noise`` is negative or not finite)."""
    x, target, valid = _check_inputs(fn, x, target)
    batch_size = _check_batch_size(batch_size)
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
        if not _is_tracer(key) and not hasattr(key, "shape"):
            raise TypeError(f"key must be a jax.random key, got {type(key).__name__}")
        keys = jax.random.split(key, samples)

    grad = _target_grad(fn, per_example)
    scale = jnp.asarray(noise, x.dtype)
    valid = valid & jnp.isfinite(scale) & (scale >= 0)

    def chunk_fn(idx):
        c = idx.shape[0]
        if noise_samples is not None:
            eps = noise_samples[idx]
        else:
            eps = jax.vmap(lambda k: jax.random.normal(k, x.shape, x.dtype))(keys[idx])
        z = x[None] + scale * eps
        _, g = grad(_flat(z), jnp.tile(target, c))
        g = g.reshape(z.shape)
        return tuple((g if p == 1 else g * g).sum(0) for p in powers)

    chunk = default_chunk(samples, x.shape) if batch_size is None else batch_size
    return nan_unless(valid, tuple(s / samples for s in _chunked_sum(chunk_fn, samples, chunk)))


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
