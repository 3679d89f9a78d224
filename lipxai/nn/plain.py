"""Plain inference-time modules produced by :func:`lipxai.nn.export`: frozen weights, no iterations.

They are meant to be applied with the variables ``export`` returns; their own
initialisers only give correctly shaped zero weights.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from lipxai.nn._common import pair
from lipxai.nn.functional import apply_cayley, conv2d


class FourierConv(nn.Module):
    """A circular convolution stored as per-frequency matrices (a frozen Cayley convolution)."""

    features: int
    factor: int
    channels: int
    margins: tuple
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n1 = x.shape[1] // self.factor + sum(self.margins[0])
        n2 = x.shape[2] // self.factor + sum(self.margins[1])
        shape = (n1, n2 // 2 + 1, self.channels, self.channels)
        real = self.param("spectrum_real", nn.initializers.zeros, shape)
        imag = self.param("spectrum_imag", nn.initializers.zeros, shape)
        y = apply_cayley(x, real + 1j * imag, self.factor, self.channels, self.margins, self.features)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        return y


class DenseResidual(nn.Module):
    """``x + relu(x A + b) B`` with frozen ``A [n, hidden]``, ``b``, ``B [hidden, n]``."""

    hidden: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n = x.shape[-1]
        a = self.param("in_kernel", nn.initializers.zeros, (n, self.hidden))
        b = self.param("bias", nn.initializers.zeros, (self.hidden,))
        out = self.param("out_kernel", nn.initializers.zeros, (self.hidden, n))
        return x + nn.relu(x @ a + b) @ out


class ConvResidual(nn.Module):
    """``x + conv_B(relu(conv_A(x) + b))`` with frozen kernels (stride 1, SAME)."""

    hidden: int
    kernel_size: int | tuple[int, int] = 3

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = pair("ConvResidual kernel_size", self.kernel_size)
        c = x.shape[-1]
        a = self.param("in_kernel", nn.initializers.zeros, (kh, kw, c, self.hidden))
        b = self.param("bias", nn.initializers.zeros, (self.hidden,))
        out = self.param("out_kernel", nn.initializers.zeros, (kh, kw, self.hidden, c))
        return x + conv2d(nn.relu(conv2d(x, a, (1, 1), "SAME") + b), out, (1, 1), "SAME")


class Bias(nn.Module):
    """``x + b`` on the last axis."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.param("bias", nn.initializers.zeros, (x.shape[-1],)).astype(x.dtype)
