"""1-Lipschitz pooling and reshaping layers (NHWC), and a fast max-pool for plain models."""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from lipxai._core.windows import UNIT_VECTORS_NAME, from_window_positions, window_position
from lipxai.nn._common import check_features_input, pair
from lipxai.nn.functional import space_to_depth


@functools.cache
def _unit_vectors_fn(window: tuple[int, int]):
    kh, kw = window

    def unit_vectors(x):
        b, h, w, c = x.shape
        hc, wc = h - h % kh, w - w % kw  # VALID: trailing rows/columns are in no window
        blocks = x[:, :hc, :wc].reshape(b, hc // kh, kh, wc // kw, kw, c)
        squares = jnp.sum(blocks * blocks, axis=(2, 4), keepdims=True)
        # the square root of a safe value: sqrt'(0) would make the derivative of the unit
        # vectors (a second derivative of the pooling, as double backpropagation takes) NaN
        safe = jnp.sqrt(jnp.where(squares > 0, squares, 1.0))
        units = jnp.where(squares > 0, blocks / safe, 0.0).reshape(b, hc, wc, c)
        return jnp.pad(units, ((0, 0), (0, h - hc), (0, w - wc), (0, 0)))

    unit_vectors.__name__ = UNIT_VECTORS_NAME.format(kh=kh, kw=kw)
    return jax.jit(unit_vectors)


def _window_sums(v, window, strides):
    return lax.reduce_window(v, 0.0, lax.add, (1, *window, 1), (1, *strides, 1), "VALID")


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def window_l2_norms(x: jax.Array, window: tuple[int, int], strides: tuple[int, int]):
    """``||x_w||_2`` over each (VALID) window ``w`` of ``x [B, H, W, C]``, per channel.

    Its derivative is ``x_w / ||x_w||`` (0 at ``x_w = 0``, a subgradient, instead of the
    NaN of ``sqrt``).  For non-overlapping windows the unit vectors come from one named
    function (:data:`~lipxai._core.windows.UNIT_VECTORS_NAME`) so that interval bounds of gradients stay in
    ``[-1, 1]``.
    """
    return jnp.sqrt(_window_sums(x * x, window, strides))


@window_l2_norms.defjvp
def _window_l2_norms_jvp(window, strides, primals, tangents):
    (x,), (dx,) = primals, tangents
    y = window_l2_norms(x, window, strides)
    if tuple(window) == tuple(strides):
        return y, _window_sums(_unit_vectors_fn(tuple(window))(x) * dx, window, strides)
    inverse = jnp.where(y > 0, 1.0 / jnp.where(y > 0, y, 1.0), 0.0)
    return y, _window_sums(x * dx, window, strides) * inverse


class L2NormPool(nn.Module):
    """Scaled L2-norm pooling: ``y_w = ||x_w||_2 / sqrt(c)`` over each window ``w`` (VALID).

    ``c = prod ceil(window / stride)`` is the largest number of windows sharing a
    pixel (1 for the default non-overlapping windows). Since
    ``| ||a|| - ||b|| | <= ||a - b||`` and ``sum_w ||(x - y)_w||^2 <= c ||x - y||^2``,
    the layer is 1-Lipschitz; with non-overlapping windows it preserves gradient
    norms (Anil et al. 2019; deel-lip's ScaledL2NormPooling2D).
    """

    window: int | tuple[int, int] = 2
    strides: int | tuple[int, int] | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_features_input("L2NormPool", x, rank=4)
        window = pair("L2NormPool window", self.window)
        strides = window if self.strides is None else pair("L2NormPool strides", self.strides)
        coverage = math.prod(-(-k // s) for k, s in zip(window, strides, strict=True))
        return window_l2_norms(x, tuple(window), tuple(strides)) / math.sqrt(coverage)


class GlobalL2NormPool(nn.Module):
    """``[B, H, W, C] -> [B, C]``: the L2 norm of each channel over the image; 1-Lipschitz."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_features_input("GlobalL2NormPool", x, rank=4)
        window = tuple(x.shape[1:3])
        return window_l2_norms(x, window, window)[:, 0, 0, :]


class InvertibleDownsample(nn.Module):
    """Space-to-depth by ``factor``: an orthogonal downsampling (Trockman & Kolter 2021)."""

    factor: int = 2

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_features_input("InvertibleDownsample", x, rank=4)
        return space_to_depth(x, self.factor)


class Flatten(nn.Module):
    """``[B, ...] -> [B, prod(...)]``: an isometry."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_features_input("Flatten", x, min_rank=2)
        return x.reshape(x.shape[0], -1)


# ---------------------------------------------------------------------------------------
# max-pool: flax.linen.max_pool's output and gradient, without select_and_scatter_add
# ---------------------------------------------------------------------------------------


#: Windows of at most this many elements build the first-maximum mask element by element
#: (elementwise ops only, which XLA fuses into the gradient's select); larger ones through a
#: min-reduction of flat indices (one extra pass over the input).
_SEQUENTIAL_MASK_MAX = 16


def _first_max_mask(blocks: jax.Array, y: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """Boolean mask of the *first* maximum of each window, in row-major window order (NaN
    counts as the maximum, as in ``jnp.argmax``).

    ``blocks`` has one axis per window dimension (``axes``); ``y`` is its max over them
    (keepdims).
    """
    # a window holding a NaN has max NaN (lax.max propagates it): its first NaN is the max
    is_max = (blocks == y) | jnp.isnan(blocks)
    sizes = [blocks.shape[a] for a in axes]
    if math.prod(sizes) <= _SEQUENTIAL_MASK_MAX:
        # element j of the window is the first max iff it is a max and no earlier one is
        taken = jnp.zeros(y.shape, bool)
        firsts = {}
        for pos in itertools.product(*(range(k) for k in sizes)):
            hit = window_position(is_max, axes, pos)
            firsts[pos] = hit & ~taken
            taken = taken | hit
        return from_window_positions(firsts, axes, sizes)
    flat = jnp.zeros((1,) * blocks.ndim, jnp.int32)
    for a, k in zip(axes, sizes, strict=True):
        shape = [1] * blocks.ndim
        shape[a] = k
        flat = flat * k + jnp.arange(k, dtype=jnp.int32).reshape(shape)
    index = jnp.where(is_max, flat, math.prod(sizes))
    return index == jnp.min(index, axis=axes, keepdims=True)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _block_max(blocks: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    return jnp.max(blocks, axis=axes)


@_block_max.defjvp
def _block_max_jvp(axes, primals, tangents):
    (blocks,), (tangent,) = primals, tangents
    y = jnp.max(blocks, axis=axes, keepdims=True)
    mask = _first_max_mask(blocks, y, axes)
    dy = jnp.sum(jnp.where(mask, tangent, jnp.zeros_like(tangent)), axis=axes)
    return jnp.squeeze(y, axes), dy


def _fast_pool_padding(padding, spatial, window, strides):
    """Per-dimension ``(low, high)`` padding if the reshape form applies, else ``None``."""
    if tuple(window) != tuple(strides):
        return None
    if isinstance(padding, str):
        if padding == "VALID":
            return [(0, 0)] * len(window)
        if padding != "SAME":
            return None
        pads = []
        for d, k in zip(spatial, window, strict=True):
            total = -(-d // k) * k - d  # lax.padtype_to_pads for stride == window
            pads.append((total // 2, total - total // 2))
        return pads
    try:
        pads = [tuple(int(v) for v in p) for p in padding]
    except TypeError:
        return None
    if len(pads) != len(window) or any(len(p) != 2 or min(p) < 0 for p in pads):
        return None
    return pads


def max_pool(
    x: jax.Array,
    window: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: str | Sequence[tuple[int, int]] = "VALID",
) -> jax.Array:
    """``flax.linen.max_pool(x, window, strides, padding)``, with a faster gradient on CPU.

    Same signature and semantics as :func:`flax.linen.max_pool`: ``x`` is
    ``(batch dims..., window dims..., features)``, ``strides=None`` means stride 1 (flax's
    default, *not* the window), ``padding`` is ``"VALID"``, ``"SAME"`` or ``(low, high)``
    pairs.  The output equals flax's exactly, and so does the gradient, ties included: the
    gradient of a window goes to its *first* maximal element in row-major window order
    (as the ``select_and_scatter_add`` of ``reduce_window``'s gradient, and as torch's
    ``MaxPool2d``), not split among the tied elements as ``jnp.max``'s gradient would be.
    ``+0.0`` and ``-0.0`` tie.  A window holding a NaN outputs NaN, as flax's, and its
    gradient goes to its first NaN (flax's to some element of the window).

    Why: flax's ``max_pool`` is ``lax.reduce_window(max)``, whose gradient is XLA's
    ``select_and_scatter_add``; on XLA CPU that op is slow enough to make the input gradient
    of a small CNN markedly slower (figures in docs/results.md, "Design measurements behind
    library choices").  When the windows tile the input (``window == strides``, any padding
    of width >= 0, floating ``x``), this function
    instead reshapes the padded, cropped input to ``(..., out_i, window_i, ..., features)``
    and takes the max over the window axes, with a custom JVP that routes the tangent
    through the first-maximum mask (so forward mode, ``grad`` and higher derivatives all
    work, and all fuse into plain elementwise/reduce ops).  Other configurations
    (overlapping or strided windows, integer inputs) call :func:`flax.linen.max_pool`.
    """
    window = tuple(window)
    strides = (1,) * len(window) if strides is None else tuple(strides)
    n = len(window)
    nbatch = x.ndim - n - 1
    pads = None
    if nbatch >= 0 and len(strides) == n and jnp.issubdtype(x.dtype, jnp.floating):
        pads = _fast_pool_padding(padding, x.shape[nbatch : nbatch + n], window, strides)
    if pads is None:
        return nn.max_pool(x, window, strides, padding)
    if any(lo or hi for lo, hi in pads):
        widths = [(0, 0)] * nbatch + list(pads) + [(0, 0)]
        x = jnp.pad(x, widths, constant_values=-jnp.inf)
    spatial = x.shape[nbatch : nbatch + n]
    out = [d // k for d, k in zip(spatial, window, strict=True)]
    if any(o * k != d for o, k, d in zip(out, window, spatial, strict=True)):  # VALID: crop
        x = x[(slice(None),) * nbatch + tuple(slice(0, o * k) for o, k in zip(out, window, strict=True))]
    blocks_shape = x.shape[:nbatch] + sum(((o, k) for o, k in zip(out, window, strict=True)), ()) + x.shape[-1:]
    axes = tuple(nbatch + 2 * i + 1 for i in range(n))
    return _block_max(x.reshape(blocks_shape), axes)
