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
``batch_size`` samples, one chunk after the other (a ``lax.scan``, unrolled on CPU: see
``_chunked_sum``), each chunk evaluated as one batch of ``batch_size * B`` examples.
``batch_size=None`` uses :func:`default_chunk` (at most :data:`DEFAULT_CHUNK` samples).

All functions are jit-compatible (wrap them in ``jax.jit`` with ``fn`` closed over); input
validation happens before tracing.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from lipxai._checks import _is_tracer, floating_array, labels_for, non_negative, positive_int

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

#: On the CPU backend, :func:`_chunked_sum` unrolls up to this many full chunks instead of
#: running a ``lax.scan`` (see there); more chunks use the scan.  Each unrolled chunk is one
#: more copy of the model's gradient to compile.
MAX_UNROLLED_CHUNKS = 8


def default_chunk(n: int, x_shape) -> int:
    """The chunk (path steps / noise samples per chunk) that ``batch_size=None`` uses.

    For ``n`` steps or samples of inputs of shape ``x_shape`` (``[B, ...]``):

    * on accelerators, ``min(DEFAULT_CHUNK, n)``;
    * on CPU, the number of chunks is the smallest that keeps each chunk to about
      :data:`CPU_CHUNK_ELEMENTS` input elements, but at most :data:`MAX_UNROLLED_CHUNKS`
      (so that they are unrolled, see :func:`_chunked_sum`), and the chunks are balanced:
      ``min(DEFAULT_CHUNK, ceil(n / chunks))``.  A chunk then holds about
      ``max(B, CPU_CHUNK_ELEMENTS / example size)`` examples, or ``ceil(n / 8) * B`` when
      that needs more than 8 chunks, and never more than ``DEFAULT_CHUNK * B`` (beyond
      ``n = 8 * DEFAULT_CHUNK`` the chunks of ``DEFAULT_CHUNK`` run in a ``lax.scan``).

    So the default materialises at most ``DEFAULT_CHUNK * B`` noisy inputs / path points
    (with the model's activations and their gradients for them) at once on every backend.

    Measured with benchmarks/attributions.py (its MNIST CNN; 2 shared Xeon cores, load 0.7
    to 1.9, medians of 5 interleaved calls): SmoothGrad-32 at batch 128 took 10.5 / 10.9 /
    11.3 / 11.9 ms per image with chunks of 4 / 8 / 16 / 32 samples (512 to 4096 examples;
    Captum at the same memory: 13.4 ms at 4, 15.4 at 16; in a ``lax.scan``, 16 chunks of 2
    samples took 1.7x as long as 8 unrolled chunks of 4, load ~6); at batch 16 (``--quick``,
    load ~1.2), 7.3 / 8.5 / 11.3 ms per image at 8 / 16 / 32.  IG-64 at batch 128: 20.5 /
    21.0 / 21.8 / 37.9 ms per image at 8 / 16 / 32 / 64 steps per chunk; at batch 16: 14.7 /
    15.2 / 16.7 / 21.6 / 23.5 at 8 / 10 / 16 / 32 / 64.  Chunks of 1 or 2 samples (128 or
    256 examples) were faster still in a sweep with 32 unrolled chunks (load ~5: 11.7 and
    14.7 ms per image against 18.6 at 4 samples), but the compile time grows with the number
    of unrolled chunks (IG-64 at batch 128, load ~5: 1.1 s for 1 chunk, 1.8 s for 4 or 8,
    2.6 s for 16, 5.8 s for 32), hence :data:`MAX_UNROLLED_CHUNKS`.  This gives batch 128
    chunks of 4 samples (8 chunks of 512 examples) for SmoothGrad-32 and 8 steps for IG-64;
    batch 16, 8 and 10.
    """
    n = positive_int("n", n)
    if jax.default_backend() != "cpu":
        return min(DEFAULT_CHUNK, n)
    per_step = math.prod(x_shape)
    chunks = -(-n * per_step // CPU_CHUNK_ELEMENTS)
    chunks = max(1, min(chunks, MAX_UNROLLED_CHUNKS))
    return min(DEFAULT_CHUNK, -(-n // chunks))


# ---------------------------------------------------------------------------------------
# shared helpers (also used by lipxai.explain.integrated)
# ---------------------------------------------------------------------------------------


def _check_inputs(fn, x, target):
    """Validate ``x`` (floating, batched) and ``target`` (int[B] in [0, C)); return arrays."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    x = floating_array("x", x, min_rank=2)
    out = jax.eval_shape(fn, jax.ShapeDtypeStruct(x.shape, x.dtype))
    out_shape = tuple(getattr(out, "shape", ()))
    if len(out_shape) != 2 or out_shape[0] != x.shape[0]:
        raise ValueError(
            f"fn must map x of shape {tuple(x.shape)} to logits of shape ({x.shape[0]}, C), "
            f"got output shape {out_shape}"
        )
    target = labels_for("target", target, out_shape[1], x.shape[0])
    return x, target


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


def _unroll_chunks(n_full: int) -> bool:
    return n_full <= MAX_UNROLLED_CHUNKS and jax.default_backend() == "cpu"


def _after(total, idx):
    """``idx``, made to depend on every leaf of ``total`` (the value is unchanged).

    Orders the unrolled chunks of :func:`_chunked_sum`: chunk ``k + 1`` cannot start before
    chunk ``k``'s sum is complete, so only one chunk's intermediates are live at a time.
    ``lax.optimization_barrier`` does not do this on XLA CPU (the barrier is removed before
    scheduling, and the scheduler then overlaps independent chunks: 888 MiB of temporaries
    instead of 123 MiB for 8 chunks of SmoothGrad on the benchmark CNN, batch 128), so the
    dependency is a real one: ``popcount(max of the leaf's bits) >> 7``, which is 0 for
    every value (a popcount is at most 64) and is not folded away by XLA.
    """
    dep = jnp.zeros((), jnp.uint32)
    for leaf in jax.tree_util.tree_leaves(total):
        word = lax.bitcast_convert_type(leaf, jnp.dtype(f"uint{8 * leaf.dtype.itemsize}"))
        count = lax.population_count(jnp.max(word))
        dep = dep | lax.shift_right_logical(count.astype(jnp.uint32), jnp.uint32(7))
    return idx + dep.astype(idx.dtype)


def _chunked_sum(chunk_fn, n: int, chunk: int | None):
    """``sum_k chunk_fn(idx_k)`` over consecutive index chunks covering ``range(n)``.

    ``chunk_fn(idx: int32[c])`` returns a pytree of arrays already reduced over its ``c``
    indices.  Full chunks of size ``chunk`` run one after the other; a shorter remainder
    chunk (when ``chunk`` does not divide ``n``) is evaluated once after them, so no work is
    wasted.  Only one chunk's intermediates are live at a time.

    The full chunks run in a ``lax.scan``, except on the CPU backend with at most
    :data:`MAX_UNROLLED_CHUNKS` of them: these are unrolled in the traced program, chunk
    ``k + 1``'s indices made to depend on the running sum (:func:`_after`) so that it cannot
    start before chunk ``k`` has been added (the same one-chunk-at-a-time memory as the
    scan).  Why: XLA CPU's convolution canonicalisation (``ConvCanonicalization``) only
    rewrites the convolutions of the entry computation, so inside a while loop (a scan body)
    the input gradient of a convolution (a convolution with a transposed, ``01oi`` kernel)
    is compiled to a naive elemental loop instead of the library kernel.  Measured on 2 busy
    CPU cores (load ~3), SmoothGrad-32 on the benchmark CNN (benchmarks/attributions.py),
    batch 16, 2 chunks of 16 samples: 408 ms in the scan, 233 ms for all 32 samples at once;
    unrolled, the 2 chunks take as long as the single one.
    """
    c = n if chunk is None else min(chunk, n)
    n_full, rem = divmod(n, c)
    add = functools.partial(jax.tree_util.tree_map, jnp.add)
    if n_full == 1 or _unroll_chunks(n_full):
        total = None
        for k in range(n_full):
            idx = jnp.arange(k * c, (k + 1) * c, dtype=jnp.int32)
            if total is None:
                total = chunk_fn(idx)
            else:
                total = add(total, chunk_fn(_after(total, idx)))
    else:
        idx = jnp.arange(n_full * c, dtype=jnp.int32).reshape(n_full, c)
        init = jax.tree_util.tree_map(
            lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(chunk_fn, idx[0])
        )

        def body(acc, i):
            return add(acc, chunk_fn(i)), None

        total, _ = lax.scan(body, init, idx)
    if rem:
        tail_idx = jnp.arange(n_full * c, n, dtype=jnp.int32)
        total = add(total, chunk_fn(_after(total, tail_idx)))
    return total


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
      the attribution, shaped like ``x``.
    """
    x, target = _check_inputs(fn, x, target)
    _, grads = _target_grad(fn, per_example)(x, target)
    return jnp.abs(grads) if absolute else grads


def gradient_x_input(fn, x, target, *, per_example: bool = False):
    r"""Gradient times input: :math:`x \odot \partial f_t(x) / \partial x`.

    Shrikumar et al. 2016, "Not just a black box"; Captum's ``InputXGradient``.
    Arguments as in :func:`saliency`.
    """
    x, target = _check_inputs(fn, x, target)
    _, grads = _target_grad(fn, per_example)(x, target)
    return x * grads


# ---------------------------------------------------------------------------------------
# SmoothGrad family
# ---------------------------------------------------------------------------------------


def _noisy_moments(fn, x, target, key, samples, noise, batch_size, noise_samples, per_example,
                   powers=(1, 2)):
    """Validate, then return ``mean_s g_s**p`` over noisy gradients for each ``p`` in
    ``powers`` (1 and/or 2; only those are computed)."""
    x, target = _check_inputs(fn, x, target)
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
    return tuple(s / samples for s in _chunked_sum(chunk_fn, samples, chunk))


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
        Captum's ``NoiseTunnel(stdevs=noise)``).
      batch_size: number of noisy copies evaluated together (each chunk is one call of
        ``fn`` on ``batch_size * B`` examples); ``None`` uses :func:`default_chunk`
        (at most ``DEFAULT_CHUNK``).
      noise_samples: optional explicit standard-normal draws ``eps`` of shape
        ``(S,) + x.shape``; the noisy inputs are then ``x + noise * eps[s]`` and ``samples``
        is ``S``.  Lets results be compared with other libraries on the same noise.
      per_example: see :func:`saliency`.

    Returns:
      the attribution, shaped like ``x``.
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
