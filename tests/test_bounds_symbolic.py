"""``method="symbolic"``: linear bounds of the forward values in the input (lipxai.bounds.symbolic).

Checked on random ReLU and GroupSort MLPs, a small ReLU CNN (lipxai's or flax's max pooling, a
clipped ReLU, average pooling) and a conv -> GroupSort -> L2 norm pooling CNN over random input
boxes, one radius per example:

* soundness by sampling: the logits and the input gradient of the target logit at
  ``N_SAMPLES`` points of each box (uniform, random corners, the two extreme corners) lie in
  the bounds, up to ``1e-5 + 1e-5 |value| + 1e-6 max(|lower|, |upper|)`` (float32 rounding,
  as in test_bounds_soundness.py); 5 ReLU MLP + 2 GroupSort MLP + 5 CNN batches of 4
  examples x 512 points, 2048 points of 4 boxes for max pooling / clipping with
  cancellations, and 2000 points of 2 boxes around 0 for L2 norm pooling: 36,768 points;
* never looser than IBP, elementwise, on logits and gradients (same tolerance);
* strictly tighter on average on a random MLP at a moderate eps;
* exact on an affine function (the bounds are the exact range ``f(c) +/- |J| r``), where IBP
  is not;
* examples do not interact: bounds of one example in a batch equal its bounds alone;
* a zero-width box gives the point values; the width is differentiable in eps.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lipxai.nn as lnn
from lipxai.bounds import Interval, box, gradient_bounds, interval, params_box

from _fast_compile import FAST_COMPILE

N_SAMPLES = 512
ATOL = RTOL = 1e-5
BOUND_RTOL = 1e-6
BATCH = 4

# -------------------------------------------------------------------------- models


def _mlp_params(seed, sizes=(6, 12, 12, 12, 3), bias=0.3):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(m, n)).astype(np.float32) / np.sqrt(m),
             (bias * rng.normal(size=n)).astype(np.float32))
            for m, n in zip(sizes[:-1], sizes[1:], strict=True)]


def _mlp(params, x):
    *hidden, (w, b) = params
    for wi, bi in hidden:
        x = jax.nn.relu(x @ wi + bi)
    return x @ w + b


def _groupsort_mlp(params, x):
    """The MLP with GroupSort (pairs: ``min``/``max`` of slices, joined by ``stack``)."""
    *hidden, (w, b) = params
    for wi, bi in hidden:
        x = lnn.group_sort(x @ wi + bi, 2)
    return x @ w + b


def _cnn_params(seed):
    rng = np.random.default_rng(seed)

    def normal(*shape, scale):
        return (scale * rng.normal(size=shape)).astype(np.float32)

    return dict(conv1=(normal(3, 3, 1, 3, scale=0.5), normal(3, scale=0.2)),
                conv2=(normal(3, 3, 3, 4, scale=0.4), normal(4, scale=0.2)),
                dense1=(normal(4, 8, scale=0.4), normal(8, scale=0.2)),
                dense2=(normal(8, 3, scale=0.4), normal(3, scale=0.1)))


def _cnn(params, x, pool=lnn.max_pool):
    """conv3x3 -> ReLU -> 2x2 max ``pool`` -> conv3x3 (VALID) -> min(max(., 0.1), 1) -> 2x2
    average pool -> dense8 -> ReLU -> dense3, on 8x8x1 images."""
    dn = ("NHWC", "HWIO", "NHWC")
    w, b = params["conv1"]
    h = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn) + b
    h = pool(jax.nn.relu(h), (2, 2), (2, 2))
    w, b = params["conv2"]
    h = jax.lax.conv_general_dilated(h, w, (1, 1), "VALID", dimension_numbers=dn) + b
    h = jnp.minimum(jnp.maximum(h, 0.1), 1.0)
    h = jax.lax.reduce_window(h, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 1, 1, 1), "VALID") / 4
    h = h.reshape(h.shape[0], -1)
    w, b = params["dense1"]
    h = jax.nn.relu(h @ w + b)
    w, b = params["dense2"]
    return h @ w + b


def _lipschitz_cnn_params(seed):
    rng = np.random.default_rng(seed)
    return dict(conv=(0.5 * rng.normal(size=(3, 3, 1, 4))).astype(np.float32),
                dense=(0.4 * rng.normal(size=(4 * 4 * 4, 3))).astype(np.float32))


def _lipschitz_cnn(params, x):
    """The layers of lipxai's 1-Lipschitz CNNs (unconstrained weights here): conv3x3 ->
    GroupSort(2) -> L2NormPool(2) -> dense3, on 8x8x1 images."""
    h = jax.lax.conv_general_dilated(x, params["conv"], (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = lnn.pooling.window_l2_norms(lnn.group_sort(h, 2), (2, 2), (2, 2))
    return h.reshape(h.shape[0], -1) @ params["dense"]


#: the CNN with flax.linen.max_pool (reduce_window_max; its gradient: select_and_scatter_add)
_cnn_flax_pool = functools.partial(_cnn, pool=nn.max_pool)


# -------------------------------------------------------------------------- helpers


def _logits_and_gradient(model, params, x, target):
    logits, pullback = jax.vjp(lambda z: model(params, z), x)
    return logits, pullback(jax.nn.one_hot(target, logits.shape[-1], dtype=logits.dtype))[0]


def _excess(lower, upper, values):
    """Largest amount by which sampled ``values`` leave ``[lower, upper]`` (NaN: inf)."""
    size = jnp.maximum(jnp.abs(lower), jnp.abs(upper))
    tol = ATOL + RTOL * jnp.abs(values) + BOUND_RTOL * jnp.where(jnp.isfinite(size), size, 0.0)
    out = jnp.maximum(lower - tol - values, values - upper - tol)
    return jnp.max(jnp.where(jnp.isnan(out), jnp.inf, out))


def _looser(inner_lo, inner_hi, outer_lo, outer_hi):
    """Largest amount by which ``[inner_lo, inner_hi]`` sticks out of the outer interval."""
    size = jnp.maximum(jnp.abs(outer_lo), jnp.abs(outer_hi))
    tol = ATOL + BOUND_RTOL * jnp.where(jnp.isfinite(size), size, 0.0)
    return jnp.max(jnp.maximum(outer_lo - inner_lo, inner_hi - outer_hi) - tol)


@functools.cache
def _program(model):
    """``check(params, x, eps, target, key)``: symbolic and IBP bounds of the logits and of
    the input gradient of the target logit, the sampling excess and the excess over IBP."""

    @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
    def check(params, x, eps, target, key):
        fn = functools.partial(model, params)
        sym = gradient_bounds(fn, x, target, eps=eps, method="symbolic")
        ibp = gradient_bounds(fn, x, target, eps=eps)
        radius = eps.reshape((-1,) + (1,) * (x.ndim - 1))
        k_uniform, k_corner = jax.random.split(key)
        shape = (N_SAMPLES,) + x.shape
        t = jax.random.uniform(k_uniform, shape, minval=-1.0, maxval=1.0)
        corner = jnp.sign(jax.random.uniform(k_corner, shape, minval=-1.0, maxval=1.0))
        i = jnp.arange(N_SAMPLES).reshape((-1,) + (1,) * x.ndim)
        t = jnp.where(i < N_SAMPLES // 4, corner, t)
        t = jnp.where(i == 0, -1.0, jnp.where(i == 1, 1.0, t))
        points = x + radius * t
        logits, grads = jax.vmap(lambda z: _logits_and_gradient(model, params, z, target))(points)
        excess = jnp.maximum(_excess(sym.logits.lower, sym.logits.upper, logits),
                             _excess(sym.lower, sym.upper, grads))
        looser = jnp.maximum(
            _looser(sym.logits.lower, sym.logits.upper, ibp.logits.lower, ibp.logits.upper),
            _looser(sym.lower, sym.upper, ibp.lower, ibp.upper))
        return excess, looser, sym, ibp

    return check


def _run(model, params, seed, eps_max, shape):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH,) + shape).astype(np.float32)
    eps = (eps_max * rng.uniform(size=BATCH)).astype(np.float32)
    eps[0] = 0.0  # a zero-width box in every batch
    target = rng.integers(0, 3, size=BATCH).astype(np.int32)
    return _program(model)(params, x, eps, target, jax.random.PRNGKey(seed)), (x, eps, target)


def _mlp_bounds_fn(params, x, target, eps, method):
    return gradient_bounds(functools.partial(_mlp, params), x, target, eps=eps, method=method)


_mlp_bounds = jax.jit(_mlp_bounds_fn, static_argnames="method", compiler_options=FAST_COMPILE)


# -------------------------------------------------------------------------- tests


@pytest.mark.parametrize("seed,eps_max,bias", [(0, 0.1, 0.3), (1, 0.3, 0.3), (2, 0.03, 0.0),
                                               (3, 1.0, 0.3), (4, 0.2, 0.0)])
def test_mlp_sound_and_never_looser(seed, eps_max, bias):
    params = _mlp_params(seed, bias=bias)
    (excess, looser, sym, ibp), (x, eps, target) = _run(_mlp, params, seed, eps_max, (6,))
    assert float(excess) <= 0.0, f"a sampled value leaves the symbolic bounds by {excess}"
    assert float(looser) <= 0.0, f"symbolic bounds are looser than IBP by {looser}"
    # zero-width box (example 0): the point values
    logits, grad = _logits_and_gradient(_mlp, params, x[:1], target[:1])
    np.testing.assert_allclose(sym.logits.lower[0], logits[0], atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(sym.logits.upper[0], logits[0], atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(sym.lower[0], grad[0], atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(sym.upper[0], grad[0], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("seed,eps_max", [(0, 0.1), (1, 0.4)])
def test_cnn_sound_and_never_looser(seed, eps_max):
    params = _cnn_params(seed)
    (excess, looser, sym, ibp), _ = _run(_cnn, params, seed, eps_max, (8, 8, 1))
    assert float(excess) <= 0.0, f"a sampled value leaves the symbolic bounds by {excess}"
    assert float(looser) <= 0.0, f"symbolic bounds are looser than IBP by {looser}"
    assert bool(jnp.all(jnp.isfinite(sym.lower))) and bool(jnp.all(jnp.isfinite(sym.upper)))


def test_cnn_with_flax_max_pool_sound_never_looser_and_tighter():
    """flax's max pool (``reduce_window_max``, tiling windows) keeps the values symbolic."""
    params = _cnn_params(2)
    (excess, looser, sym, ibp), _ = _run(_cnn_flax_pool, params, 2, 0.1, (8, 8, 1))
    assert float(excess) <= 0.0, f"a sampled value leaves the symbolic bounds by {excess}"
    assert float(looser) <= 0.0, f"symbolic bounds are looser than IBP by {looser}"
    assert float(jnp.mean(sym.logits.width)) < 0.9 * float(jnp.mean(ibp.logits.width))


