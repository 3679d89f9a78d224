"""Attribution methods as pure functions of ``(fn, x, target)``.

``fn`` is a batched model function ``x[B, ...] -> logits[B, C]``, ``target`` is ``int[B]``,
and every attribution has the shape of ``x``.

Invalid input gives NaN, never a plausible map.  Arguments that can be checked raise
``ValueError``/``TypeError`` before tracing (an empty batch, a target out of ``[0, C)``, a
negative or NaN ``noise``, ...).  What cannot be checked there gets a NaN attribution for
the example concerned: an input (or baseline, or noise draw) with a NaN or an infinity, and
under ``jax.jit`` a target out of range or a negative ``noise`` (NaN for every example).  The
cost is one ``where`` on the output.  Counterfactuals follow the same rule (NaN points and
distances, ``classes = -1``, ``flipped`` False), and boundary attributions are NaN where the
boundary search fails.
"""

from lipxai._core.xla_cpu import CPU_COMPILER_OPTIONS, compiler_options, jit
from lipxai.explain.boundary_based import (
    big,
    boundary_point,
    boundary_saliency,
    boundary_smoothgrad,
)
from lipxai.explain.cam import grad_cam, grad_cam_plus_plus, layer_shapes, split_at
from lipxai.explain.counterfactual import CounterfactualResult, counterfactual
from lipxai.explain.gradients import (
    DEFAULT_CHUNK,
    default_chunk,
    gradient_x_input,
    saliency,
    smoothgrad,
    squaregrad,
    vargrad,
)
from lipxai.explain.integrated import (
    METHODS,
    idgi,
    integrated_gradients,
    make_baseline,
    quadrature,
)

__all__ = [
    "CPU_COMPILER_OPTIONS",
    "CounterfactualResult",
    "DEFAULT_CHUNK",
    "METHODS",
    "big",
    "boundary_point",
    "boundary_saliency",
    "boundary_smoothgrad",
    "compiler_options",
    "counterfactual",
    "default_chunk",
    "grad_cam",
    "grad_cam_plus_plus",
    "gradient_x_input",
    "idgi",
    "integrated_gradients",
    "jit",
    "layer_shapes",
    "make_baseline",
    "quadrature",
    "saliency",
    "smoothgrad",
    "split_at",
    "squaregrad",
    "vargrad",
]
