"""Centering layers: 1-Lipschitz replacements for batch/layer normalisation.

Dividing by a standard deviation is not Lipschitz-bounded; subtracting a mean is
(deel-lip's BatchCentering / LayerCentering).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lipxai.nn._common import check_features_input
from lipxai.nn.plain import Bias


class BatchCentering(nn.Module):
    """``x - mean + b`` per channel (last axis).

    When the ``"batch_stats"`` collection is mutable (training), ``mean`` is the
    batch mean — an orthogonal projection of the whole batch, so still
    1-Lipschitz, but examples interact — and the running mean is updated with
    ``momentum``; otherwise the running mean is a constant shift.
    """

    momentum: float = 0.9

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_features_input("BatchCentering", x, min_rank=2)
        c = x.shape[-1]
        running = self.variable("batch_stats", "mean", jnp.zeros, (c,), x.dtype)
        bias = self.param("bias", nn.initializers.zeros, (c,))
        if self.is_mutable_collection("batch_stats"):
            mean = jnp.mean(x, axis=tuple(range(x.ndim - 1)))
            if not self.is_initializing():
                running.value = self.momentum * running.value + (1.0 - self.momentum) * mean
        else:
            mean = running.value
        return x - mean + bias

    @nn.nowrap
    def export_plain(self, variables, input_shape=None):
        shift = variables["params"]["bias"] - variables["batch_stats"]["mean"]
        return Bias(), {"params": {"bias": shift}}


class LayerCentering(nn.Module):
    """``x - mean_over_spatial_axes(x) + b`` per example and channel (NHWC or [B, L, C])."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_features_input("LayerCentering", x, min_rank=3)
        bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
        return x - jnp.mean(x, axis=tuple(range(1, x.ndim - 1)), keepdims=True) + bias
