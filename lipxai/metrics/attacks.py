r"""Adversarial attacks on explanations: change the explanation, keep the prediction.

:func:`attack_explanation` looks for :math:`x_{adv}` in the ball
:math:`\|x_{adv} - x\| \le \varepsilon` (and in the data range) whose explanation differs
as much as possible from the explanation of :math:`x` while the model's predicted class
stays the same.  It implements

* Ghorbani, Abid & Zou 2019, "Interpretation of neural networks is fragile" (AAAI):
  the *top-k* attack (``objective="topk"``) and the *centre-of-mass* attack
  (``objective="center_of_mass"``), with their acceptance rule: an iterate counts only if
  its predicted class is the original one, and the best such iterate is returned;
* Dombrowski et al. 2019, "Explanations can be manipulated and geometry is to blame"
  (NeurIPS): the *target-map* attack (``objective="target_map"``), and the softplus
  smoothing of the ReLUs (:func:`lipxai.metrics.softplus_relu`) that gives the gradient of
  an explanation a non-zero derivative.

Maps
----
An explanation ``h`` (shaped like ``x``) is compared as a *pixel map*: ``|h|`` summed over
the channel axis (the last axis of ``[B, H, W, C]``; inputs of rank 2 have one feature per
element), normalised to unit sum per example,

.. math:: m(h)_i = \frac{\sum_c |h_{i,c}|}{\sum_{j,c} |h_{j,c}|},

so that no objective can be met by merely scaling the explanation down.  Let :math:`m_0 = m(h(x))` be the original map, :math:`T_k` its ``k``
largest pixels and :math:`C(m) = \sum_i m_i\, p_i` its centre of mass (:math:`p_i` the
pixel's grid coordinates, in pixels).

Objectives (minimised)
----------------------
With :math:`m_\beta(z) = m(h_\beta(z))` the map of the *smoothed* model
(``softplus_relu(fn, beta)``) and :math:`\gamma` = ``prediction_weight``:

* ``"topk"`` (Ghorbani et al.): :math:`\sum_{i\in T_k} m_\beta(z)_i`, the share of the
  explanation left on the originally most important pixels;
* ``"center_of_mass"`` (Ghorbani et al.): :math:`-\|C(m_\beta(z)) - C(m_0)\|_2`;
* ``"target_map"`` (Dombrowski et al.): :math:`\frac1F\|m_\beta(z) - m(h^t)\|_2^2` for a
  given target explanation :math:`h^t`;

each plus :math:`\gamma\,\frac1C\|f(z) - f(x)\|_2^2` with :math:`f` the logits of the
original model (Dombrowski et al.'s output term).  ``prediction_weight=None`` takes
``1e-5`` for ``"target_map"`` (the ratio ``1e6 / 1e11`` of the output and map prefactors
of Dombrowski et al.'s reference code, whose output term is on the network's outputs) and
``0`` for the others (Ghorbani et al. rely on the acceptance rule alone).

Optimisation
------------
Projected gradient descent from ``x`` (or, when ``key`` is given, from a random point of
the ball: uniform in the L-inf box; for L2 a uniform direction at a radius drawn uniformly
in ``[0, eps]``): ``z <- z - step_size * sign(g)`` for ``norm="linf"`` (the iterative FGSM of
Ghorbani et al.), ``z <- z - step_size * g / ||g||_2`` for ``"l2"``, with ``g`` the gradient
of the objective (a second-order derivative of the smoothed model), then projected onto the
``eps`` ball around ``x`` and into ``clip`` (the data range, ``[0, 1]`` by default).  At
every iterate (and at ``x``) the *original* model is evaluated: an iterate whose predicted
class differs from ``argmax f(x)`` is rejected, and the accepted iterate whose objective
computed on the original model's explanation (without the prediction term) is lowest is
returned.  ``x`` itself is always accepted, so ``prediction_kept`` is true for every
example (it is recomputed on the result, as a check).  The loop is a ``lax.fori_loop``
inside one ``jax.jit``.

Examples are attacked independently (the objective is a sum over the batch, the steps and
the selection are per example), as long as ``fn`` does not mix the examples of a batch.
An invalid example (a NaN or an infinity in its input or target map, a target out of range
under ``jit``) gets NaN inputs, explanations and measures and ``prediction_kept`` False, and
so does every example when a traced ``eps`` / ``step_size`` is not finite and ``>= 0`` /
``> 0`` (the NaN rule of :mod:`lipxai.metrics`).

Similarity measures (returned, between the original model's maps at ``x`` and ``x_adv``)
----------------------------------------------------------------------------------------
Computed with :mod:`lipxai.metrics.similarity` on the pixel maps:
``top_k_intersection``: :math:`|T_k(m_0) \cap T_k(m_{adv})| / k` (Ghorbani et al.);
``spearman``: rank correlation of the two pixel maps of ``|h|`` (average ranks for ties);
``center_of_mass_shift``: :math:`\|C(m_{adv}) - C(m_0)\|_2` in pixels;
``mse``: :math:`\frac1F\|m_{adv} - m_0\|_2^2` of the unit-sum maps (Dombrowski et al.).
"""