@pytest.mark.parametrize("seed,eps_max", [(20, 0.1), (21, 0.5)])
def test_l2_norm_pooling_cnn_sound_and_never_looser(seed, eps_max):
    """conv -> GroupSort -> L2 norm pooling stays symbolic (the pool's bounds
    ``g . x <= ||x|| <= g . x + b``)."""
    params = _lipschitz_cnn_params(seed)
    (excess, looser, sym, ibp), _ = _run(_lipschitz_cnn, params, seed, eps_max, (8, 8, 1))
    assert float(excess) <= 0.0, f"a sampled value leaves the symbolic bounds by {excess}"
    assert float(looser) <= 0.0, f"symbolic bounds are looser than IBP by {looser}"
    if eps_max == 0.1:
        assert float(jnp.mean(sym.logits.width)) < 0.7 * float(jnp.mean(ibp.logits.width))


def test_l2_norm_pooling_around_zero_is_sound():
    """Windows whose box is centred at 0 (``g = 0``: bounds ``0 <= ||x|| <= max ||v||``) or
    crosses 0, next to windows far from it."""
    x = np.zeros((2, 4, 4, 1), np.float32)
    x[:, :2, :2] = 3.0  # one window far from 0, one crossing it, two centred at 0
    x[:, 2:, :2] = np.array([[0.05], [-0.02]], np.float32)
    w = np.random.default_rng(22).normal(size=(4, 3)).astype(np.float32)
    f = lambda z: lnn.pooling.window_l2_norms(z, (2, 2), (2, 2)).reshape(2, -1) @ w  # noqa: E731
    radius = 0.1
    sym = interval(f, method="symbolic")(box(x, radius))
    t = np.random.default_rng(23).uniform(-1, 1, size=(2000,) + x.shape).astype(np.float32)
    t[:16] = np.sign(t[:16])
    values = jax.vmap(f)(x + radius * t)
    assert float(_excess(sym.lower, sym.upper, values)) <= 0.0


