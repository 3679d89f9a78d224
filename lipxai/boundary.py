"""Batched, jitted search for the closest decision-boundary point.

For a batched model ``fn(x) -> logits [B, C]`` and classes ``target int[B]`` the
*margin* is ``m(x) = f_target(x) - max_{j != target} f_j(x)``; the boundary of the
target's decision region is ``{m = 0}``. :func:`search` looks, per example, for a
point ``x'`` with ``m(x') <= 0`` and ``|m(x')| <= tol`` that is as close to ``x`` as
the chosen method can find, in the L2 or L-inf norm:

* ``"pgd"``: the PGD ladder of boundary attributions (Wang, Fredrikson & Datta 2022,
  "Robust models are more interpretable because attributions look normal"): for an
  increasing ladder of radii ``eps``, run projected gradient descent on ``m`` within
  the ``eps``-ball; every example stops at the first radius where it crosses.
* ``"transport"``: the optimal-transport step of 1-Lipschitz networks (Serrurier et
  al. 2023, "On the explainable properties of 1-Lipschitz neural networks: an
  optimal transport perspective"): ``x' = x - m(x) grad m(x) / ||grad m(x)||^2`` (the
  paper's ``x - f(x) grad f(x)`` with ``||grad f|| = 1``), iterated from the
  accumulated displacement with a small overshoot; exact for a linear margin.
  With ``norm="linf"`` the step is ``-m sign(g) / ||g||_1``.
* ``"deepfool"``: multiclass DeepFool (Moosavi-Dezfooli, Fawzi & Frossard 2016) with
  overshoot; linearises every ``f_j - f_target`` (``C`` vector-Jacobian products per
  iteration) and steps to the nearest linearised boundary (L2, or L-inf with the
  dual L1 norm).
* ``"cw"`` (L2 only): simplified Carlini & Wagner (2017) L2: minimise
  ``||d||^2 + c max(m(x + d), -kappa)`` with Adam (cosine-decayed learning rate),
  with a binary search on ``c`` per example; keeps the smallest successful ``d``.
* ``"all"``: every method valid for the norm; per example the closest successful point.

Every method ends with a bisection on the segment from ``x`` to the point found
(``refine_steps`` halvings, keeping the far end on the non-target side), so the
returned point satisfies ``-tol <= m(point) <= 0`` and ``distances`` is measured
after refinement. An example whose ``m(x) <= 0`` already is returned unchanged with
distance 0 and ``success=True``.

With more than two classes ``{m <= 0}`` is a union of regions (for a linear model, of
half-spaces ``f_t <= f_j``), so the gradient methods (PGD, transport, CW) can end on
the boundary of the runner-up class at ``x`` when another class is closer; DeepFool
looks at every class, and ``"all"`` keeps the best. No method returns a point closer
than the true boundary distance since every returned point is checked by ``m``.

The methods take gradients inside loops; on CPU the search is re-interpreted with its
convolutions in the forms XLA:CPU runs fastest (:func:`lipxai._core.xla_cpu.for_gradients`:
kernels laid out explicitly, as XLA:CPU runs a convolution's input gradient inside a loop
with a slow kernel otherwise, and padded for XLA's threaded kernel; same values; timings in
docs/results.md).

Per-example results assume that ``fn`` treats examples independently (no batch
statistics): gradients are taken of ``sum_b m_b`` and every update, stop and
projection is per example, so an example's result does not depend on its batch.

An invalid example (an input with a NaN or an infinity, or under ``jit`` a target out of
range) is never a success: its points, distances and margins are NaN.
"""

from __future__ import annotations

import functools
import math
import numbers

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lipxai._core import margins
from lipxai._core.checks import (
    finite_examples,
    floating_array,
    in_range,
    labels_for,
    nan_unless,
    non_empty,
    non_negative,
    one_of,
    positive,
    positive_int,
)
from lipxai._core.xla_cpu import for_gradients

__all__ = ["BoundaryResult", "margin", "search"]

_NORMS = ("l2", "linf")
_METHODS = ("pgd", "deepfool", "cw", "transport", "all")
_TINY = 1e-12
_SAFETY = 0.01  # bisection aims at m = -0.01 tol: robustly across, well within tol