from __future__ import annotations

import functools
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lipxai._core.batched import check_inputs, target_grad
from lipxai._core.checks import (
    finite_examples,
    floating_array,
    is_tracer,
    nan_unless,
    one_of,
    positive_int,
)
from lipxai.metrics import similarity
from lipxai.metrics._common import check_key, check_real, descending_rank, map_shape, real_arg
from lipxai.metrics.smoothing import softplus_relu

__all__ = ["ExplanationAttack", "attack_explanation", "OBJECTIVES"]

#: The attack objectives (module docstring).
OBJECTIVES = ("topk", "center_of_mass", "target_map")
_DEFAULT_PREDICTION_WEIGHT = {"topk": 0.0, "center_of_mass": 0.0, "target_map": 1e-5}


class ExplanationAttack(NamedTuple):
    """The result of :func:`attack_explanation` (per-example fields are ``[B]``).

    Attributes:
      x_adv: the adversarial inputs, shaped like ``x``.
      explanation: the explanation of ``x_adv`` by the original (unsmoothed) model.
      original_explanation: the explanation of ``x``.
      prediction_kept: ``bool[B]``, ``argmax fn(x_adv) == argmax fn(x)`` (False for an
        invalid example, whose other fields are NaN: module docstring).
      top_k_intersection: ``float[B]`` in ``[0, 1]``, shared share of the ``k`` top pixels.
      spearman: ``float[B]``, rank correlation of the pixel maps.
      center_of_mass_shift: ``float[B]``, in pixels.
      mse: ``float[B]``, mean squared difference of the unit-sum pixel maps.
    """

    x_adv: jax.Array
    explanation: jax.Array
    original_explanation: jax.Array
    prediction_kept: jax.Array
    top_k_intersection: jax.Array
    spearman: jax.Array
    center_of_mass_shift: jax.Array
    mse: jax.Array


# ---------------------------------------------------------------------------------------
# maps and similarity measures (traced)
# ---------------------------------------------------------------------------------------


def _raw_map(h):
    """``[B, F]``: ``|h|`` summed over the channel axis (rank >= 3), flattened."""
    a = jnp.abs(h)
    if a.ndim >= 3:
        a = a.sum(-1)
    return a.reshape(a.shape[0], -1)


def _unit_sum(m):
    s = m.sum(-1, keepdims=True)
    return m / jnp.where(s > 0, s, 1)


def _pixel_map(h):
    """The unit-sum pixel map ``m(h)`` of the module docstring, ``[B, F]``."""
    return _unit_sum(_raw_map(h))


def _coordinates(grid) -> np.ndarray:
    """``[F, d]`` grid coordinates of the pixels (row-major, as the flattened maps)."""
    return np.indices(grid).reshape(len(grid), -1).T.astype(np.float32)


def _center(m, coords):
    """Centre of mass ``[B, d]`` of unit-sum maps ``m[B, F]``."""
    return m @ jnp.asarray(coords, m.dtype)


def _top_k_mask(m, k: int):
    return descending_rank(m) < k


