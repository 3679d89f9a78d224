"""Training objectives: a task loss plus weighted terms, as one pure function
(:func:`objective`), usable by ``lipxai train`` and by a user's own optax loop.

A term is a :class:`Term` (``Context -> (weighted value, aux)``) made by a factory of
:data:`TERMS` from its hyperparameters; schedules follow ``progress`` in [0, 1] (:func:`ramp`).
"""

from lipxai.train.objectives.adversarial import pgd_adversarial, saliency_guided, scaat, trades
from lipxai.train.objectives.base import Context, Term, ramp
from lipxai.train.objectives.certified import certified_explanation
from lipxai.train.objectives.compose import TASKS, cross_entropy, objective, task_loss
from lipxai.train.objectives.registry import TERMS, hyperparameters, make_term
from lipxai.train.objectives.regularizers import (
    gradient_smoothness,
    hessian_norm,
    input_gradient_l2,
    margin_eikonal,
)

__all__ = [
    "TASKS",
    "TERMS",
    "Context",
    "Term",
    "certified_explanation",
    "cross_entropy",
    "gradient_smoothness",
    "hessian_norm",
    "input_gradient_l2",
    "hyperparameters",
    "make_term",
    "margin_eikonal",
    "objective",
    "pgd_adversarial",
    "ramp",
    "saliency_guided",
    "scaat",
    "task_loss",
    "trades",
]
