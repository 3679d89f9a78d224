"""Packed intervals (``lipxai.bounds.packed``): same bounds as the centre-radius form, sound,
NaN-free at the boundary, and actually used where the forward chain stays packed."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import lipxai.nn as lnn
from lipxai.bounds import Interval, eval_jaxpr, interval, packed
from lipxai.bounds.interval import PackedInterval

DN = ("NHWC", "HWIO", "NHWC")


def _conv(x, w, stride=1, padding="SAME"):
    return lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=DN)


def _params(key, cin=2):
    k = jax.random.split(key, 5)
    return {
        "w1": jax.random.normal(k[0], (3, 3, cin, 6)) * 0.5,
        "b1": jax.random.normal(k[1], (6,)) * 0.1,
        "w2": jax.random.normal(k[2], (3, 3, 6, 8)) * 0.3,
        "b2": jax.random.normal(k[3], (8,)) * 0.1,
        "w3": jax.random.normal(k[4], (2 * 2 * 8, 3)) * 0.3,
    }


def cnn(p, x):
    """conv -> bias -> ReLU -> lipxai max_pool -> conv (stride 2) -> bias -> ReLU -> flax
    max_pool (reduce_window) -> flatten -> dense: every lane-wise rule of the forward chain."""
    h = lnn.max_pool(jax.nn.relu(_conv(x, p["w1"]) + p["b1"]), (2, 2), (2, 2))
    h = jax.nn.relu(_conv(h, p["w2"], stride=2) + p["b2"])
    h = nn.max_pool(h, (1, 1), (1, 1))
    return h.reshape(h.shape[0], -1) @ p["w3"]


@pytest.fixture
def unpacked_only(monkeypatch):
    """The reference: no convolution is computed packed."""
    monkeypatch.setattr(packed, "MAX_FEATURES_TO_PACK", 0)


def _box(key, shape, eps):
    x = jax.random.uniform(key, shape)
    return x, Interval(x - eps, x + eps)


def _conv_output_features(fun, *args):
    """Output feature counts of the convolutions in the jaxpr of ``fun(*args)``."""
    jaxpr = jax.make_jaxpr(fun)(*args)
    return [eqn.outvars[0].aval.shape[-1] for eqn in jaxpr.eqns
            if eqn.primitive.name == "conv_general_dilated"]


def test_forward_chain_is_computed_packed():
    p = _params(jax.random.PRNGKey(0))
    _, X = _box(jax.random.PRNGKey(1), (3, 8, 8, 2), 0.05)
    # packed: one convolution per layer with both bounds (6 -> 12 and 8 -> 16 features)
    assert _conv_output_features(lambda X: interval(cnn)(p, X), X) == [12, 16]


def test_packed_equals_centre_radius_and_is_sound(monkeypatch):
    p = _params(jax.random.PRNGKey(0))
    x, X = _box(jax.random.PRNGKey(1), (3, 8, 8, 2), 0.05)
    got = jax.jit(lambda X: interval(cnn)(p, X))(X)
    assert type(got) is Interval
    monkeypatch.setattr(packed, "MAX_FEATURES_TO_PACK", 0)
    assert _conv_output_features(lambda X: interval(cnn)(p, X), X) == [6, 6, 8, 8]
    ref = jax.jit(lambda X: interval(cnn)(p, X))(X)
    scale = float(jnp.abs(ref.lower).max() + jnp.abs(ref.upper).max())
    np.testing.assert_allclose(got.lower, ref.lower, atol=1e-5 * scale)
    np.testing.assert_allclose(got.upper, ref.upper, atol=1e-5 * scale)
    points = x + jax.random.uniform(jax.random.PRNGKey(2), (256,) + x.shape, minval=-0.05,
                                    maxval=0.05)
    values = jax.vmap(lambda z: cnn(p, z))(points)
    tol = 1e-5 * (1 + jnp.abs(values))
    assert bool(jnp.all(values >= got.lower - tol)) and bool(jnp.all(values <= got.upper + tol))


def test_infinite_input_bounds_give_infinite_not_nan_bounds():
    """``0 * inf`` inside the packed convolution is NaN; it must come out as -inf / +inf."""
    p = _params(jax.random.PRNGKey(0))
    x, X = _box(jax.random.PRNGKey(1), (2, 8, 8, 2), 0.05)
    lower = X.lower.at[0, 3, 3, 0].set(-jnp.inf)
    upper = X.upper.at[0, 3, 3, 0].set(jnp.inf)
    out = jax.jit(lambda X: interval(cnn)(p, X))(Interval(lower, upper))
    assert not bool(jnp.isnan(out.lower).any() | jnp.isnan(out.upper).any())
    assert bool(jnp.all(jnp.isinf(out.lower[0]) & jnp.isinf(out.upper[0])))
    assert bool(jnp.all(jnp.isfinite(out.lower[1]) & jnp.isfinite(out.upper[1])))


def test_gradient_bounds_keep_centre_radius_and_are_sound():
    """In ``jax.grad`` the pre-activations also feed ``x > 0``: nothing is packed, and the
    bounds contain the sampled gradients."""
    p = _params(jax.random.PRNGKey(3))
    x, X = _box(jax.random.PRNGKey(4), (2, 8, 8, 2), 0.02)
    grad = jax.grad(lambda p, z: cnn(p, z)[:, 0].sum(), argnums=1)
    features = _conv_output_features(lambda X: interval(grad)(p, X), X)
    assert 12 not in features and 16 not in features
    bounds = jax.jit(lambda X: interval(grad)(p, X))(X)
    points = x + jax.random.uniform(jax.random.PRNGKey(5), (128,) + x.shape, minval=-0.02,
                                    maxval=0.02)
    values = jax.vmap(lambda z: grad(p, z))(points)
    tol = 1e-5 * (1 + jnp.abs(values))
    assert bool(jnp.all(values >= bounds.lower - tol))
    assert bool(jnp.all(values <= bounds.upper + tol))


def test_features_first_layout_is_not_packed():
    w = jax.random.normal(jax.random.PRNGKey(0), (4, 2, 3, 3))
    f = lambda x: jax.nn.relu(lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW")))
    x, X = _box(jax.random.PRNGKey(1), (2, 2, 6, 6), 0.1)
    assert _conv_output_features(lambda X: interval(f)(X), X) == [6, 6]


LANE_WISE = {
    "add_point": lambda v: v + jnp.arange(v.shape[-1], dtype=v.dtype),
    "add_scalar": lambda v: v + 1.5,
    "sub_point": lambda v: v - jnp.linspace(-1, 1, v.shape[-1]),
    "max_min": lambda v: jnp.minimum(jnp.maximum(v, 0.1), 0.4),
    "two_packed": lambda v: jnp.maximum(v + v[:, :1], v[:, 1:2]),
    "reshape": lambda v: v.reshape(v.shape[0], -1, 2, v.shape[-1]).sum(2),
    "transpose": lambda v: jnp.transpose(v, (1, 0, 2, 3)),
    "slice_pad": lambda v: jnp.pad(v[:, 1:, ::2], ((0, 0), (1, 2), (0, 1), (0, 0)),
                                   constant_values=-3.0),
    "broadcast": lambda v: jnp.broadcast_to(v[:, None], (v.shape[0], 2) + v.shape[1:]),
    "reduce": lambda v: jnp.max(v, axis=(1, 2)) - jnp.min(v, axis=1).sum(1),
    "squeeze": lambda v: v[:, :1].squeeze(1),
    "reduce_window": lambda v: nn.avg_pool(v, (2, 2), (1, 1)),
    "not_lane_wise": lambda v: jnp.exp(v[..., ::-1]) * v.sum(-1, keepdims=True),
}


@pytest.mark.parametrize("name", sorted(LANE_WISE))
def test_lane_wise_rules_equal_the_unpacked_ones(name):
    """Each rule applied to a PackedInterval gives exactly the plain rule's bounds."""
    fun = LANE_WISE[name]
    lower = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 6, 3))
    upper = lower + jax.random.uniform(jax.random.PRNGKey(1), lower.shape)
    plain = interval(fun)(Interval(lower, upper))
    got = interval(fun)(PackedInterval(jnp.concatenate([lower, upper], -1)))
    assert type(got) is Interval
    np.testing.assert_allclose(got.lower, plain.lower, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got.upper, plain.upper, rtol=1e-6, atol=1e-6)


