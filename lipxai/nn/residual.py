"""1-Lipschitz residual blocks: the SDP-based Lipschitz layer (SLL).

Araujo, Havens, Delattre, Allauzen & Hu 2023, "A unified algebraic perspective on
Lipschitz neural networks" (ICLR), Theorem 3: for ``W`` of shape ``[n, m]``,
``q > 0`` and ``T = diag(sum_j |W^T W|_{ij} q_j / q_i)``,

    h(x) = x - 2 W T^{-1} relu(W^T x + b)

is 1-Lipschitz. Here ``W^T x`` is ``x @ K`` (dense) or ``conv_K(x)`` (convolution,
stride 1, SAME, odd kernel), and ``W z`` the adjoint map.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lipxai.nn import reparam
from lipxai.nn._common import check_features_input, pair
from lipxai.nn.functional import conv2d
from lipxai.nn.plain import ConvResidual, DenseResidual

_TINY = 1e-12


def sll_scale(abs_gram: jax.Array, q_log: jax.Array) -> jax.Array:
    """``t_i = sum_j |G|_{ij} q_j / q_i`` with ``q = exp(q_log)``."""
    q = jnp.exp(q_log)
    return jnp.maximum(abs_gram @ q / q, _TINY)


def conv_adjoint_kernel(kernel: jax.Array) -> jax.Array:
    """Kernel of the adjoint of a stride-1 SAME correlation with an odd HWIO kernel."""
    return jnp.flip(kernel, axis=(0, 1)).swapaxes(2, 3)


def sll_dense_weights(kernel: jax.Array, q_log: jax.Array):
    """``(A, B)`` with ``h(x) = x + relu(x A + b) B``: ``A = K``, ``B = -2 T^{-1} K^T``."""
    t = sll_scale(jnp.abs(kernel.T @ kernel), q_log)
    return kernel, -2.0 * (kernel / t).T


def sll_conv_weights(kernel: jax.Array, q_log: jax.Array):
    """``(A, B)`` convolution kernels with ``h(x) = x + conv_B(relu(conv_A(x) + b))``."""
    t = sll_scale(reparam.conv_gram_abs_rowsum(kernel.swapaxes(2, 3)), q_log)
    return kernel, -2.0 * conv_adjoint_kernel(kernel / t)


class SLLDense(nn.Module):
    """Dense SLL residual block ``x - 2 W T^{-1} relu(W^T x + b)`` on ``[..., n]`` (``hidden`` = m)."""

    hidden: int | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_features_input("SLLDense", x)
        n = x.shape[-1]
        m = self.hidden or n
        kernel = self.param("kernel", nn.initializers.glorot_normal(), (n, m))
        bias = self.param("bias", nn.initializers.zeros, (m,))
        q_log = self.param("q", nn.initializers.zeros, (m,))
        a, b = sll_dense_weights(kernel, q_log)
        return x + nn.relu(x @ a.astype(x.dtype) + bias) @ b.astype(x.dtype)

    @nn.nowrap
    def export_plain(self, variables, input_shape=None):
        p = variables["params"]
        a, b = sll_dense_weights(p["kernel"], p["q"])
        return DenseResidual(a.shape[1]), {"params": {"in_kernel": a, "bias": p["bias"], "out_kernel": b}}


class SLLConv(nn.Module):
    """Convolutional SLL residual block on NHWC images (stride 1, SAME, odd kernel)."""

    hidden: int | None = None
    kernel_size: int | tuple[int, int] = 3

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_features_input("SLLConv", x, rank=4)
        kh, kw = pair("SLLConv kernel_size", self.kernel_size)
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"SLLConv: kernel_size must be odd, got {(kh, kw)}")
        c = x.shape[-1]
        m = self.hidden or c
        kernel = self.param("kernel", nn.initializers.glorot_normal(), (kh, kw, c, m))
        bias = self.param("bias", nn.initializers.zeros, (m,))
        q_log = self.param("q", nn.initializers.zeros, (m,))
        a, b = sll_conv_weights(kernel, q_log)
        z = nn.relu(conv2d(x, a, (1, 1), "SAME") + bias)
        return x + conv2d(z, b, (1, 1), "SAME")

    @nn.nowrap
    def export_plain(self, variables, input_shape=None):
        p = variables["params"]
        a, b = sll_conv_weights(p["kernel"], p["q"])
        return ConvResidual(a.shape[3], a.shape[:2]), {"params": {"in_kernel": a, "bias": p["bias"], "out_kernel": b}}
