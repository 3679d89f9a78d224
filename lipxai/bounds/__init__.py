"""Interval bounds as a JAX transformation, through the forward and the backward pass.

``interval(fun)`` interprets ``fun``'s jaxpr on ``Interval`` inputs with one sound rule per
primitive, so ``interval(jax.grad(loss))`` bounds gradients with no new code; certificates of
explanation robustness are built on it (Wicker et al., ICLR 2023).  ``interval(fun,
method="symbolic")`` tightens the forward values with linear bounds in the input
(``lipxai.bounds.symbolic``).
"""

# The rule modules register their rules into lipxai.bounds.registry when imported.
from lipxai.bounds import control, packed, rules, symbolic  # noqa: F401
from lipxai.bounds.certificates import (
    SCORES,
    GradientBounds,
    certify_explanation,
    gradient_bounds,
    params_box,
    prediction_certified,
)
from lipxai.bounds.interpreter import eval_jaxpr
from lipxai.bounds.interval import Interval, box, hull, is_interval, point
from lipxai.bounds.registry import RULES, UnsupportedPrimitiveError, register_rule
from lipxai.bounds.rules import registered_primitives
from lipxai.bounds.transform import METHODS, interval

__all__ = [
    "METHODS",
    "RULES",
    "SCORES",
    "GradientBounds",
    "Interval",
    "UnsupportedPrimitiveError",
    "box",
    "certify_explanation",
    "eval_jaxpr",
    "gradient_bounds",
    "hull",
    "interval",
    "is_interval",
    "params_box",
    "point",
    "prediction_certified",
    "register_rule",
    "registered_primitives",
]
