r"""Counterfactuals: the smallest change of ``x`` that changes the decision.

* ``method="transport"`` (1-Lipschitz networks): Serrurier et al. 2023, "On the
  explainable properties of 1-Lipschitz neural networks: an optimal transport
  perspective" (NeurIPS), show that for a network trained with the HKR loss the
  gradient is the direction of the optimal transport plan and
  :math:`x - f(x)\nabla f(x)` lands on the decision boundary.  With several classes the
  function is the margin :math:`m(x) = f_t(x) - f_j(x)` against a class ``j``, and

  .. math:: x_{cf} = x - \tau\, m(x)\, \nabla m(x) / \|\nabla m(x)\|^2,

  the paper's step when :math:`\|\nabla m\| = 1`; the division keeps the step exact for
  a margin whose gradient norm is not 1 (e.g. :math:`\sqrt 2` for two orthogonal rows of
  the last layer).  ``t > 1`` overshoots the boundary so that the class changes.  The class
  ``j`` is given (``to``) or, for ``t > 1``, chosen among the steps towards every class
  (one more forward pass on the ``C`` candidate points per example): the closest candidate
  that changes the prediction, or when none does (and for ``t <= 1``, which is not meant to
  cross), the class closest in the linearised distance :math:`m_j / \|\nabla m_j\|`.
  Its distance exceeds the closest boundary point's by the factor ``t`` and by the
  linearisation: the step is exact only where the gradient points at the closest boundary
  point and the margin falls linearly along it.  So it comes closest on models trained to hold
  the margin's gradient norm at 1 (:func:`lipxai.losses.margin_eikonal`, as the quickstart's
  last training steps do); a first convolution that does not preserve gradient norms, or
  pooling, moves it further, and a margin that falls more slowly than linearly along the step
  can leave the class unchanged at a small ``t``.  The distances, against the boundary points
  of :func:`lipxai.boundary.search`, PGD and CW, are in docs/results.md ("Boundary search and
  counterfactuals").
* ``method="search"`` (any model): the closest boundary point found by
  :func:`lipxai.boundary.search` (just across the boundary, within its ``tol``).
"""

from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp

import lipxai.boundary
from lipxai._core.batched import check_inputs
from lipxai._core.checks import in_range, is_tracer, labels_for, nan_unless, one_of, positive

__all__ = ["CounterfactualResult", "counterfactual"]


@flax.struct.dataclass
class CounterfactualResult:
    """Result of :func:`counterfactual` (a pytree).

    Attributes:
      points: the counterfactual inputs, shaped like ``x``.
      logits: ``fn(points)``, ``[B, C]``.
      classes: ``int[B]``, the class moved towards (``to``, the closest class, or for
        ``method="search"`` the predicted class at the point).
      distances: ``float[B]``, L2 norm of ``points - x``.
      flipped: ``bool[B]``, the prediction at ``points`` differs from ``target``.
    """

    points: jax.Array
    logits: jax.Array
    classes: jax.Array
    distances: jax.Array
    flipped: jax.Array


def _l2(d):
    return jnp.sqrt(jnp.sum(d * d, axis=tuple(range(1, d.ndim))))


