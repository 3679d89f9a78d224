"""Tests of lipxai.boundary: batched boundary search (PGD ladder, transport, DeepFool, CW)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lipxai import boundary
from lipxai.certify import radius
from lipxai.nn import export, zoo

TOL = 1e-3
FAST_CW = dict(cw_steps=60, cw_rounds=3)


@functools.cache
def _linear(num_classes, dim=12, seed=0):
    """Cached, so that tests share ``fn`` and hence the compiled searches (``fn`` is static)."""
    rng = np.random.default_rng(seed)
    w = jnp.asarray(rng.normal(size=(num_classes, dim)), jnp.float32)
    b = jnp.asarray(rng.normal(size=num_classes), jnp.float32)

    def fn(x):
        return x.reshape(x.shape[0], -1) @ w.T + b

    return fn, w


def _exact(fn, w, x, ord_):
    """Exact distance to the target region's boundary of a linear model: min_j m_j / ||w_t - w_j||_*."""
    logits = fn(x)
    t = jnp.argmax(logits, axis=1)
    m = jnp.take_along_axis(logits, t[:, None], axis=1) - logits
    diff = w[t][:, None, :] - w[None]
    dual = jnp.linalg.norm(diff, axis=2) if ord_ == 2 else jnp.sum(jnp.abs(diff), axis=2)
    r = jnp.where(jax.nn.one_hot(t, w.shape[0], dtype=bool), jnp.inf, m / dual)
    return t, np.asarray(r.min(axis=1))


def _x(shape, seed=1):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _check_on_boundary(fn, r, target):
    assert r.points.shape[0] == target.shape[0]
    m = np.asarray(boundary.margin(fn, r.points, target))
    np.testing.assert_allclose(m, np.asarray(r.margins), atol=1e-5)
    ok = np.asarray(r.success)
    assert np.all(np.asarray(r.margins)[ok] <= 0)
    assert np.all(m[ok] <= 1e-6) and np.all(m[ok] >= -TOL)


# ---------------------------------------------------------------------------------------
# Linear models: exact distances
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["pgd", "transport", "deepfool", "cw", "all"])
def test_linear_binary_l2_exact(method):
    fn, w = _linear(2)
    x = _x((16, 3, 4))
    t, exact = _exact(fn, w, x, 2)
    r = boundary.search(fn, x, t, method=method, eps_max=20.0)
    assert bool(r.success.all())
    _check_on_boundary(fn, r, t)
    rtol = 1e-2 if method == "cw" else 1e-4
    np.testing.assert_allclose(np.asarray(r.distances), exact, rtol=rtol, atol=1e-6)
    assert r.points.shape == x.shape


def test_linear_multiclass_l2():
    """With C > 2 the region {m <= 0} is a union of half-spaces: DeepFool (which looks at
    every class) is exact, the gradient methods may stop at the boundary of the class that
    is the runner-up at x; no method is ever closer than the exact distance."""
    fn, w = _linear(4)
    x = _x((16, 3, 4))
    t, exact = _exact(fn, w, x, 2)
    dists = {}
    for method in ("pgd", "transport", "deepfool", "cw", "all"):
        r = boundary.search(fn, x, t, method=method, eps_max=20.0)
        assert bool(r.success.all()), method
        _check_on_boundary(fn, r, t)
        d = np.asarray(r.distances)
        assert np.all(d >= exact * (1 - 1e-4) - 1e-6), method
        assert np.median(d / exact) < 1.01, method
        dists[method] = d
    np.testing.assert_allclose(dists["deepfool"], exact, rtol=1e-4)
    np.testing.assert_allclose(dists["all"], exact, rtol=1e-4)


def test_linear_linf():
    fn, w = _linear(2)
    x = _x((16, 12))
    t, exact = _exact(fn, w, x, 1)
    for method in ("pgd", "transport", "deepfool", "all"):
        r = boundary.search(fn, x, t, norm="linf", method=method, eps_max=5.0)
        assert bool(r.success.all()), method
        _check_on_boundary(fn, r, t)
        d = np.asarray(r.distances)
        assert np.all(d >= exact - TOL), method
        np.testing.assert_allclose(d, exact, rtol=1e-3, err_msg=method)
    fn4, w4 = _linear(4, seed=3)
    t4, exact4 = _exact(fn4, w4, x, 1)
    r = boundary.search(fn4, x, t4, norm="linf", method="pgd", eps_max=5.0)
    d = np.asarray(r.distances)
    assert bool(r.success.all())
    assert np.all(d >= exact4 - TOL) and np.median(d / exact4) < 1.01
    r = boundary.search(fn4, x, t4, norm="linf", method="deepfool")
    np.testing.assert_allclose(np.asarray(r.distances), exact4, rtol=1e-3)