@flax.struct.dataclass
class BoundaryResult:
    """Result of :func:`search` (a pytree).

    Attributes:
      points: boundary points, the shape of ``x``.
      distances: ``float[B]``, ``||points - x||`` in the search norm.
      success: ``bool[B]``, ``-tol <= m(points) <= 0`` (or ``m(x) <= 0`` already).
      margins: ``float[B]``, ``m(points) = f_target - max_{j != target} f_j``.
    """

    points: jax.Array
    distances: jax.Array
    success: jax.Array
    margins: jax.Array


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def margin(fn, x, target):
    """``m(x) = f_target(x) - max_{j != target} f_j(x)``, ``float[B]``."""
    return margins.margin(fn(x), target)


def _bc(v, x):
    """Broadcast a per-example vector ``[B]`` against ``x [B, ...]``."""
    return v.reshape((-1,) + (1,) * (x.ndim - 1))


def _norm(d, norm):
    flat = d.reshape(d.shape[0], -1)
    if norm == "l2":
        return jnp.sqrt(jnp.sum(flat * flat, axis=1))
    return jnp.max(jnp.abs(flat), axis=1)


def _l1(d):
    return jnp.sum(jnp.abs(d.reshape(d.shape[0], -1)), axis=1)


def _value_and_grad(mfn, x):
    vals, vjp = jax.vjp(mfn, x)
    (g,) = vjp(jnp.ones_like(vals))
    return vals, g


def _linear_step(m, g, norm):
    """Smallest step ``d`` with ``m + <g, d> = 0``: ``-m g/||g||^2`` (L2), ``-m sign(g)/||g||_1``."""
    if norm == "l2":
        sq = jnp.sum(jnp.square(g.reshape(g.shape[0], -1)), axis=1)
        return -_bc(m / jnp.maximum(sq, _TINY), g) * g
    return -_bc(m / jnp.maximum(_l1(g), _TINY), g) * jnp.sign(g)


# ---------------------------------------------------------------------------------------
# Methods: each returns a candidate point (refined afterwards)
# ---------------------------------------------------------------------------------------


def _pgd(mfn, x, m0, ladder, norm, steps, step_size, eps_bisect):
    """PGD ladder with per-example early stop (``lax.while_loop`` over the radii)."""
    num = ladder.shape[0]

    def attack(eps):
        alpha = _bc(step_size * eps / steps, x)

        def body(_, xa):
            _, g = _value_and_grad(mfn, xa)
            if norm == "l2":
                direction = g / _bc(jnp.maximum(_norm(g, "l2"), _TINY), g)
            else:
                direction = jnp.sign(g)
            delta = xa - alpha * direction - x
            if norm == "l2":
                n = _norm(delta, "l2")
                delta = delta * _bc(jnp.minimum(1.0, eps / jnp.maximum(n, _TINY)), x)
            else:
                delta = jnp.clip(delta, -_bc(eps, x), _bc(eps, x))
            return x + delta

        return jax.lax.fori_loop(0, steps, body, x)

    def cond(state):
        k, done, _, _ = state
        return (k < num) & ~jnp.all(done)

    def body(state):
        k, done, found, level = state
        eps = jnp.full(x.shape[:1], ladder[k], x.dtype)
        xa = attack(eps)
        new = ~done & (mfn(xa) <= 0)
        found = jnp.where(_bc(new, x), xa, found)
        level = jnp.where(new, k, level)
        return k + 1, done | new, found, level

    b = x.shape[0]
    init = (jnp.int32(0), m0 <= 0, x, jnp.full((b,), -1, jnp.int32))
    _, done, found, level = jax.lax.while_loop(cond, body, init)

    # bisection on the radius between the last radius that failed and the first that crossed
    active = done & (level >= 0)
    hi = ladder[jnp.maximum(level, 0)]
    lo = jnp.where(level > 0, ladder[jnp.maximum(level - 1, 0)], 0.0)

    def refine(_, state):
        lo, hi, found = state
        mid = 0.5 * (lo + hi)
        xa = attack(mid)
        crossed = active & (mfn(xa) <= 0)
        found = jnp.where(_bc(crossed, x), xa, found)
        return jnp.where(crossed, lo, mid), jnp.where(crossed, mid, hi), found

    _, _, found = jax.lax.fori_loop(0, eps_bisect, refine, (lo, hi, found))
    return found


