"""Boundary attributions: attributions at, or from, the closest decision-boundary point.

Wang, Fredrikson & Datta 2022, "Robust models are more interpretable because
attributions look normal" (ICML): with ``x'`` the closest point to ``x`` on the
boundary of the region of class ``t`` (found by :func:`lipxai.boundary.search`),

* BSM, the boundary-based saliency map: :math:`\\nabla f_t(x')`;
* BIG, boundary-based integrated gradients: IG of ``f_t`` along the straight path from
  the baseline ``x'`` to ``x``, so that ``sum BIG(x) = f_t(x) - f_t(x')``;
* here also SmoothGrad evaluated at ``x'``.

The search runs per example; where it fails (``success`` false, e.g. the ladder's
largest radius was too small) there is no boundary point and the attribution is
``nan``, which :func:`lipxai.boundary.search`'s ``success`` mask explains.  Pass a
precomputed :class:`lipxai.boundary.BoundaryResult` as ``boundary=`` to share one search
between several attributions, or the search's options as ``search=dict(method=...)``.
"""

from __future__ import annotations

import jax.numpy as jnp

import lipxai.boundary
from lipxai._core.batched import check_inputs
from lipxai._core.checks import finite_examples, nan_unless
from lipxai.explain.gradients import saliency, smoothgrad
from lipxai.explain.integrated import integrated_gradients

__all__ = ["boundary_point", "boundary_saliency", "big", "boundary_smoothgrad"]


def boundary_point(fn, x, target, *, boundary=None, search=None):
    """The :class:`~lipxai.boundary.BoundaryResult` to attribute from: ``boundary`` if given
    (checked against ``x``), else ``lipxai.boundary.search(fn, x, target, **search)``."""
    x, target, _ = check_inputs(fn, x, target)
    if search is not None and not isinstance(search, dict):
        raise TypeError(f"search must be a dict of lipxai.boundary.search options, got {type(search).__name__}")
    if boundary is None:
        return lipxai.boundary.search(fn, x, target, **(search or {}))
    if search:
        raise ValueError(f"pass either boundary= or search=, not both: {sorted(search)}")
    if not isinstance(boundary, lipxai.boundary.BoundaryResult):
        raise TypeError(f"boundary must be a lipxai.boundary.BoundaryResult, got {type(boundary).__name__}")
    if boundary.points.shape != x.shape:
        raise ValueError(f"boundary.points has shape {tuple(boundary.points.shape)}, x has "
                         f"{tuple(x.shape)}")
    return boundary


def _mask_failures(attr, result, x):
    """NaN where the search failed or ``x`` is not finite (a precomputed ``boundary`` may
    hold a finite point for it); targets out of range are NaN in ``attr`` already."""
    return nan_unless(result.success & finite_examples(jnp.asarray(x)), attr)


def boundary_saliency(fn, x, target, *, boundary=None, search=None, absolute: bool = False):
    """BSM: the saliency of class ``target`` at the closest boundary point (module docstring).

    ``search``: a dict of options of :func:`lipxai.boundary.search` (``method``,
    ``norm``, ...), or ``boundary``: its precomputed result.  Examples whose search failed
    are ``nan``.
    """
    result = boundary_point(fn, x, target, boundary=boundary, search=search)
    attr = saliency(fn, result.points, target, absolute=absolute)
    return _mask_failures(attr, result, x)


def big(fn, x, target, *, boundary=None, search=None, steps: int = 16,
        method: str = "gausslegendre", batch_size: int | None = None):
    """BIG: integrated gradients from the closest boundary point to ``x`` (module docstring).

    ``steps``, ``method`` and ``batch_size`` as in
    :func:`lipxai.explain.integrated_gradients`; ``boundary``, ``search`` as in
    :func:`boundary_saliency`.
    """
    result = boundary_point(fn, x, target, boundary=boundary, search=search)
    attr = integrated_gradients(fn, x, target, baseline=result.points, steps=steps,
                                method=method, batch_size=batch_size)
    return _mask_failures(attr, result, x)


def boundary_smoothgrad(fn, x, target, *, key, boundary=None, search=None, samples: int = 50,
                        noise: float = 0.2, batch_size: int | None = None):
    """SmoothGrad of class ``target`` around the closest boundary point (module docstring).

    ``key``, ``samples``, ``noise``, ``batch_size`` as in :func:`lipxai.explain.smoothgrad`;
    ``boundary``, ``search`` as in :func:`boundary_saliency`.
    """
    result = boundary_point(fn, x, target, boundary=boundary, search=search)
    attr = smoothgrad(fn, result.points, target, key=key, samples=samples, noise=noise,
                      batch_size=batch_size)
    return _mask_failures(attr, result, x)