# ---------------------------------------------------------------------------------------
# ReLU networks
# ---------------------------------------------------------------------------------------


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(32)(x))
        x = nn.relu(nn.Dense(32)(x))
        return nn.Dense(4)(x)


class _CNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(16)(x))
        return nn.Dense(4)(x)


@functools.cache
def _model(name, seed=0):
    module = {"mlp": _MLP, "cnn": _CNN}[name]()
    x = _x((64, 8, 8, 1), seed=seed + 10)
    variables = module.init(jax.random.PRNGKey(seed), x[:1])
    fn = jax.tree_util.Partial(lambda v, z: module.apply(v, z), variables)
    return fn, x, jnp.argmax(fn(x), axis=1)


def _check_relu(fn, x, t, r):
    assert float(jnp.mean(r.success)) >= 0.99
    _check_on_boundary(fn, r, t)
    ok = np.asarray(r.success)
    logits = fn(r.points)
    m = np.asarray(r.margins)
    flipped = np.asarray(jnp.argmax(logits, axis=1) != t) | (m <= 0)
    assert np.all(flipped[ok])
    d = np.asarray(r.distances)
    np.testing.assert_allclose(d, np.linalg.norm(np.asarray(r.points - x).reshape(len(d), -1),
                                                 axis=1), rtol=1e-5, atol=1e-6)


def test_relu_mlp_all_methods():
    fn, x, t = _model("mlp")
    dists = []
    for method in ("pgd", "transport", "deepfool", "cw"):
        r = boundary.search(fn, x, t, method=method, eps_max=30.0, num_eps=12, **FAST_CW)
        _check_relu(fn, x, t, r)
        dists.append(np.where(np.asarray(r.success), np.asarray(r.distances), np.inf))
    r = boundary.search(fn, x, t, method="all", eps_max=30.0, num_eps=12, **FAST_CW)
    _check_relu(fn, x, t, r)
    assert np.all(np.asarray(r.distances) <= np.min(dists, axis=0) + 1e-6)


