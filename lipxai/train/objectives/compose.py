"""An objective: a task loss on the logits plus weighted terms, as one pure function.

``objective(task, terms, ...)`` checks everything it is given once, then returns
``obj(apply, variables, x, y, *, key=None, progress=0.0, logits=None) -> (loss, aux)``, a pure
function of arrays that a train step (:func:`lipxai.train.step.make_objective_step`) or a
user's own optax loop differentiates with respect to ``variables["params"]``::

    obj = objective("cross_entropy", [("input_gradient_l2", dict(lam=0.1))])
    def loss_fn(params, x, y):
        return obj(model.apply, {"params": params}, x, y)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y)

``loss = task_weight * task(logits, y) + sum_i value_i``, each term's value already weighted
by its own coefficient.  ``aux`` holds ``"task"`` (the unweighted task loss), each term's
weighted value under its name and each term's diagnostics under ``"name/key"``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp

from lipxai import losses
from lipxai.train.objectives.base import Context, Term, cross_entropy, nonnegative
from lipxai.train.objectives.registry import make_term

#: The task losses an objective can name: mean softmax cross-entropy, and the losses of
#: :mod:`lipxai.losses` (for 1-Lipschitz networks).
TASKS = ("cross_entropy", "kr", "hinge_margin", "hkr", "multiclass_kr", "multiclass_hinge",
         "multiclass_hkr", "soft_hkr", "tau_cross_entropy")


def task_loss(task, task_kwargs=None) -> Callable:
    """``(logits, labels) -> scalar`` for ``task``: a name of :data:`TASKS` (with its keyword
    arguments ``task_kwargs``) or a callable (taken as is, without ``task_kwargs``)."""
    kwargs = dict(task_kwargs or {})
    if callable(task):
        if kwargs:
            raise ValueError("task_kwargs apply to a named task, not to a callable task")
        return task
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)} (or a callable)")
    fn = cross_entropy if task == "cross_entropy" else getattr(losses, task)
    known = [p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ValueError(f"task {task} has no argument {unknown[0]!r}; known: {', '.join(known) or 'none'}")
    return functools.partial(fn, **kwargs) if kwargs else fn


def resolve_terms(terms) -> tuple[Term, ...]:
    """``terms`` as :class:`Term` instances: each given as a Term or as a ``(name, kwargs)`` pair
    of :data:`~lipxai.train.objectives.registry.TERMS`; names must be distinct."""
    resolved = []
    for term in terms:
        if isinstance(term, Term):
            resolved.append(term)
        elif isinstance(term, (tuple, list)) and len(term) == 2 and isinstance(term[0], str):
            resolved.append(make_term(term[0], term[1]))
        else:
            raise TypeError(f"a term must be a Term or a (name, kwargs) pair, got {term!r}")
    names = [t.name for t in resolved]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"terms must have distinct names, got {repeated[0]!r} twice")
    return tuple(resolved)


def check_domain(domain) -> tuple[float, float] | None:
    """``domain`` as ``(low, high)`` floats with ``low < high``, or None (no clipping)."""
    if domain is None:
        return None
    try:
        low, high = (float(v) for v in domain)
    except (TypeError, ValueError):
        raise ValueError(f"domain must be None or a pair (low, high), got {domain!r}") from None
    if not low < high:
        raise ValueError(f"domain must be a pair (low, high) with low < high, got {domain!r}")
    return low, high


def objective(task="cross_entropy", terms=(), *, task_kwargs=None, task_weight=1.0, domain=None):
    """The objective ``task_weight * task + sum of terms`` as a pure function.

    Args:
      task: ``"cross_entropy"`` (mean softmax cross-entropy of integer labels), a loss of
        :mod:`lipxai.losses` by name (``"soft_hkr"``, ...) or a callable
        ``(logits, labels) -> scalar``.
      terms: :class:`Term` instances or ``(name, kwargs)`` pairs of
        :data:`~lipxai.train.objectives.registry.TERMS`, e.g.
        ``[("hessian_norm", dict(lam=0.1, samples=2))]``.
      task_kwargs: keyword arguments of a named task (``dict(alpha=0.98, min_margin=2.2)``).
      task_weight: the task loss's coefficient (>= 0; 0 trains on the terms alone).
      domain: ``(low, high)`` of valid inputs, to which terms clip perturbed inputs, or None.

    Returns:
      ``obj(apply, variables, x, y, *, key=None, progress=0.0, logits=None) -> (loss, aux)``:
      ``apply(variables, x) -> logits`` pure (``model.apply`` of a flax model); ``key`` a PRNG
      key, required when a term samples (each term gets ``jax.random.fold_in(key, i)``, ``i``
      its position); ``progress`` in [0, 1] drives the terms' schedules; ``logits`` the
      already computed ``apply(variables, x)``, so that a train step whose forward pass updates
      collections runs it once.

    Raises ValueError (here, before any tracing) for an unknown task or term, a bad
    hyperparameter (named), and at call time for a term that needs a key called without one.
    """
    loss_of = task_loss(task, task_kwargs)
    terms = resolve_terms(terms)
    task_weight = nonnegative("task_weight", task_weight)
    domain = check_domain(domain)

    def obj(apply, variables, x, y, *, key=None, progress=0.0, logits=None):
        if key is None:
            needing = [t.name for t in terms if t.needs_key]
            if needing:
                raise ValueError(f"objective term {needing[0]} needs a key: pass key=jax.random.PRNGKey(...)")
        if logits is None:
            logits = apply(variables, x)
        progress = jnp.asarray(progress, jnp.float32)
        task_value = loss_of(logits, y)
        loss = task_weight * task_value
        aux = {"task": task_value}
        for i, term in enumerate(terms):
            context = Context(apply=apply, variables=variables, x=x, y=y,
                              key=None if key is None else jax.random.fold_in(key, i),
                              progress=progress, logits=logits, task_loss=loss_of, domain=domain)
            value, term_aux = term.fn(context)
            loss = loss + value
            aux[term.name] = value
            aux.update({f"{term.name}/{k}": v for k, v in term_aux.items()})
        return loss, aux

    return obj
