"""Explanation metrics as batched, jitted JAX functions returning one score per example.

* faithfulness (``fn, x, target, attributions``): :func:`deletion`, :func:`insertion`,
  :func:`pixel_flipping`, :func:`mufidelity`, :func:`infidelity`, :func:`completeness`,
  :func:`road` (with :func:`noisy_linear_imputation`);
* complexity (``attributions``): :func:`sparseness`, :func:`complexity`,
  :func:`effective_complexity`, equal to Quantus' definitions;
* robustness (``explain_fn, x, target``): :func:`max_sensitivity`, :func:`avg_sensitivity`,
  :func:`local_lipschitz_estimate`, :func:`stability`.

Conventions: ``fn(x) -> logits`` is batched, ``x`` is ``[B, ...]`` (images NHWC float32),
``target`` is ``int[B]``, attributions have the shape of ``x``, every metric returns
``float[B]``; randomness takes an explicit ``key``; work that multiplies the batch (steps,
samples) is chunked with ``batch_size``.
"""

from lipxai.metrics.complexity import complexity, effective_complexity, sparseness
from lipxai.metrics.faithfulness import (
    completeness,
    deletion,
    infidelity,
    insertion,
    mufidelity,
    noisy_linear_imputation,
    pixel_flipping,
    road,
)
from lipxai.metrics.robustness import (
    avg_sensitivity,
    local_lipschitz_estimate,
    max_sensitivity,
    stability,
)

__all__ = [
    "avg_sensitivity",
    "completeness",
    "complexity",
    "deletion",
    "effective_complexity",
    "infidelity",
    "insertion",
    "local_lipschitz_estimate",
    "max_sensitivity",
    "mufidelity",
    "noisy_linear_imputation",
    "pixel_flipping",
    "road",
    "sparseness",
    "stability",
]