def test_packed_value_through_scan_and_cond():
    """Control flow gets plain Intervals (carries need one pytree structure)."""
    p = _params(jax.random.PRNGKey(0))

    def f(x):
        h = jax.nn.relu(_conv(x, p["w1"]) + p["b1"])
        h = lax.cond(True, lambda h: h * 2.0, lambda h: h, h)
        return lax.scan(lambda c, _: (c + h, None), jnp.zeros_like(h), None, length=3)[0]

    x, X = _box(jax.random.PRNGKey(1), (2, 6, 6, 2), 0.05)
    got = interval(f)(X)
    points = x + jax.random.uniform(jax.random.PRNGKey(2), (64,) + x.shape, minval=-0.05,
                                    maxval=0.05)
    values = jax.vmap(f)(points)
    assert bool(jnp.all(values >= got.lower - 1e-5)) and bool(jnp.all(values <= got.upper + 1e-5))


def test_packed_interval_validates_and_flattens():
    with pytest.raises(ValueError, match="even last axis"):
        PackedInterval(jnp.zeros((2, 3)))
    v = PackedInterval(jnp.array([[0.0, jnp.nan, 1.0, jnp.nan]]))
    assert v.shape == (1, 2)
    np.testing.assert_array_equal(v.lower, [[0.0, -np.inf]])
    np.testing.assert_array_equal(v.upper, [[1.0, np.inf]])
    leaves, tree = jax.tree_util.tree_flatten(v)
    assert len(leaves) == 1
    assert isinstance(jax.tree_util.tree_unflatten(tree, leaves), PackedInterval)


def test_eval_jaxpr_unpacks_its_outputs_unless_asked():
    p = _params(jax.random.PRNGKey(0))
    conv_relu = lambda x: jax.nn.relu(_conv(x, p["w1"]) + p["b1"])
    x, X = _box(jax.random.PRNGKey(1), (2, 6, 6, 2), 0.05)
    closed = jax.make_jaxpr(conv_relu)(x)
    (plain,) = eval_jaxpr(closed.jaxpr, closed.consts, X)
    (kept,) = eval_jaxpr(closed.jaxpr, closed.consts, X, keep_packed=True)
    assert type(plain) is Interval and isinstance(kept, PackedInterval)
    np.testing.assert_array_equal(plain.lower, kept.lower)
    np.testing.assert_array_equal(plain.upper, kept.upper)