def _newton(step_fn, x, m0, iters, overshoot):
    """Accumulate linearised steps ``r``; iterate at ``x + (1 + overshoot) r`` until it crosses."""

    def body(_, state):
        r, done = state
        xa = x + (1.0 + overshoot) * r
        m_now, step = step_fn(xa)
        done = done | (m_now <= 0)
        r = jnp.where(_bc(done, x), r, r + step)
        return r, done

    r, _ = jax.lax.fori_loop(0, iters, body, (jnp.zeros_like(x), m0 <= 0))
    return x + (1.0 + overshoot) * r


def _transport(mfn, x, m0, norm, iters, overshoot):
    def step_fn(xa):
        m, g = _value_and_grad(mfn, xa)
        return m, _linear_step(m, g, norm)

    return _newton(step_fn, x, m0, iters, overshoot)


def _deepfool(fn, target, x, m0, norm, iters, overshoot, num_classes):
    eye = jnp.eye(num_classes, dtype=x.dtype)
    tmask = jax.nn.one_hot(target, num_classes, dtype=bool)

    def step_fn(xa):
        logits, vjp = jax.vjp(fn, xa)
        cot = jnp.broadcast_to(eye[:, None, :], (num_classes,) + logits.shape).astype(logits.dtype)
        jac = jax.vmap(lambda e: vjp(e)[0])(cot)  # [C, B, ...]
        jac = jnp.moveaxis(jac, 0, 1)  # [B, C, ...]
        own_g = jnp.take_along_axis(jac, target.reshape((-1, 1) + (1,) * (x.ndim - 1)), axis=1)
        w = jac - own_g  # grad (f_j - f_t)
        f = logits - jnp.take_along_axis(logits, target[:, None], axis=1)  # f_j - f_t
        wflat = w.reshape(w.shape[0], num_classes, -1)
        wn = (jnp.sqrt(jnp.sum(wflat * wflat, axis=2)) if norm == "l2"
              else jnp.sum(jnp.abs(wflat), axis=2))
        ratio = jnp.where(tmask, jnp.inf, jnp.abs(f) / jnp.maximum(wn, _TINY))
        best = jnp.argmin(ratio, axis=1)
        wl = jnp.take_along_axis(w, best.reshape((-1, 1) + (1,) * (x.ndim - 1)), axis=1)[:, 0]
        fl = jnp.abs(jnp.take_along_axis(f, best[:, None], axis=1)[:, 0]) + 1e-4
        nl = jnp.take_along_axis(wn, best[:, None], axis=1)[:, 0]
        if norm == "l2":
            step = _bc(fl / jnp.maximum(nl * nl, _TINY), x) * wl
        else:
            step = _bc(fl / jnp.maximum(nl, _TINY), x) * jnp.sign(wl)
        return margins.margin(logits, target), step

    return _newton(step_fn, x, m0, iters, overshoot)


