"""What the attribution methods and the metrics share: input checks, target-logit gradients
and chunked reductions over steps / samples.

``fn`` is a *batched* model function ``x[B, ...] -> logits[B, C]`` and ``target`` is
``int[B]`` (:mod:`lipxai.explain`).  A reduction over ``n`` path steps or noise samples runs
in chunks of ``chunk`` of them, one chunk after the other in a ``lax.scan``, so at most
``chunk * B`` examples (with their activations and gradients) are live at a time.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from lipxai._core.checks import (
    finite_examples,
    floating_array,
    in_range,
    labels_for,
    non_empty,
    positive_int,
)
from lipxai._core.xla_cpu import for_gradient_loops, for_gradients

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

    On CPU smaller chunks are faster while a chunk's activations stay in the cache (chunks in
    a ``lax.scan`` with the convolution kernels laid out for XLA:CPU, see
    :func:`chunked_reduce`), so for MNIST-sized inputs batch 128 gets chunks of 1 step or
    sample, batch 16 chunks of 10 steps for IG-64 and 8 samples for SmoothGrad-32.  The
    chunk sweep behind this is in docs/results.md ("Design measurements behind library
    choices").
    """
    n = positive_int("n", n)
    if jax.default_backend() != "cpu":
        return min(DEFAULT_CHUNK, n)
    chunk = max(1, min(DEFAULT_CHUNK, n, CPU_CHUNK_ELEMENTS // max(1, math.prod(x_shape))))
    return -(-n // -(-n // chunk))


def check_inputs(fn, x, target):
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


def check_batch_size(batch_size):
    """``None`` (the default chunk), or a checked integer ``>= 1``."""
    if batch_size is None:
        return None
    return positive_int("batch_size", batch_size)


def target_grad(fn, per_example: bool = False):
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


def target_logit(fn, per_example: bool = False):
    """Return ``f(z, t) -> logits[b, t[b]]`` (forward only)."""

    def batched(z, t):
        logits = fn(z)
        return jnp.take_along_axis(logits, t[:, None].astype(jnp.int32), axis=1)[:, 0]

    if not per_example:
        return batched
    return jax.vmap(lambda zi, ti: batched(zi[None], ti[None])[0])


def chunked_reduce(chunk_fn, n: int, chunk: int | None, op=jnp.add, fill=0,
                    rewrite=for_gradient_loops):
    """``op``-reduce ``chunk_fn(idx_k)`` over consecutive index chunks covering ``range(n)``.

    ``chunk_fn(idx: int32[c])`` returns a pytree of arrays already reduced by ``op`` over its
    ``c`` indices; ``fill`` is ``op``'s identity.  Full chunks of size ``chunk`` run one after
    the other in a ``lax.scan`` (only one chunk's intermediates are live at a time); a shorter
    remainder chunk (when ``chunk`` does not divide ``n``) is evaluated once after them, so
    no work is wasted.

    The whole computation goes through ``rewrite``, one of the convolution rewrites of
    :mod:`lipxai._core.xla_cpu` (which change nothing off CPU): by default
    :func:`~lipxai._core.xla_cpu.for_gradient_loops`, as XLA:CPU compiles the input
    gradient of a convolution to its library kernel only outside loops unless the kernel is
    laid out explicitly (without it a loop of chunks was slower than all of them at once, see
    docs/results.md); the explanation methods, whose chunks only take gradients, use
    :func:`~lipxai._core.xla_cpu.for_gradients`.
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


def chunked_sum(chunk_fn, n: int, chunk: int | None):
    """``sum_k chunk_fn(idx_k)`` over index chunks covering ``range(n)``, for chunks that take
    gradients (:func:`chunked_reduce` with :func:`~lipxai._core.xla_cpu.for_gradients`)."""
    return chunked_reduce(chunk_fn, n, chunk, rewrite=for_gradients)


def flat(z):
    """[c, B, ...] -> [c * B, ...]."""
    return z.reshape((z.shape[0] * z.shape[1],) + z.shape[2:])