def test_tighter_than_ibp_on_average():
    params = _mlp_params(5)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(8, 6)).astype(np.float32)
    target = rng.integers(0, 3, size=8)
    sym = _mlp_bounds(params, x, target, 0.1, "symbolic")
    ibp = _mlp_bounds(params, x, target, 0.1, "ibp")
    sym_width, ibp_width = float(jnp.mean(sym.upper - sym.lower)), float(jnp.mean(
        ibp.upper - ibp.lower))
    assert sym_width < 0.9 * ibp_width, (sym_width, ibp_width)
    assert float(jnp.mean(sym.logits.width)) < 0.9 * float(jnp.mean(ibp.logits.width))


@pytest.mark.parametrize("seed,eps_max", [(10, 0.1), (11, 0.5)])
def test_groupsort_mlp_sound_and_never_looser(seed, eps_max):
    params = _mlp_params(seed)
    (excess, looser, sym, ibp), _ = _run(_groupsort_mlp, params, seed, eps_max, (6,))
    assert float(excess) <= 0.0, f"a sampled value leaves the symbolic bounds by {excess}"
    assert float(looser) <= 0.0, f"symbolic bounds are looser than IBP by {looser}"


def test_groupsort_mlp_tighter_than_ibp():
    """GroupSort keeps the values symbolic (min/max of two symbolic values, ``stack``), and
    the backward pass's routing decisions use them: on this MLP at eps 0.01 the gradient
    bounds are about 30x narrower than IBP's (the test asks for 3x)."""
    params = _mlp_params(12, sizes=(6, 16, 16, 16, 3))
    x = np.random.default_rng(12).normal(size=(8, 6)).astype(np.float32)
    target = np.zeros(8, np.int32)
    bounds = jax.jit(lambda method: gradient_bounds(
        functools.partial(_groupsort_mlp, params), x, target, eps=0.01, method=method),
        static_argnums=0, compiler_options=FAST_COMPILE)
    sym, ibp = bounds("symbolic"), bounds("ibp")
    assert float(jnp.mean(sym.upper - sym.lower)) < float(jnp.mean(ibp.upper - ibp.lower)) / 3
    assert float(jnp.mean(sym.logits.width)) < float(jnp.mean(ibp.logits.width)) / 3


