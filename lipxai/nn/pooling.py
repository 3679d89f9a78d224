"""1-Lipschitz pooling and reshaping layers (NHWC)."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from lipxai.nn._common import check_features_input, pair


def space_to_depth(x: jax.Array, factor: int) -> jax.Array:
    """``[B, H, W, C] -> [B, H/f, W/f, f*f*C]``: a permutation of coordinates, hence orthogonal."""
    b, h, w, c = x.shape
    if h % factor or w % factor:
        raise ValueError(f"space_to_depth: image size {h}x{w} is not divisible by factor {factor}")
    x = x.reshape(b, h // factor, factor, w // factor, factor, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h // factor, w // factor, factor * factor * c)


def _safe_sqrt(s: jax.Array) -> jax.Array:
    """``sqrt(s)`` for ``s >= 0`` with gradient 0 (not inf) at ``s = 0``."""
    positive = s > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, s, 1.0)), 0.0)


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
        sums = lax.reduce_window(x * x, 0.0, lax.add, (1, *window, 1), (1, *strides, 1), "VALID")
        return _safe_sqrt(sums) / math.sqrt(coverage)


class GlobalL2NormPool(nn.Module):
    """``[B, H, W, C] -> [B, C]``: the L2 norm of each channel over the image; 1-Lipschitz."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_features_input("GlobalL2NormPool", x, rank=4)
        return _safe_sqrt(jnp.sum(x * x, axis=(1, 2)))


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