def test_relu_cnn():
    fn, x, t = _model("cnn", seed=1)
    for method in ("pgd", "deepfool"):
        r = boundary.search(fn, x, t, method=method, eps_max=30.0)
        _check_relu(fn, x, t, r)
    r = boundary.search(fn, x, t, norm="linf", method="pgd", eps_max=5.0)
    assert float(jnp.mean(r.success)) >= 0.99
    _check_on_boundary(fn, r, t)
    d = np.asarray(r.distances)
    np.testing.assert_allclose(d, np.abs(np.asarray(r.points - x)).reshape(64, -1).max(1),
                               rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------
# 1-Lipschitz networks: transport and certificates
# ---------------------------------------------------------------------------------------


def test_one_lipschitz_transport_and_certificates():
    module = zoo.mlp(num_classes=3, hidden=(16, 16), method="bjorck")
    x = _x((32, 4, 4, 1), seed=5)
    variables = module.init(jax.random.PRNGKey(2), x[:1])
    plain, plain_vars = export(module, variables)  # frozen weights: no Björck per call
    fn = jax.tree_util.Partial(lambda v, z: plain.apply(v, z), plain_vars)
    np.testing.assert_allclose(fn(x), module.apply(variables, x), atol=1e-5)
    logits = fn(x)
    t = jnp.argmax(logits, axis=1)
    cert = np.asarray(radius(logits))
    out = {}
    for method in ("transport", "pgd", "deepfool"):
        r = boundary.search(fn, x, t, method=method, eps_max=10.0, num_eps=12)
        assert bool(r.success.all()), method
        _check_on_boundary(fn, r, t)
        out[method] = np.asarray(r.distances)
        assert np.all(out[method] >= cert * (1 - 1e-3)), method
    best_other = np.min([out[k] for k in ("pgd", "deepfool")], axis=0)
    assert np.all(out["transport"] <= 1.2 * best_other + 1e-6)


# ---------------------------------------------------------------------------------------
# Per-example independence, pytree, chunking
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["pgd", "deepfool", "cw"])
def test_per_example_independence(method):
    fn, x, t = _model("mlp")
    x = x[:5]
    # mix easy (close) and hard (far) examples: scale one input so that it stops late
    x = x.at[2].multiply(3.0)
    t = jnp.argmax(fn(x), axis=1)
    kw = dict(method=method, eps_max=30.0, num_eps=12, cw_steps=30, cw_rounds=2)
    r = boundary.search(fn, x, t, **kw)
    for i in range(x.shape[0]):
        ri = boundary.search(fn, x[i:i + 1], t[i:i + 1], **kw)
        assert bool(ri.success[0]) == bool(r.success[i])
        np.testing.assert_allclose(ri.distances[0], r.distances[i], rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(ri.points[0], r.points[i], rtol=1e-3, atol=1e-4)


def test_pytree_jit_and_batch_size():
    fn, w = _linear(3)
    x = _x((10, 12))
    t = jnp.argmax(fn(x), axis=1)
    r = boundary.search(fn, x, t, method="deepfool")
    assert len(jax.tree_util.tree_leaves(r)) == 4
    doubled = jax.jit(lambda res: jax.tree_util.tree_map(lambda a: a, res))(r)
    np.testing.assert_array_equal(doubled.distances, r.distances)
    rj = jax.jit(lambda a, b: boundary.search(fn, a, b, method="deepfool"))(x, t)
    np.testing.assert_allclose(rj.distances, r.distances, rtol=1e-5)
    rc = boundary.search(fn, x, t, method="deepfool", batch_size=4)
    assert rc.points.shape == x.shape and rc.distances.shape == (10,)
    np.testing.assert_allclose(rc.distances, r.distances, rtol=1e-5)
    np.testing.assert_array_equal(rc.success, r.success)


def test_already_outside_target_region():
    fn, _ = _linear(3)
    x = _x((6, 12))
    wrong = jnp.argmin(fn(x), axis=1)
    r = boundary.search(fn, x, wrong, method="transport")
    np.testing.assert_array_equal(r.distances, np.zeros(6))
    assert bool(r.success.all())
    np.testing.assert_array_equal(r.points, x)


# ---------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------


def test_bad_inputs():
    fn, _ = _linear(3)
    x = _x((4, 12))
    t = jnp.argmax(fn(x), axis=1)
    with pytest.raises(TypeError, match="x"):
        boundary.search(fn, x.astype(jnp.int32), t)
    with pytest.raises(ValueError, match="x"):
        boundary.search(fn, x[0], t)
    with pytest.raises(ValueError, match="target"):
        boundary.search(fn, x, t[:3])
    with pytest.raises(ValueError, match="target"):
        boundary.search(fn, x, jnp.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="target"):
        boundary.search(fn, x, jnp.array([0, -1, 0, 0]))
    with pytest.raises(TypeError, match="target"):
        boundary.search(fn, x, t.astype(jnp.float32))
    with pytest.raises(ValueError, match="method"):
        boundary.search(fn, x, t, method="fgsm")
    with pytest.raises(ValueError, match="norm"):
        boundary.search(fn, x, t, norm="l1")
    with pytest.raises(ValueError, match="norm"):
        boundary.search(fn, x, t, norm="linf", method="cw")
    for bad in (0.0, -1e-3):
        with pytest.raises(ValueError, match="tol"):
            boundary.search(fn, x, t, tol=bad)
    with pytest.raises(ValueError, match="eps"):
        boundary.search(fn, x, t, eps=[0.5, 0.1])
    with pytest.raises(ValueError, match="steps"):
        boundary.search(fn, x, t, steps=0)
    with pytest.raises(ValueError, match="batch_size"):
        boundary.search(fn, x, t, batch_size=0)
    with pytest.raises(ValueError, match="fn"):
        boundary.search(lambda z: z.sum(axis=1), x, t)