def test_routing_through_max_decided_by_the_difference():
    """``max(z + 1, z)``: the intervals of the operands overlap, their difference is exactly
    1, so the cotangent certainly goes to the first and the gradient is a point."""
    w = np.random.default_rng(13).normal(size=(4, 5)).astype(np.float32)
    f = lambda x: 3.0 * jnp.maximum(x @ w + 1.0, x @ w) - 2.0 * jnp.minimum(x @ w + 1.0, x @ w)  # noqa: E731
    x = np.random.default_rng(14).normal(size=(2, 4)).astype(np.float32)
    grad = jax.grad(lambda z: jnp.sum(f(z)))
    sym = interval(grad, method="symbolic")(box(x, 0.5))
    np.testing.assert_allclose(sym.lower, grad(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sym.upper, grad(x), rtol=1e-6, atol=1e-6)
    ibp = interval(grad)(box(x, 0.5))
    assert float(jnp.min(ibp.upper - ibp.lower)) > 0.1  # IBP cannot decide it


def test_exact_on_affine_functions():
    """Linear layers, convolution, layouts, pad/slice/concatenate, sums, scaling: the bounds
    are the exact range of the affine map, ``f(c) +/- |J| r`` per example."""
    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(size=(12, 7)).astype(np.float32), rng.normal(size=(7, 5)).astype(
        np.float32)
    kernel = rng.normal(size=(3, 3, 1, 2)).astype(np.float32)
    scale = rng.normal(size=(5,)).astype(np.float32)

    def f(x):  # x: [B, 3, 4, 1]
        flat = x.reshape(x.shape[0], -1)
        conv = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
        conv = jnp.transpose(conv, (0, 3, 1, 2)).sum(axis=(2, 3))  # [B, 2]
        padded = jnp.pad(conv, ((0, 0), (1, 2)))[:, :5]  # [B, 5]
        h = (flat @ w1) @ w2 - 2.0 * (flat[:, :5] - flat[:, 2:7])  # cancellations
        h = h * scale / 3.0 + padded + jnp.concatenate([conv, -conv, conv[:, :1]], axis=1)
        return -h + 1.0

    x = rng.normal(size=(3, 3, 4, 1)).astype(np.float32)
    radius = np.asarray([0.0, 0.1, 0.5], np.float32).reshape(3, 1, 1, 1)
    bounds = jax.jit(lambda b: interval(f, method="symbolic")(b),
                     compiler_options=FAST_COMPILE)(box(x, radius))
    jac = jax.vmap(jax.jacobian(lambda z: f(z[None])[0]))(x).reshape(3, 5, -1)
    exact_radius = jnp.einsum("bof,bf->bo", jnp.abs(jac),
                              jnp.broadcast_to(radius, x.shape).reshape(3, -1))
    center = f(x)
    np.testing.assert_allclose(bounds.lower, center - exact_radius, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bounds.upper, center + exact_radius, rtol=1e-5, atol=1e-5)
    ibp = jax.jit(interval(f), compiler_options=FAST_COMPILE)(box(x, radius))
    assert float(jnp.min(ibp.width[1:] - bounds.width[1:])) > 1e-3  # IBP is not exact here


def test_exact_with_two_input_boxes():
    """Two Interval arguments: their features are the coordinates of one ``eps``."""
    rng = np.random.default_rng(1)
    w, v, u = (rng.normal(size=s).astype(np.float32) for s in ((6, 4), (3, 5), (5, 4)))

    def g(a, b):
        return a.reshape(a.shape[0], -1) @ w - (b @ v) @ u + a[:, 0, :1]

    a, b = rng.normal(size=(2, 2, 3)).astype(np.float32), rng.normal(size=(2, 3)).astype(
        np.float32)
    ra, rb = 0.1, 0.3
    bounds = interval(g, method="symbolic")(box(a, ra), box(b, rb))
    ja = jax.vmap(jax.jacobian(lambda p, q: g(p[None], q[None])[0]))(a, b).reshape(2, 4, -1)
    jb = jax.vmap(jax.jacobian(lambda p, q: g(p[None], q[None])[0], 1))(a, b)
    exact_radius = ra * jnp.abs(ja).sum(-1) + rb * jnp.abs(jb).sum(-1)
    np.testing.assert_allclose(bounds.lower, g(a, b) - exact_radius, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bounds.upper, g(a, b) + exact_radius, rtol=1e-5, atol=1e-5)


def _pool_and_clip(x):
    """Max pooling and clipping minus their inputs: the cancellations expose an unsound
    linear bound that the concretisation of each value alone would hide."""
    b = x.shape[0]
    pooled = lnn.max_pool(x, (2, 2), (2, 2)) - 0.7 * x[:, ::2, ::2]
    clipped = jnp.minimum(x, 0.3) - 0.9 * x
    relu = jnp.maximum(x, -0.2) - 0.8 * x
    return jnp.concatenate([pooled.reshape(b, -1), clipped.reshape(b, -1),
                            relu.reshape(b, -1)], axis=1)


def test_max_min_and_pooling_sound_under_cancellation():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(BATCH, 4, 4, 1)).astype(np.float32) * 0.3
    x[:, ::2, ::2] += 0.2  # the first element of each window has the largest centre
    radius = rng.uniform(0.05, 0.4, size=(BATCH, 1, 1, 1)).astype(np.float32)

    @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
    def check(x, radius, key):
        sym = interval(_pool_and_clip, method="symbolic")(Interval(x - radius, x + radius))
        ibp = interval(_pool_and_clip)(Interval(x - radius, x + radius))
        t = jax.random.uniform(key, (4 * N_SAMPLES,) + x.shape, minval=-1.0, maxval=1.0)
        values = jax.vmap(_pool_and_clip)(x + radius * t)
        return (_excess(sym.lower, sym.upper, values),
                _looser(sym.lower, sym.upper, ibp.lower, ibp.upper),
                jnp.mean(sym.width) / jnp.mean(ibp.width))

    excess, looser, ratio = check(x, radius, jax.random.PRNGKey(0))
    assert float(excess) <= 0.0, f"a sampled value leaves the symbolic bounds by {excess}"
    assert float(looser) <= 0.0, f"symbolic bounds are looser than IBP by {looser}"
    assert float(ratio) < 0.9