def _cw(mfn, x, m0, steps, rounds, lr, c0, kappa):
    """CW-L2 in units of the linearised distance ``s = |m(x)| / ||grad m(x)||`` per example.

    With ``d = s u`` the objective ``||d||^2 + c' max(m, -kappa)`` is minimised as
    ``||u||^2 + c max(m(x + s u), -kappa) / |m(x)|`` (``c = c' s^2 / |m(x)|``), so
    ``lr`` and ``c`` do not depend on the scale of the inputs or logits.
    """
    schedule = optax.cosine_decay_schedule(lr, steps, alpha=0.01)
    opt = optax.adam(schedule)
    big = jnp.asarray(jnp.inf, x.dtype)
    _, g0 = _value_and_grad(mfn, x)
    gn = _norm(g0, "l2")
    am0 = jnp.maximum(jnp.abs(m0), _TINY)
    scale = jnp.where(gn > _TINY, am0 / jnp.maximum(gn, _TINY), 1.0)
    sb = _bc(scale, x)

    def loss(u, c):
        m = mfn(x + sb * u)
        sq = jnp.sum(jnp.square(u.reshape(u.shape[0], -1)), axis=1)
        return jnp.sum(sq + c * jnp.maximum(m, -kappa) / am0), m

    def run(c):
        def body(_, state):
            u, opt_state, best_u, best_n = state
            (_, m), g = jax.value_and_grad(loss, has_aux=True)(u, c)
            n = _norm(u, "l2")
            better = (m <= 0) & (n < best_n)
            best_u = jnp.where(_bc(better, x), u, best_u)
            best_n = jnp.where(better, n, best_n)
            updates, opt_state = opt.update(g, opt_state, u)
            return optax.apply_updates(u, updates), opt_state, best_u, best_n

        u0 = jnp.zeros_like(x)
        init = (u0, opt.init(u0), u0, jnp.full(x.shape[:1], big))
        u, _, best_u, best_n = jax.lax.fori_loop(0, steps, body, init)
        m = mfn(x + sb * u)  # the last iterate
        n = _norm(u, "l2")
        better = (m <= 0) & (n < best_n)
        return jnp.where(_bc(better, x), u, best_u), jnp.where(better, n, best_n)

    def round_(_, state):
        c, lo, hi, best_u, best_n = state
        u, n = run(c)
        ok = jnp.isfinite(n)
        better = n < best_n
        best_u = jnp.where(_bc(better, x), u, best_u)
        best_n = jnp.where(better, n, best_n)
        hi = jnp.where(ok, jnp.minimum(hi, c), hi)
        lo = jnp.where(ok, lo, jnp.maximum(lo, c))
        c = jnp.where(jnp.isfinite(hi), 0.5 * (lo + hi), 10.0 * c)
        return c, lo, hi, best_u, best_n

    b = x.shape[0]
    u0 = jnp.zeros_like(x)
    init = (jnp.full((b,), c0, x.dtype), jnp.zeros((b,), x.dtype), jnp.full((b,), big), u0,
            jnp.full((b,), big))
    _, _, _, best_u, _ = jax.lax.fori_loop(0, rounds, round_, init)
    return jnp.where(_bc(m0 <= 0, x), x, x + sb * best_u)


# ---------------------------------------------------------------------------------------
# Refinement and assembly
# ---------------------------------------------------------------------------------------


def _refine(mfn, x, p, m0, norm, iters, tol):
    """Bisection on ``x + t (p - x)``: keep ``hi`` on the non-target side.

    ``hi`` keeps ``m <= -0.01 tol`` (not ``m <= 0``) so that the point stays across the
    boundary when the margin is re-evaluated with a different rounding (eager vs jit).
    """
    b = x.shape[0]
    d = p - x

    def body(_, state):
        lo, hi = state
        mid = 0.5 * (lo + hi)
        over = mfn(x + _bc(mid, x) * d) <= -_SAFETY * tol
        return jnp.where(over, lo, mid), jnp.where(over, mid, hi)

    lo, hi = jax.lax.fori_loop(
        0, iters, body, (jnp.zeros((b,), x.dtype), jnp.ones((b,), x.dtype))
    )
    del lo
    pts = jnp.where(_bc(hi >= 1.0, x), p, x + _bc(hi, x) * d)
    pts = jnp.where(_bc(m0 <= 0, x), x, pts)
    m = mfn(pts)
    success = (m <= 0) & ((m >= -tol) | (m0 <= 0))
    return BoundaryResult(points=pts, distances=_norm(pts - x, norm), success=success, margins=m)


def _pick_closest(results):
    """Per example, the successful result with the smallest distance (the first if none)."""
    best = results[0]
    for r in results[1:]:
        take = r.success & (~best.success | (r.distances < best.distances))
        best = jax.tree_util.tree_map(
            lambda a, b_, t=take: jnp.where(t.reshape((-1,) + (1,) * (a.ndim - 1)), a, b_),
            r, best)
    return best