def _mse(ma, mb):
    return ((ma - mb) ** 2).mean(-1)


# ---------------------------------------------------------------------------------------
# the attack (traced)
# ---------------------------------------------------------------------------------------


def _saliency(fn, z, t):
    return target_grad(fn)(z, t)[1]


@functools.partial(
    jax.jit,
    static_argnames=("fn", "explain", "objective", "steps", "norm", "k", "beta", "max_min",
                     "clip", "gamma", "random_start"),
)
def _attack(fn, explain, x, target, target_map, key, eps, step_size, valid, *, objective, steps,
            norm, k, beta, max_min, clip, gamma, random_start):
    smooth = softplus_relu(fn, beta, max_min=max_min)
    coords = _coordinates(map_shape(x.shape))
    logits0 = fn(x)
    pred0 = jnp.argmax(logits0, -1)
    h0 = explain(fn, x, target)
    m0 = _pixel_map(h0)
    top0 = _top_k_mask(m0, k).astype(x.dtype)
    c0 = _center(m0, coords)
    mt = target_map  # already a unit-sum pixel map [B, F]

    def map_term(m):
        """Per-example objective of a map (lower = more successful attack)."""
        if objective == "topk":
            return (top0 * m).sum(-1)
        if objective == "center_of_mass":
            d = _center(m, coords) - c0
            return -jnp.sqrt((d * d).sum(-1) + 1e-12)
        return _mse(m, mt)

    def smoothed_loss(z):
        loss = map_term(_pixel_map(explain(smooth, z, target)))
        if gamma > 0:
            loss = loss + gamma * ((fn(z) - logits0) ** 2).mean(-1)
        return loss.sum()

    def evaluate(z):
        """Objective on the original model, and whether the prediction is kept."""
        ok = jnp.argmax(fn(z), -1) == pred0
        return map_term(_pixel_map(explain(fn, z, target))), ok

    bshape = (-1,) + (1,) * (x.ndim - 1)

    def per_example(v):
        return v.reshape(bshape)

    def project(z):
        delta = z - x
        if norm == "linf":
            delta = jnp.clip(delta, -eps, eps)
        else:
            n = jnp.sqrt((delta * delta).reshape(x.shape[0], -1).sum(-1))
            delta = delta * per_example(jnp.minimum(1.0, eps / jnp.where(n > 0, n, 1.0)))
        z = x + delta
        if clip is not None:
            z = jnp.clip(z, clip[0], clip[1])
        return z

    def select(z, best_z, best_val):
        val, ok = evaluate(z)
        better = ok & (val < best_val)
        return (jnp.where(per_example(better), z, best_z), jnp.where(better, val, best_val))

    def body(_, carry):
        z, best_z, best_val = carry
        best_z, best_val = select(z, best_z, best_val)
        g = jax.grad(smoothed_loss)(z)
        if norm == "linf":
            direction = jnp.sign(g)
        else:
            gn = jnp.sqrt((g * g).reshape(x.shape[0], -1).sum(-1))
            direction = g / per_example(jnp.where(gn > 0, gn, 1.0))
        z = project(z - step_size * direction)
        return z, best_z, best_val

    if random_start:
        if norm == "linf":
            noise = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * eps
        else:
            kd, kr = jax.random.split(key)
            d = jax.random.normal(kd, x.shape, x.dtype)
            d = d / per_example(jnp.sqrt((d * d).reshape(x.shape[0], -1).sum(-1)))
            r = jax.random.uniform(kr, (x.shape[0],), x.dtype)
            noise = d * per_example(r) * eps
        start = project(x + noise)
    else:
        start = x
    best_val0 = map_term(m0)
    z, best_z, best_val = lax.fori_loop(0, steps, body, (start, x, best_val0))
    x_adv, _ = select(z, best_z, best_val)

    h = explain(fn, x_adv, target)
    kept = jnp.argmax(fn(x_adv), -1) == pred0
    return nan_unless(valid, (x_adv, h, h0, kept, _pixel_map(h), m0))


# ---------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------


