"""Interval bounds through sorting: multi-operand ``sort``, gather / scatter-add with Interval
indices, and the derivative of the GroupSort network (issue 18, "Reliability").

``jax.grad`` of ``jnp.sort`` (FullSort, GroupSort with groups larger than
``SORTING_NETWORK_MAX_GROUP``) sorts an iota by the keys and scatters the cotangents to the
sorted positions; ``jax.grad`` of ``lipxai.nn.group_sort`` (groups of 3 to 16) is one
``sorting_network_cotangent`` equation.  Every rule is checked by sampling points inside the
boxes (uniform, box corners, and points rounded to a coarse grid so that ties occur), and for
tightness: point boxes give the exact values, and a single sort's gradient bounds are the
sampled range.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import lipxai.nn as lnn
from lipxai.bounds import Interval, box, gradient_bounds, interval
from lipxai.bounds.patterns import rank_bounds

from _fast_compile import fast_jit


def _samples(b: Interval, n: int, seed: int, grid: float | None = None):
    """``n`` points of the box ``b``: uniform, a quarter box corners, the two extreme corners;
    ``grid``: rounded to multiples of ``grid`` (kept in the box), which makes ties."""
    rng = np.random.default_rng(seed)
    lo, hi = np.asarray(b.lower, np.float64), np.asarray(b.upper, np.float64)
    t = rng.uniform(size=(n, *lo.shape))
    t[: n // 4] = rng.integers(0, 2, size=(n // 4, *lo.shape))
    t[0], t[1] = 0.0, 1.0
    points = lo + t * (hi - lo)
    if grid is not None:
        points = np.clip(np.round(points / grid) * grid, lo, hi)
    return jnp.asarray(points, b.lower.dtype)


def _assert_contains(bounds: Interval, values, tol=1e-5):
    values = np.asarray(values, np.float64)
    lo, hi = np.asarray(bounds.lower, np.float64), np.asarray(bounds.upper, np.float64)
    slack = tol + tol * np.abs(values)
    assert np.all(lo - slack <= values), float(np.max(lo - values))
    assert np.all(values <= hi + slack), float(np.max(values - hi))


def _ranks(keys, stable: bool = True):
    """Positions of the elements of ``keys`` once the last axis is sorted (stable)."""
    order = jnp.argsort(keys, axis=-1, stable=stable)
    return jnp.argsort(order, axis=-1, stable=True)


# -------------------------------------------------------------------------- sort


@pytest.mark.parametrize("stable", [True, False])
def test_rank_bounds_contain_sampled_ranks_and_are_exact_at_points(stable):
    rng = np.random.default_rng(0)
    keys = box(jnp.asarray(rng.normal(size=(3, 7)), jnp.float32), 0.4)
    low, high = rank_bounds(keys, stable=stable)
    points = _samples(keys, 2000, seed=1, grid=0.25)
    ranks = jax.vmap(_ranks)(points)
    assert np.all(low <= ranks.min(0)) and np.all(ranks.max(0) <= high)
    # ties in a point: a stable sort's ranks are exact, an unstable one's cover the tie group
    tied = jnp.asarray([[0.5, -1.0, 0.5, 2.0, 0.5]], jnp.float32)
    low, high = rank_bounds(Interval(tied, tied), stable=stable)
    if stable:
        np.testing.assert_array_equal(low, _ranks(tied))
        np.testing.assert_array_equal(high, _ranks(tied))
    else:
        np.testing.assert_array_equal(low, [[1, 0, 1, 4, 1]])
        np.testing.assert_array_equal(high, [[3, 0, 3, 4, 3]])


@pytest.mark.parametrize("num_keys,stable", [(1, True), (1, False), (2, True)])
def test_sort_by_key_is_sound(num_keys, stable):
    """``lax.sort`` of (keys, second keys or values, an int payload) by ``num_keys`` keys."""
    rng = np.random.default_rng(2)
    keys = box(jnp.asarray(rng.normal(size=(2, 6)), jnp.float32), 0.3)
    values = box(jnp.asarray(rng.normal(size=(2, 6)), jnp.float32), 0.1)
    payload = jnp.asarray(rng.integers(0, 9, size=(2, 6)), jnp.int32)

    def f(k, v):
        return lax.sort((k, v, payload), dimension=1, is_stable=stable, num_keys=num_keys)

    bounds = interval(f)(keys, values)
    samples = jax.vmap(f)(_samples(keys, 1500, 3, grid=0.25), _samples(values, 1500, 4, 0.25))
    for b, s in zip(bounds, samples, strict=True):
        _assert_contains(b, s)
    # zero-width keys: the sorted keys are exact, and so is the payload of a stable sort
    point = interval(f)(Interval(keys.lower, keys.lower), values)
    exact = f(keys.lower, values.lower)
    np.testing.assert_array_equal(point[0].lower, exact[0])
    if stable:
        np.testing.assert_array_equal(point[2].lower, exact[2])
        np.testing.assert_array_equal(point[2].upper, exact[2])


def test_argsort_is_sound_and_exact_for_separated_keys():
    x = jnp.asarray([0.3, -2.0, 1.5, 0.2, 4.0], jnp.float32)
    bounds = interval(jnp.argsort)(box(x, 0.06))
    values = jax.vmap(jnp.argsort)(_samples(box(x, 0.06), 1000, 5, grid=0.05))
    _assert_contains(bounds, values, tol=0)
    np.testing.assert_array_equal(bounds.lower, [1, 0, 0, 2, 4])  # only 0.3 and 0.2 may swap
    np.testing.assert_array_equal(bounds.upper, [1, 3, 3, 2, 4])
    exact = interval(jnp.argsort)(box(x, 0.01))
    np.testing.assert_array_equal(exact.lower, jnp.argsort(x))
    np.testing.assert_array_equal(exact.upper, jnp.argsort(x))


# -------------------------------------------------------------------------- gradients of sort


def _sort_score(w):
    return lambda x: jnp.sum(jnp.sort(x, axis=-1) * w)


def test_sort_gradient_and_jvp_are_sound_and_tight():
    """The iota sorted with the keys is a Permutation: the gradient (scatter-add) and the JVP
    (gather) of one sort are bounded by the hull over the ranks each element may take, which
    the samples attain."""
    rng = np.random.default_rng(6)
    w = jnp.asarray(rng.normal(size=6), jnp.float32)
    x = box(jnp.asarray(rng.normal(size=(2, 6)), jnp.float32), 0.3)
    grad = jax.grad(_sort_score(w))
    jvp = lambda z: jax.jvp(lambda u: jnp.sort(u, axis=-1), (z,), (w * jnp.ones_like(z),))[1]  # noqa: E731
    points = _samples(x, 4000, 7)
    for fun in (grad, jvp, jax.vmap(jax.grad(_sort_score(w)))):
        bounds, values = interval(fun)(x), jax.vmap(fun)(points)
        _assert_contains(bounds, values)
        np.testing.assert_allclose(bounds.lower, values.min(0), atol=1e-6)
        np.testing.assert_allclose(bounds.upper, values.max(0), atol=1e-6)
    exact = interval(grad)(Interval(x.lower, x.lower))
    np.testing.assert_array_equal(exact.lower, grad(x.lower))
    np.testing.assert_array_equal(exact.upper, grad(x.lower))


def test_take_along_axis_and_scatter_add_with_interval_indices():
    """Indices that are Intervals (here: the floor of a box) in the take-along-axis form:
    gather takes the hull over the possible positions (fill value out of range), scatter-add
    adds every possible update's hull with 0."""
    rng = np.random.default_rng(8)
    table = jnp.asarray(rng.normal(size=(2, 5)), jnp.float32)
    updates = jnp.asarray(rng.normal(size=(2, 4)), jnp.float32)
    t = box(jnp.asarray([[0.2, 1.7, 3.4, 4.6], [2.5, 0.1, 3.9, 1.2]], jnp.float32), 0.6)

    def gathered(u, mode):
        return jnp.take_along_axis(table, jnp.floor(u).astype(jnp.int32), axis=1, mode=mode)

    def scattered(u):
        idx = jnp.floor(u).astype(jnp.int32)
        return jax.vmap(lambda i, v: jnp.zeros(5).at[i].add(v, mode="drop"))(idx, updates)

    points = _samples(t, 2000, 9)
    for fun in (lambda u: gathered(u, "clip"), lambda u: gathered(u, "fill"), scattered):
        bounds, values = interval(fun)(t), jax.vmap(fun)(points)
        finite = np.isfinite(np.asarray(values))
        assert np.all(finite | ~np.isfinite(np.asarray(bounds.upper)))
        _assert_contains(bounds, np.where(finite, values, 0.0))
    clipped = interval(lambda u: gathered(u, "clip"))(t)
    assert np.all(np.isfinite(clipped.lower)) and np.all(np.isfinite(clipped.upper))


