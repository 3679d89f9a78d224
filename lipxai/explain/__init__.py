"""Attribution methods as pure functions of ``(fn, x, target)``.

``fn`` is a batched model function ``x[B, ...] -> logits[B, C]``, ``target`` is ``int[B]``,
and every attribution has the shape of ``x``.
"""

from lipxai.explain.gradients import (
    DEFAULT_CHUNK,
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
    "DEFAULT_CHUNK",
    "METHODS",
    "gradient_x_input",
    "idgi",
    "integrated_gradients",
    "make_baseline",
    "quadrature",
    "saliency",
    "smoothgrad",
    "squaregrad",
    "vargrad",
]
