"""``OrthoConv``: 2-D convolutions that are 1-Lipschitz as operators on the whole image."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lipxai.nn import reparam
from lipxai.nn._common import check_features_input, check_method, check_sizes, pair
from lipxai.nn.functional import apply_cayley, cayley_layout, conv2d
from lipxai.nn.plain import FourierConv

CONV_METHODS = ("rko", "aol", "cayley")
PADDINGS = ("SAME", "VALID", "CIRCULAR")


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