def test_examples_do_not_interact():
    params = _mlp_params(7)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4, 6)).astype(np.float32)
    target = rng.integers(0, 3, size=4)
    eps = np.asarray([0.05, 0.2, 0.0, 0.1], np.float32)
    together = _mlp_bounds(params, x, target, eps, "symbolic")
    for b in range(4):
        alone = _mlp_bounds(params, x[b:b + 1], target[b:b + 1], eps[b:b + 1], "symbolic")
        np.testing.assert_allclose(together.lower[b], alone.lower[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(together.upper[b], alone.upper[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(together.logits.lower[b], alone.logits.lower[0], rtol=1e-5,
                                   atol=1e-6)


def test_width_is_differentiable_in_eps():
    params = _mlp_params(8)
    x = np.random.default_rng(8).normal(size=(3, 6)).astype(np.float32)

    @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
    @jax.grad
    def width(e):
        b = _mlp_bounds_fn(params, x, np.array([0, 1, 2]), e, "symbolic")
        return jnp.sum(b.upper - b.lower) + jnp.sum(b.logits.width)

    grads = [float(width(jnp.float32(e))) for e in (0.0, 0.05, 0.3)]
    assert np.all(np.isfinite(grads)), grads
    assert grads[1] > 0, grads


def test_interval_inputs_must_be_input_boxes():
    params = _mlp_params(0)
    x = np.zeros((2, 6), np.float32)
    fn = lambda p, z: _mlp(p, z)  # noqa: E731
    with pytest.raises(ValueError, match="symbolic"):
        gradient_bounds(fn, x, np.array([0, 1]), eps=0.1, params=params,
                        params_box=params_box(params, relative=0.01), method="symbolic")
    with pytest.raises(ValueError, match="method"):
        gradient_bounds(functools.partial(_mlp, params), x, np.array([0, 1]), eps=0.1,
                        method="crown")
    with pytest.raises(ValueError, match="(?i)parameter boxes"):
        interval(_mlp, method="symbolic")(params_box(params, relative=0.01),
                                          Interval(x - 0.1, x + 0.1))
