"""Functional operations under the modules: convolution, space-to-depth and the layout of a
Cayley convolution (used by the trainable modules and by their exported plain forms)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from lipxai.nn import reparam


def space_to_depth(x: jax.Array, factor: int) -> jax.Array:
    """``[B, H, W, C] -> [B, H/f, W/f, f*f*C]``: a permutation of coordinates, hence orthogonal."""
    b, h, w, c = x.shape
    if h % factor or w % factor:
        raise ValueError(f"space_to_depth: image size {h}x{w} is not divisible by factor {factor}")
    x = x.reshape(b, h // factor, factor, w // factor, factor, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h // factor, w // factor, factor * factor * c)


def conv2d(x: jax.Array, kernel: jax.Array, strides, padding: str) -> jax.Array:
    """NHWC cross-correlation with an HWIO kernel; ``padding="CIRCULAR"`` wraps the image."""
    if padding == "CIRCULAR":
        kh, kw = kernel.shape[:2]
        x = jnp.pad(x, ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)),
                    mode="wrap")
        padding = "VALID"
    return lax.conv_general_dilated(x, kernel.astype(x.dtype), strides, padding,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def cayley_layout(input_hw, in_channels: int, features: int, kernel_size, strides, padding):
    """Static layout of a Cayley convolution: ``(factor, channels, grid, margins)``.

    Strides ``s`` are emulated by an orthogonal space-to-depth of factor ``s``
    (Trockman & Kolter 2021); ``channels = max(s^2 cin, cout)`` is the width of the
    square orthogonal operator; ``"SAME"`` runs it on a grid enlarged by the
    kernel's margins and crops (zero padding is an isometry and cropping a
    contraction, so the layer stays 1-Lipschitz but is only orthogonal for
    ``"CIRCULAR"``).
    """
    s1, s2 = strides
    if s1 != s2:
        raise ValueError(f"OrthoConv(method='cayley') needs equal strides, got {strides}")
    if padding not in ("SAME", "CIRCULAR"):
        raise ValueError(f"OrthoConv(method='cayley') supports padding 'SAME' or 'CIRCULAR', got {padding!r}")
    h, w = input_hw
    if h % s1 or w % s1:
        raise ValueError(f"OrthoConv(method='cayley'): image size {h}x{w} is not divisible by stride {s1}")
    kh, kw = kernel_size
    channels = max(s1 * s1 * in_channels, features)
    margins = (((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2)) if padding == "SAME" else ((0, 0), (0, 0))
    grid = (h // s1 + sum(margins[0]), w // s1 + sum(margins[1]))
    return s1, channels, grid, margins


def apply_cayley(x: jax.Array, spectrum: jax.Array, factor: int, channels: int, margins,
                 features: int) -> jax.Array:
    """Space-to-depth, zero-pad channels and margins, apply the spectrum, crop."""
    if factor > 1:
        x = space_to_depth(x, factor)
    h, w = x.shape[1], x.shape[2]
    x = jnp.pad(x, ((0, 0), margins[0], margins[1], (0, channels - x.shape[-1])))
    y = reparam.apply_conv_spectrum(x, spectrum)
    return y[:, margins[0][0]:margins[0][0] + h, margins[1][0]:margins[1][0] + w, :features]