@functools.partial(
    jax.jit,
    static_argnames=("fn", "norm", "method", "num_classes", "steps", "step_size", "eps_bisect",
                     "max_iter",
                     "overshoot", "cw_steps", "cw_rounds", "cw_lr", "cw_c", "kappa",
                     "refine_steps", "tol"),
)
def _search(fn, x, target, ladder, **options):
    # the methods take gradients inside loops: convolutions in XLA:CPU's fastest forms
    return for_gradients(functools.partial(_search_in, fn, **options))(x, target, ladder)


def _search_in(fn, x, target, ladder, *, norm, method, num_classes, steps, step_size, eps_bisect,
               max_iter, overshoot, cw_steps, cw_rounds, cw_lr, cw_c, kappa, refine_steps, tol):
    mfn = lambda z: margins.margin(fn(z), target)
    m0 = mfn(x)
    if method == "pgd":
        p = _pgd(mfn, x, m0, ladder, norm, steps, step_size, eps_bisect)
    elif method == "transport":
        p = _transport(mfn, x, m0, norm, max_iter, overshoot)
    elif method == "deepfool":
        p = _deepfool(fn, target, x, m0, norm, max_iter, overshoot, num_classes)
    else:
        p = _cw(mfn, x, m0, cw_steps, cw_rounds, cw_lr, cw_c, kappa)
    return _refine(mfn, x, p, m0, norm, refine_steps, tol)