class _Explain:
    """``explain(fn, z, t)`` wrapped so that the jit cache sees one object per method."""

    def __init__(self, f):
        self.f = f

    def __call__(self, fn, z, t):
        return self.f(fn, z, t)

    def __hash__(self):
        return hash(self.f)

    def __eq__(self, other):
        return isinstance(other, _Explain) and other.f is self.f


_SALIENCY = _Explain(_saliency)


def _check_target_map(target_map, x, objective):
    if objective != "target_map":
        if target_map is not None:
            raise ValueError(
                f"target_map is only used by objective='target_map', got objective={objective!r}"
            )
        return None
    if target_map is None:
        raise ValueError("objective='target_map' needs a target_map (an explanation shaped "
                         f"like x {tuple(x.shape)} or a pixel map "
                         f"{(x.shape[0],) + map_shape(x.shape)}), got None")
    tm = floating_array("target_map", target_map)
    allowed = {tuple(x.shape), (x.shape[0],) + map_shape(x.shape)}
    if tuple(tm.shape) not in allowed:
        raise ValueError(
            f"target_map must have the shape of x {tuple(x.shape)} or of its pixel maps "
            f"{(x.shape[0],) + map_shape(x.shape)}, got {tuple(tm.shape)}"
        )
    tm = tm.astype(x.dtype)
    if tuple(tm.shape) == tuple(x.shape):
        return _pixel_map(tm)
    return _unit_sum(jnp.abs(tm).reshape(x.shape[0], -1))


def _check_clip(clip, x):
    if clip is None:
        return None
    if (not isinstance(clip, (tuple, list)) or len(clip) != 2
            or not all(isinstance(c, numbers.Real) and not isinstance(c, bool) for c in clip)
            or not clip[0] < clip[1]):
        raise ValueError(f"clip must be None or a pair (low, high) with low < high, got {clip!r}")
    lo, hi = float(clip[0]), float(clip[1])
    if not is_tracer(x):
        values = np.asarray(x)
        values = values[np.isfinite(values)]  # a NaN or infinite example gives NaN instead
        if values.size and (values.min() < lo or values.max() > hi):
            raise ValueError(
                f"x must lie in the data range clip=({lo}, {hi}), got values in "
                f"[{values.min()}, {values.max()}] (pass clip=None to attack without it)"
            )
    return lo, hi