def test_gather_of_rows_with_interval_indices_fails_loudly():
    rows = jnp.arange(12.0).reshape(4, 3)
    with pytest.raises(NotImplementedError, match="'gather' with Interval indices"):
        interval(lambda u: jnp.take(rows, jnp.floor(u).astype(jnp.int32), axis=0))(
            box(jnp.asarray([1.5]), 0.7))


# -------------------------------------------------------------------------- sorting network


@pytest.mark.parametrize("group_size", [3, 4, 8])
def test_sorting_network_derivatives_are_sound_with_ties(group_size):
    """``jax.grad`` / ``jax.jvp`` of GroupSort are one ``sorting_network_cotangent`` /
    ``_tangent`` equation; its rule (hull over the ranks, ties either way) contains the
    network's own derivative, which splits ties evenly."""
    rng = np.random.default_rng(group_size)
    n = 2 * group_size
    w = jnp.asarray(rng.normal(size=n), jnp.float32)
    score = lambda z: jnp.sum(lnn.group_sort(z, group_size) * w)  # noqa: E731
    grad = jax.grad(score)
    jvp = lambda z: jax.jvp(lambda u: lnn.group_sort(u, group_size), (z,),  # noqa: E731
                            (jnp.broadcast_to(w, z.shape),))[1]
    eqns = [e.primitive.name for e in jax.make_jaxpr(grad)(jnp.zeros((2, n))).jaxpr.eqns]
    assert eqns.count("sorting_network_cotangent") == 1
    x = box(jnp.asarray(rng.normal(size=(2, n)), jnp.float32), 0.3)
    points = _samples(x, 1500, group_size, grid=0.25)
    for fun in (grad, jvp):
        bounds = fast_jit(interval(fun))(x)
        _assert_contains(bounds, jax.vmap(fun)(points))
        assert float(jnp.max(bounds.upper)) <= float(jnp.max(w)) + 1e-6  # a hull of w
    exact = interval(grad)(Interval(x.lower, x.lower))  # no ties: the ranks are known
    np.testing.assert_array_equal(exact.lower, grad(x.lower))
    np.testing.assert_array_equal(exact.upper, grad(x.lower))
    # a point with ties and an Interval cotangent: J is known and >= 0 (split ties), monotone
    tied = jnp.round(x.lower * 2) / 2
    pullback = jax.vjp(lambda u: lnn.group_sort(u, group_size), tied)[1]
    cotangent = box(jnp.broadcast_to(w, tied.shape), 0.1)
    bounds = interval(lambda c: pullback(c)[0])(cotangent)
    np.testing.assert_allclose(bounds.lower, pullback(cotangent.lower)[0], atol=1e-6)
    np.testing.assert_allclose(bounds.upper, pullback(cotangent.upper)[0], atol=1e-6)