def _real(name, value, *, allow_zero=False):
    """A finite real number ``> 0`` (``>= 0`` with ``allow_zero``) as a float: a static
    argument of the compiled search."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return float((non_negative if allow_zero else positive)(name, value))


def search(fn, x, target, *, norm="l2", method="pgd", eps=None, eps_max=None, num_eps=20,
           steps=20, step_size=2.5, eps_bisect=6, max_iter=50, overshoot=0.02, cw_steps=100,
           cw_rounds=5, cw_lr=0.05, cw_c=10.0, kappa=0.0, refine_steps=30, tol=1e-3,
           batch_size=None) -> BoundaryResult:
    """Closest point on the boundary of ``target``'s decision region, per example.

    Args:
      fn: batched model ``x [B, ...] -> logits [B, C]`` (examples must not interact).
      x: float inputs ``[B, ...]`` (rank >= 2).
      target: ``int[B]`` in ``[0, C)``, the class whose region is left (usually argmax).
      norm: ``"l2"`` or ``"linf"`` (distances, PGD balls, DeepFool/transport steps).
      method: ``"pgd"``, ``"deepfool"``, ``"cw"`` (L2 only), ``"transport"`` or ``"all"``.
      eps: PGD ladder, an increasing 1-D sequence of positive radii; default
        ``num_eps`` radii geometrically spaced in ``[eps_max / 1000, eps_max]``.
      eps_max: largest default radius; default ``sqrt(D)`` (L2, ``D`` features per
        example) or ``1`` (L-inf), the diameter of ``[0, 1]^D``.
      num_eps: number of radii of the default ladder.
      steps: PGD steps per radius; ``step_size``: PGD step as ``step_size * eps / steps``.
      eps_bisect: bisection rounds on the radius between the last ladder radius that
        failed and the first that crossed (each one more PGD run).
      max_iter: DeepFool / transport iterations; ``overshoot``: their overshoot.
      cw_steps, cw_rounds, cw_lr, cw_c, kappa: CW Adam steps per constant, binary-search
        rounds on ``c``, learning rate, initial ``c`` and confidence ``kappa`` (logit
        units); ``cw_lr`` and ``cw_c`` are in units of the linearised distance
        ``|m(x)| / ||grad m(x)||`` and of ``|m(x)|`` (see ``_cw``), hence scale-free.
      refine_steps: bisection halvings; ``tol``: required ``|m(point)|`` for success.
      batch_size: process the examples in chunks of this size (``lax.map``), bounding
        memory; results are the same since examples are independent.

    Returns:
      :class:`BoundaryResult` with ``points``, ``distances``, ``success``, ``margins``
      (NaN, NaN, False, NaN for an invalid example: module docstring).
    """
    x = non_empty("x", floating_array("x", x, min_rank=2))
    one_of("norm", norm, _NORMS)
    one_of("method", method, _METHODS)
    if method == "cw" and norm != "l2":
        raise ValueError(f'method="cw" supports norm="l2" only, got norm={norm!r}')
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    out = jax.eval_shape(fn, jax.ShapeDtypeStruct(x.shape, x.dtype))
    if not hasattr(out, "shape") or len(out.shape) != 2 or out.shape[0] != x.shape[0]:
        raise ValueError(
            f"fn must map x {tuple(x.shape)} to logits of shape ({x.shape[0]}, C), "
            f"got {getattr(out, 'shape', type(out).__name__)}")
    num_classes = int(out.shape[1])
    if num_classes < 2:
        raise ValueError(f"fn must return at least 2 classes, got logits shape {out.shape}")
    target = labels_for("target", target, num_classes, x.shape[0]).astype(jnp.int32)
    tol = _real("tol", tol)
    steps = positive_int("steps", steps)
    num_eps = positive_int("num_eps", num_eps)
    max_iter = positive_int("max_iter", max_iter)
    cw_steps = positive_int("cw_steps", cw_steps)
    cw_rounds = positive_int("cw_rounds", cw_rounds)
    refine_steps = positive_int("refine_steps", refine_steps)
    step_size = _real("step_size", step_size)
    eps_bisect = positive_int("eps_bisect", eps_bisect, minimum=0)
    overshoot = _real("overshoot", overshoot, allow_zero=True)
    cw_lr = _real("cw_lr", cw_lr)
    cw_c = _real("cw_c", cw_c)
    kappa = _real("kappa", kappa, allow_zero=True)
    if eps is None:
        if eps_max is None:
            eps_max = math.sqrt(math.prod(x.shape[1:])) if norm == "l2" else 1.0
        eps_max = _real("eps_max", eps_max)
        ladder = np.geomspace(eps_max / 1000.0, eps_max, num_eps)
    else:
        ladder = np.asarray(eps, dtype=np.float64)
        if ladder.ndim != 1 or ladder.size == 0:
            raise ValueError(f"eps must be a non-empty 1-D sequence of radii, got shape {ladder.shape}")
        if not np.all(np.isfinite(ladder)) or np.any(ladder <= 0) or np.any(np.diff(ladder) <= 0):
            raise ValueError(f"eps must be finite, positive and strictly increasing, got {ladder}")
    ladder = jnp.asarray(ladder, x.dtype)
    if batch_size is not None:
        batch_size = positive_int("batch_size", batch_size)
    kwargs = dict(norm=norm, num_classes=num_classes, steps=steps,
                  step_size=step_size, eps_bisect=eps_bisect, max_iter=max_iter, overshoot=overshoot,
                  cw_steps=cw_steps, cw_rounds=cw_rounds, cw_lr=cw_lr, cw_c=cw_c, kappa=kappa,
                  refine_steps=refine_steps, tol=tol)
    methods = ((("pgd", "transport", "deepfool", "cw") if norm == "l2"
                else ("pgd", "transport", "deepfool")) if method == "all" else (method,))
    # one compiled search per method (cached across calls); "all" reuses them
    results = [_chunked(fn, x, target, ladder, batch_size, dict(kwargs, method=name))
               for name in methods]
    return nan_unless(finite_examples(x) & in_range(target, num_classes), _pick_closest(results))


def _chunked(fn, x, target, ladder, batch_size, kwargs):
    b = x.shape[0]
    if batch_size is None or batch_size >= b:
        return _search(fn, x, target, ladder, **kwargs)
    chunks = -(-b // batch_size)
    pad = chunks * batch_size - b
    xp = jnp.concatenate([x, jnp.repeat(x[:1], pad, axis=0)]) if pad else x
    tp = jnp.concatenate([target, jnp.repeat(target[:1], pad)]) if pad else target
    xp = xp.reshape((chunks, batch_size) + x.shape[1:])
    tp = tp.reshape(chunks, batch_size)
    res = jax.lax.map(lambda a: _search(fn, a[0], a[1], ladder, **kwargs), (xp, tp))
    return jax.tree_util.tree_map(lambda a: a.reshape((-1,) + a.shape[2:])[:b], res)