def attack_explanation(fn, x, target, *, eps: float, explain="saliency",
                       objective: str = "topk", steps: int = 100,
                       step_size: float | None = None, k: int | None = None,
                       target_map=None, beta: float = 10.0, norm: str = "linf",
                       prediction_weight: float | None = None,
                       clip: tuple[float, float] | None = (0.0, 1.0),
                       max_min: bool = False, key=None) -> ExplanationAttack:
    r"""Attack the explanation of ``fn`` at ``x``, keeping the predicted class.

    Ghorbani et al. 2019 (top-k and centre-of-mass attacks) and Dombrowski et al. 2019
    (target-map attack, softplus smoothing); the objectives, the maps, the optimisation and
    the returned measures are defined in the module docstring.

    Args:
      fn: batched model ``x[B, ...] -> logits[B, C]`` (any JAX function; its ReLUs are
        smoothed for the attack's gradients by :func:`lipxai.metrics.softplus_relu`).
      x: floating inputs ``[B, ...]`` (images NHWC), inside ``clip``.
      target: ``int[B]``, the class whose explanation is attacked.
      eps: radius :math:`\varepsilon \ge 0` of the ball (``norm``) around ``x``.
      explain: ``"saliency"`` (the gradient of the target logit) or a callable
        ``explain_fn(fn, x, target) -> attributions`` shaped like ``x`` (e.g.
        ``lipxai.explain.gradient_x_input``), differentiable twice through ``fn``.
      objective: ``"topk"``, ``"center_of_mass"`` or ``"target_map"``.
      steps: number of PGD steps ``>= 1``.
      step_size: step length; default ``2.5 * eps / steps`` (Madry et al.'s choice).
      k: number of top pixels (objective ``"topk"`` and the ``top_k_intersection``
        measure), in ``[1, F]``; default 10% of the ``F`` pixels (rounded up).
      target_map: for ``"target_map"`` only: the target explanation, shaped like ``x`` or
        like the pixel maps ``[B, *x.shape[1:-1]]``.
      beta: softplus inverse temperature :math:`\beta > 0` of the smoothed model.
      norm: ``"linf"`` (sign steps) or ``"l2"`` (normalised gradient steps).
      prediction_weight: :math:`\gamma \ge 0`, weight of the logit-preservation term;
        ``None`` takes the objective's default (module docstring).
      clip: the data range ``(low, high)`` the iterates are projected into, or ``None``.
      max_min: also smooth elementwise ``max`` / ``min`` (GroupSort / MaxMin activations of
        1-Lipschitz networks, piecewise linear like ReLU); see
        :func:`lipxai.metrics.softplus_relu`.
      key: ``jax.random`` key for a random start in the ball (module docstring); ``None``
        starts at ``x``.  The centre-of-mass objective needs no random start: the smoothed
        model's centre of mass at ``x`` already differs slightly from the original one,
        which gives the first step its direction.

    Returns:
      An :class:`ExplanationAttack` (NaN, and ``prediction_kept`` False, for an invalid
      example: module docstring).
    """
    x, target, valid = check_inputs(fn, x, target)
    if isinstance(explain, str):
        one_of("explain", explain, ("saliency",))
        explain_ = _SALIENCY
    elif callable(explain):
        out = jax.eval_shape(lambda z, t: explain(fn, z, t),
                             jax.ShapeDtypeStruct(x.shape, x.dtype),
                             jax.ShapeDtypeStruct(target.shape, target.dtype))
        if tuple(getattr(out, "shape", ())) != tuple(x.shape):
            raise ValueError(
                f"explain(fn, x, target) must return attributions of x's shape "
                f"{tuple(x.shape)}, got {getattr(out, 'shape', type(out).__name__)}"
            )
        explain_ = _Explain(explain)
    else:
        raise TypeError(f"explain must be 'saliency' or a callable, got {type(explain).__name__}")
    one_of("objective", objective, OBJECTIVES)
    one_of("norm", norm, ("linf", "l2"))
    eps, eps_ok = real_arg("eps", eps)
    steps = positive_int("steps", steps)
    step_size, step_ok = ((2.5 * eps / steps, True) if step_size is None
                          else real_arg("step_size", step_size, strict=True))
    beta = check_real("beta", beta, strict=True)
    features = int(np.prod(map_shape(x.shape)))
    if k is None:
        k = max(1, -(-features // 10))
    if not isinstance(k, numbers.Integral) or isinstance(k, bool) or not 1 <= k <= features:
        raise ValueError(f"k must be an integer in [1, {features}] (the number of pixels), "
                         f"got {k!r}")
    target_map = _check_target_map(target_map, x, objective)
    valid = valid & eps_ok & step_ok
    if target_map is not None:
        valid = valid & finite_examples(target_map)
    gamma = (_DEFAULT_PREDICTION_WEIGHT[objective] if prediction_weight is None
             else check_real("prediction_weight", prediction_weight))
    clip = _check_clip(clip, x)
    if key is not None:
        check_key(key)
    x_adv, h, h0, kept, m, m0 = _attack(
        fn, explain_, x, target, target_map, key, jnp.asarray(eps, x.dtype),
        jnp.asarray(step_size, x.dtype), valid, objective=objective, steps=steps, norm=norm,
        k=int(k), beta=beta, max_min=bool(max_min), clip=clip, gamma=gamma,
        random_start=key is not None)
    # the measures are jitted on their own: compiled once per shape, whatever the attack
    return ExplanationAttack(
        x_adv=x_adv,
        explanation=h,
        original_explanation=h0,
        prediction_kept=kept,
        top_k_intersection=similarity.top_k_intersection(m0, m, int(k)),
        spearman=similarity.spearman(m0, m),
        center_of_mass_shift=similarity.center_of_mass_shift(h, h0),
        mse=similarity.mse(m, m0),
    )
