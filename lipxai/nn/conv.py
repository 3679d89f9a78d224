"""``OrthoConv``: 2-D convolutions that are 1-Lipschitz as operators on the whole image."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from lipxai.nn import reparam
from lipxai.nn._common import check_features_input, check_method, check_sizes, pair
from lipxai.nn.pooling import space_to_depth

CONV_METHODS = ("rko", "aol", "cayley")
PADDINGS = ("SAME", "VALID", "CIRCULAR")


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


class OrthoConv(nn.Module):
    """2-D convolution (NHWC) that is 1-Lipschitz as an operator on the whole image.

    Methods:
      * ``"aol"`` (default): AOL channel rescaling (Prach & Lampert 2022), any padding/stride.
      * ``"rko"``: Björck-orthonormalised reshaped kernel times ``1/sqrt(prod ceil(k/s))``,
        a guaranteed bound (see :func:`lipxai.nn.reparam.rko_conv`).
      * ``"cayley"``: orthogonal convolution by the Cayley transform in the Fourier
        domain (Trockman & Kolter 2021); exactly orthogonal with
        ``padding="CIRCULAR"`` and ``cout = s^2 cin``; strides by invertible
        downsampling.
    """

    features: int
    kernel_size: int | tuple[int, int] = 3
    strides: int | tuple[int, int] = 1
    padding: str = "SAME"
    method: str = "aol"
    use_bias: bool = True
    iters: int = 15
    bias_init: nn.initializers.Initializer = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_method("OrthoConv", self.method, CONV_METHODS)
        check_method("OrthoConv padding", self.padding, PADDINGS)
        check_sizes("OrthoConv", features=self.features, iters=self.iters)
        check_features_input("OrthoConv", x, rank=4)
        kernel_size = pair("OrthoConv kernel_size", self.kernel_size)
        strides = pair("OrthoConv strides", self.strides)
        in_channels = x.shape[-1]
        if self.method == "cayley":
            factor, channels, grid, margins = cayley_layout(
                x.shape[1:3], in_channels, self.features, kernel_size, strides, self.padding)
            raw = self.param("kernel", nn.initializers.normal(0.5 / (channels * kernel_size[0] * kernel_size[1]) ** 0.5),
                             (*kernel_size, channels, channels))
            spectrum = reparam.cayley_conv_spectrum(raw, grid)
            y = apply_cayley(x, spectrum, factor, channels, margins, self.features)
        else:
            raw = self.param("kernel", nn.initializers.orthogonal(column_axis=-1),
                             (*kernel_size, in_channels, self.features))
            y = conv2d(x, self._kernel(raw, strides), strides, self.padding)
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,)).astype(y.dtype)
        return y

    @nn.nowrap
    def _kernel(self, raw, strides):
        if self.method == "rko":
            return reparam.rko_conv(raw, strides, iters=self.iters)
        return reparam.aol_conv(raw)

    @nn.nowrap
    def export_plain(self, variables, input_shape=None):
        """Frozen weights: a plain ``nn.Conv`` (rko/aol) or a :class:`FourierConv` (cayley)."""
        from lipxai.nn.plain import FourierConv

        params = variables["params"]
        kernel_size = pair("OrthoConv kernel_size", self.kernel_size)
        strides = pair("OrthoConv strides", self.strides)
        bias = {"bias": params["bias"]} if self.use_bias else {}
        if self.method != "cayley":
            plain = nn.Conv(self.features, kernel_size, strides, padding=self.padding,
                            use_bias=self.use_bias)
            return plain, {"params": {"kernel": self._kernel(params["kernel"], strides), **bias}}
        if input_shape is None:
            raise ValueError("export of OrthoConv(method='cayley') needs input_shape=(B, H, W, C): "
                             "its frozen Fourier-domain weights depend on the image size")
        factor, channels, grid, margins = cayley_layout(
            input_shape[1:3], input_shape[-1], self.features, kernel_size, strides, self.padding)
        spectrum = reparam.cayley_conv_spectrum(params["kernel"], grid)
        plain = FourierConv(self.features, factor=factor, channels=channels, margins=margins,
                            use_bias=self.use_bias)
        frozen = {"spectrum_real": jnp.real(spectrum), "spectrum_imag": jnp.imag(spectrum), **bias}
        return plain, {"params": frozen}
