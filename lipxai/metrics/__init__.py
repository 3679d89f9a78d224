"""Explanation metrics as batched, jitted JAX functions returning one score per example.

* faithfulness (``fn, x, target, attributions``): :func:`deletion`, :func:`insertion`,
  :func:`pixel_flipping`, :func:`mufidelity`, :func:`infidelity`, :func:`completeness`,
  :func:`road` (with :func:`noisy_linear_imputation`);
* complexity (``attributions``): :func:`sparseness`, :func:`complexity`,
  :func:`effective_complexity`, equal to Quantus' definitions;
* robustness (``explain_fn, x, target``): :func:`max_sensitivity`, :func:`avg_sensitivity`,
  :func:`local_lipschitz_estimate`, :func:`stability`;
* localisation (``attributions, masks``): :func:`pointing_game`, :func:`relevance_mass`,
  :func:`relevance_rank`, :func:`top_k_intersection`, :func:`attribution_localisation`, and
  :func:`human_alignment` against continuous human saliency maps;
* sanity checks: :func:`model_randomization` (``explain_fn(params, x, target)``, returns a
  :class:`Randomization` of ``float[L, B]`` scores and layer names, see :func:`layer_names`)
  and :func:`random_logit` (``explain_fn, x, target``);
* similarity of two explanations (``a, b``), in the submodule :mod:`lipxai.metrics.similarity`:
  ``top_k_intersection``, ``spearman``, ``pearson``, ``ssim``, ``mse``,
  ``center_of_mass_shift``;
* attacks on explanations (``fn, x, target``): :func:`attack_explanation` (top-k and
  centre-of-mass attacks of Ghorbani et al. 2019, target-map attack of Dombrowski et al. 2019;
  an empirical lower bound on fragility beside :mod:`lipxai.bounds`' certified upper bounds),
  on the model smoothed by :func:`softplus_relu`.

Conventions: ``fn(x) -> logits`` is batched, ``x`` is ``[B, ...]`` (images NHWC float32),
``target`` is ``int[B]``, attributions have the shape of ``x``, every metric returns
``float[B]``; randomness takes an explicit ``key``; work that multiplies the batch (steps,
samples) is chunked with ``batch_size``.

NaN rule (issue 18; :mod:`lipxai._core.checks`).  Invalid arguments that can be checked before
tracing raise ``ValueError``/``TypeError`` naming them (a concrete target out of range
included).  What cannot be checked there never gives a plausible score:

* an example whose input ``x``, attribution (given, or computed by ``explain_fn``), mask,
  human map, baseline or second map (``b``) holds a NaN or an infinity scores NaN, the other
  examples unchanged (bool results: False; int results: -1);
* an example whose target is out of range under ``jax.jit`` scores NaN: checked against the
  model's classes where the metric has ``fn`` (or ``num_classes``), else through
  ``explain_fn``, whose NaN attribution for such a target (:mod:`lipxai.explain`'s rule)
  makes the score NaN;
* a traced real argument (``noise``, ``radius``, ``eps``, ``threshold``, ``data_range``,
  ``step_size``) outside its domain (negative, or not finite) makes every score NaN.

It costs one ``where`` on each output.
"""

from lipxai.metrics import similarity
from lipxai.metrics.attacks import ExplanationAttack, attack_explanation
from lipxai.metrics.complexity import complexity, effective_complexity, sparseness
from lipxai.metrics.faithfulness import (
    completeness,
    deletion,
    infidelity,
    insertion,
    mufidelity,
    pixel_flipping,
    road,
)
from lipxai.metrics.imputation import noisy_linear_imputation
from lipxai.metrics.localisation import (
    attribution_localisation,
    human_alignment,
    pointing_game,
    relevance_mass,
    relevance_rank,
    top_k_intersection,
)
from lipxai.metrics.robustness import (
    avg_sensitivity,
    local_lipschitz_estimate,
    max_sensitivity,
    stability,
)
from lipxai.metrics.sanity import Randomization, layer_names, model_randomization, random_logit
from lipxai.metrics.smoothing import softplus_relu

__all__ = [
    "attack_explanation",
    "attribution_localisation",
    "avg_sensitivity",
    "completeness",
    "complexity",
    "deletion",
    "effective_complexity",
    "ExplanationAttack",
    "human_alignment",
    "infidelity",
    "insertion",
    "layer_names",
    "local_lipschitz_estimate",
    "max_sensitivity",
    "model_randomization",
    "mufidelity",
    "noisy_linear_imputation",
    "pixel_flipping",
    "pointing_game",
    "random_logit",
    "Randomization",
    "relevance_mass",
    "relevance_rank",
    "road",
    "similarity",
    "softplus_relu",
    "sparseness",
    "stability",
    "top_k_intersection",
]