@functools.partial(jax.jit, static_argnames=("fn",))
def _transport(fn, x, target, to, t):
    # rows of the Jacobian: J[c] = d sum_b f_c(x_b) / dx = per-example gradients of f_c
    logits, vjp = jax.vjp(fn, x)
    num_classes = logits.shape[1]
    jac = jax.vmap(lambda e: vjp(jnp.broadcast_to(e, logits.shape))[0])(jnp.eye(num_classes))
    rows = jnp.arange(x.shape[0])
    g_t = jac[target, rows]                                        # [B, ...]
    margins = logits[rows, target][:, None] - logits               # [B, C]: m_j
    grads = g_t[None] - jac                                        # [C, B, ...]: grad m_j
    norms = jnp.sqrt(jnp.sum(grads * grads, axis=tuple(range(2, grads.ndim)))).T  # [B, C]
    expand = lambda v: v.reshape(v.shape + (1,) * (x.ndim - 1))
    if to is not None:
        n2 = jnp.maximum(norms[rows, to] ** 2, 1e-24)
        return x - expand(t * margins[rows, to] / n2) * grads[to, rows], to
    # a step towards every class j: x - t m_j grad m_j / |grad m_j|^2, [C, B, ...]
    steps = expand((t * margins / jnp.maximum(norms ** 2, 1e-24)).T) * grads
    candidates = x[None] - steps
    cand_logits = fn(candidates.reshape((-1,) + x.shape[1:])).reshape(num_classes, x.shape[0], -1)
    other = jnp.arange(num_classes)[:, None] != target[None]          # [C, B]
    flips = other & (jnp.argmax(cand_logits, axis=2) != target[None])
    linear = jnp.where(other, margins.T / jnp.maximum(norms.T, 1e-12), jnp.inf)
    to = jnp.where(flips.any(0) & (t > 1), jnp.argmin(jnp.where(flips, linear, jnp.inf), axis=0),
                   jnp.argmin(linear, axis=0))
    return candidates[to, rows], to


def counterfactual(fn, x, target, *, method: str = "transport", t: float = 1.1, to=None,
                   search=None) -> CounterfactualResult:
    """Counterfactual inputs for class ``target`` of a batched model (module docstring).

    Args:
      fn: batched model ``x [B, ...] -> logits [B, C]`` (examples must not interact).
      x: float inputs ``[B, ...]``.
      target: ``int[B]``, the class to move away from (usually the prediction).
      method: ``"transport"`` (one step along the margin gradient, meant for 1-Lipschitz
        networks; ``C`` backward passes) or ``"search"`` (any model).
      t: transport step as a multiple of the distance to the linearised boundary;
        ``t > 1`` crosses it.
      to: ``int[B]`` class to move towards (transport only); default the closest class
        whose step changes the prediction (module docstring).
      search: a dict of options of :func:`lipxai.boundary.search` (``method="search"``
        only; default ``{"method": "pgd"}``).

    Returns:
      :class:`CounterfactualResult`.  An invalid example (non-finite ``x``; under ``jit`` a
      ``target`` or ``to`` out of range, or ``to == target``) has NaN points, logits and
      distances, ``classes = -1`` and ``flipped`` False.
    """
    one_of("method", method, ("transport", "search"))
    x, target, valid = check_inputs(fn, x, target)
    num_classes = jax.eval_shape(fn, jax.ShapeDtypeStruct(x.shape, x.dtype)).shape[1]
    if num_classes < 2:
        raise ValueError(f"fn must return at least 2 classes, got {num_classes}")
    target = target.astype(jnp.int32)
    if method == "transport":
        if search is not None:
            raise ValueError('search= options need method="search"')
        positive("t", t)
        if to is not None:
            to = labels_for("to", to, num_classes, x.shape[0]).astype(jnp.int32)
            if not (is_tracer(to) or is_tracer(target)) and bool(jnp.any(to == target)):
                raise ValueError("to must differ from target for every example")
            valid = valid & in_range(to, num_classes) & (to != target)
        points, classes = _transport(fn, x, target, to, jnp.asarray(t, x.dtype))
        logits = fn(points)
    else:
        if to is not None:
            raise ValueError('to= is supported by method="transport" only; the search leaves '
                             "the target's region towards whichever class is closest")
        if search is not None and not isinstance(search, dict):
            raise TypeError(f"search must be a dict of lipxai.boundary.search options, got {type(search).__name__}")
        result = lipxai.boundary.search(fn, x, target, **{"method": "pgd", **(search or {})})
        points = result.points
        logits = fn(points)
        classes = jnp.argmax(logits, axis=1).astype(jnp.int32)
    flipped = jnp.argmax(logits, axis=1) != target
    return nan_unless(valid, CounterfactualResult(points=points, logits=logits, classes=classes,
                                                  distances=_l2(points - x), flipped=flipped))