# -------------------------------------------------------------------------- models


@pytest.mark.parametrize("layer,width", [(lnn.FullSort, 16), (lambda: lnn.GroupSort(32), 32),
                                         (lambda: lnn.GroupSort(4), 16),
                                         (lambda: lnn.GroupSort(16), 16)],
                         ids=["fullsort", "groupsort32", "groupsort4", "groupsort16"])
def test_gradient_bounds_of_sorting_models(layer, width):
    """Dense -> sort -> Dense -> sort -> Dense: gradient bounds contain the sampled input
    gradients of the target logit, and a zero radius gives the gradient itself."""
    model = nn.Sequential([nn.Dense(width), layer(), nn.Dense(width), layer(), nn.Dense(3)])
    x = jnp.asarray(np.random.default_rng(10).normal(size=(2, 5)), jnp.float32)
    variables = model.init(jax.random.PRNGKey(0), x)
    target = jnp.asarray([0, 2])

    def apply(v, z):
        return model.apply(v, z)

    def point_gradient(v, z):
        return jax.grad(lambda u: jnp.sum(jnp.take_along_axis(apply(v, u), target[:, None], 1)))(z)

    bounds = functools.partial(fast_jit, static_argnums=2)(
        lambda v, z, eps: gradient_bounds(lambda u: apply(v, u), z, target, eps=eps))
    wide = bounds(variables, x, 0.05)
    samples = fast_jit(jax.vmap(point_gradient, in_axes=(None, 0)))(
        variables, _samples(box(x, 0.05), 256, 11))
    _assert_contains(Interval(wide.lower, wide.upper), samples)
    assert np.all(np.isfinite(wide.lower)) and np.all(np.isfinite(wide.upper))
    exact = bounds(variables, x, 0.0)
    np.testing.assert_allclose(exact.lower, exact.gradient, atol=1e-5)
    np.testing.assert_allclose(exact.upper, exact.gradient, atol=1e-5)


def test_concrete_box_closed_over_by_a_jitted_function_is_checked_at_trace_time():
    """A concrete Interval reaching ``interval`` inside a ``jit`` trace (closed over) is checked
    as a concrete one: valid bounds come out, an empty box raises naming the argument."""
    valid = Interval(jnp.zeros(3), jnp.ones(3))
    empty = Interval(jnp.ones(3), jnp.zeros(3))
    double_sum = lambda v: jnp.sum(2.0 * v)
    out = jax.jit(lambda s: interval(double_sum)(valid).upper * s)(1.0)
    assert float(out) == 6.0
    with pytest.raises(ValueError, match=r"args\[0\].*lower > upper"):
        jax.jit(lambda s: interval(double_sum)(empty).upper * s)(1.0)
