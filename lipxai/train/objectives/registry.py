"""The terms an objective can name: :data:`TERMS`, term name -> factory, and :func:`make_term`.

A factory takes the term's hyperparameters as keyword arguments (its own coefficient among
them), checks them (a ValueError naming the bad one) and returns a
:class:`~lipxai.train.objectives.base.Term` of the same name.
"""

from __future__ import annotations

import inspect

from lipxai.train.objectives import adversarial, certified, regularizers
from lipxai.train.objectives.base import Term

#: Term name -> factory ``(**hyperparameters) -> Term``.
TERMS = {
    "certified_explanation": certified.certified_explanation,
    "gradient_smoothness": regularizers.gradient_smoothness,
    "hessian_norm": regularizers.hessian_norm,
    "input_gradient_l2": regularizers.input_gradient_l2,
    "margin_eikonal": regularizers.margin_eikonal,
    "pgd_adversarial": adversarial.pgd_adversarial,
    "saliency_guided": adversarial.saliency_guided,
    "scaat": adversarial.scaat,
    "trades": adversarial.trades,
}


def hyperparameters(name: str) -> tuple[str, ...]:
    """The keyword arguments of the factory of term ``name``."""
    return tuple(inspect.signature(TERMS[name]).parameters)


def make_term(name: str, kwargs=None) -> Term:
    """The term ``name`` of :data:`TERMS` made with ``kwargs``; ValueError for an unknown name
    (listing the known ones), an unknown or a missing hyperparameter (naming it), or a bad value
    (the factory's message, which starts with the hyperparameter's name)."""
    if name not in TERMS:
        raise ValueError(f"unknown objective term {name!r}; known terms: {', '.join(sorted(TERMS))}")
    kwargs = dict(kwargs or {})
    signature = inspect.signature(TERMS[name])
    known = hyperparameters(name)
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ValueError(f"term {name} has no hyperparameter {unknown[0]!r}; known: {', '.join(known)}")
    missing = [p.name for p in signature.parameters.values()
               if p.default is inspect.Parameter.empty and p.name not in kwargs]
    if missing:
        raise ValueError(f"term {name} needs the hyperparameter {missing[0]!r}")
    return TERMS[name](**kwargs)
