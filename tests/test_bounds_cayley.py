"""Interval bounds through Cayley convolutions (``OrthoConv(method="cayley")``) and their export
``lipxai.nn.plain.FourierConv``: the Fourier-domain product is one named call whose hull
``A c +/- |A| r`` is exact (``lipxai.bounds.control``).

Containment of sampled outputs and gradients (random box corners and uniform points), the
point value for a zero-width box, exactness against the hull computed from the explicit
Jacobian, and a loud failure where the spectrum itself is uncertain.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lipxai as lx
from lipxai import nn as lnn
from lipxai.bounds import Interval, UnsupportedPrimitiveError, gradient_bounds, interval

from _fast_compile import fast_jit

KEY = jax.random.PRNGKey(0)
EPS = 0.05
#: (padding, stride, features) on [B, 8, 8, 2] images; stride 2 widens to 4 * 2 = 8 channels.
CASES = [("SAME", 1, 4), ("CIRCULAR", 1, 4), ("SAME", 2, 8), ("CIRCULAR", 2, 8)]
IDS = [f"{p}-s{s}" for p, s, _ in CASES]


def conv_fn(padding, stride, features, *, exported, shape=(2, 8, 8, 2)):
    """``x -> OrthoConv(cayley)(x)`` (or its exported FourierConv), with a random bias."""
    module = lnn.OrthoConv(features, 3, strides=stride, padding=padding, method="cayley",
                           bias_init=nn.initializers.normal(0.3))
    x = jax.random.uniform(jax.random.PRNGKey(1), shape)
    variables = fast_jit(module.init)(KEY, x)
    if exported:
        module, variables = lnn.export(module, variables, input_shape=shape)
        assert isinstance(module, lnn.plain.FourierConv)
    return (lambda z: module.apply(variables, z)), x


def samples(x, eps, n=64):
    """``n`` points of the box ``x +/- eps``: half random corners, half uniform."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(2))
    corners = x + eps * jax.random.rademacher(k1, (n // 2, *x.shape), jnp.float32)
    uniform = x + jax.random.uniform(k2, (n - n // 2, *x.shape), minval=-eps, maxval=eps)
    return jnp.concatenate([corners, uniform])


def assert_contains(bounds: Interval, values, tol=1e-5):
    values = np.asarray(values)
    lo, hi = np.asarray(bounds.lower), np.asarray(bounds.upper)
    slack = tol + tol * np.abs(values)
    assert np.all(lo - slack <= values), float(np.max(values - lo))
    assert np.all(values <= hi + slack), float(np.max(hi - values))


@pytest.mark.parametrize("exported", [False, True], ids=["orthoconv", "fourierconv"])
@pytest.mark.parametrize("padding,stride,features", CASES, ids=IDS)
def test_forward_bounds_contain_samples_and_are_the_point_value_at_eps_0(
        padding, stride, features, exported):
    fn, x = conv_fn(padding, stride, features, exported=exported)
    bounds = fast_jit(interval(fn))(Interval(x - EPS, x + EPS))
    assert_contains(bounds, fast_jit(jax.vmap(fn))(samples(x, EPS)))
    point = fast_jit(interval(fn))(Interval(x, x))
    np.testing.assert_array_equal(point.lower, point.upper)
    np.testing.assert_allclose(point.lower, fn(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("exported", [False, True], ids=["orthoconv", "fourierconv"])
@pytest.mark.parametrize("padding,stride,features", CASES, ids=IDS)
def test_forward_bounds_are_the_exact_hull_of_the_jacobian(padding, stride, features, exported):
    """``f`` is affine: its hull over ``c +/- r`` is ``f(c) +/- |J| r`` (float64 reference), up
    to the FFT's outward rounding (below ``2e-5`` of the largest entry ``|J| r`` can take)."""
    fn, x = conv_fn(padding, stride, features, exported=exported, shape=(1, 8, 8, 2))
    radius = jax.random.uniform(jax.random.PRNGKey(3), x.shape, maxval=EPS)
    bounds = fast_jit(interval(fn))(Interval(x - radius, x + radius))
    jac = np.asarray(fast_jit(jax.jacobian(fn))(x), np.float64).reshape(-1, x.size)
    spread = (np.abs(jac) @ np.asarray(radius, np.float64).ravel()).reshape(bounds.shape)
    centre = np.asarray(fn(x), np.float64)
    np.testing.assert_allclose(bounds.lower, centre - spread, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bounds.upper, centre + spread, rtol=1e-5, atol=1e-5)


def cayley_cnn(exported: bool):
    model = nn.Sequential([lnn.OrthoConv(4, 3, method="cayley"), lnn.GroupSort(2),
                           lnn.OrthoConv(8, 3, strides=2, padding="CIRCULAR", method="cayley"),
                           lnn.GroupSort(2), lnn.Flatten(), lnn.OrthoDense(3)])
    x = jax.random.uniform(jax.random.PRNGKey(4), (2, 8, 8, 2))
    variables = fast_jit(model.init)(KEY, x)
    if exported:
        model, variables = lnn.export(model, variables, input_shape=x.shape)
    return (lambda z: model.apply(variables, z)), x


@pytest.mark.parametrize("exported", [False, True], ids=["orthoconv", "fourierconv"])
def test_gradient_bounds_of_a_cayley_cnn_contain_sampled_gradients(exported):
    fn, x = cayley_cnn(exported)
    target = jnp.array([0, 2], jnp.int32)
    eps = 0.02
    bounds = fast_jit(lambda z, e: gradient_bounds(fn, z, target, eps=e))
    exact = bounds(x, 0.0)
    bounds = bounds(x, eps)

    def grad_at(z):
        return jax.grad(lambda u: jnp.sum(jnp.take_along_axis(fn(u), target[:, None], 1)))(z)

    values = fast_jit(jax.vmap(lambda z: (fn(z), grad_at(z))))(samples(x, eps))
    assert_contains(Interval(bounds.lower, bounds.upper), values[1])
    assert_contains(bounds.logits, values[0])
    assert np.all(np.isfinite(bounds.lower)) and np.all(np.isfinite(bounds.upper))
    np.testing.assert_allclose(exact.lower, exact.gradient, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(exact.upper, exact.gradient, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(exact.gradient, fast_jit(grad_at)(x), rtol=1e-6, atol=1e-6)


def test_an_uncertain_spectrum_fails_loudly_at_the_fft():
    """Only input boxes are bounded exactly; a box on the kernel meets the FFT of its spectrum."""
    module = lnn.OrthoConv(4, 3, method="cayley")
    x = jnp.ones((1, 8, 8, 2))
    variables = fast_jit(module.init)(KEY, x)
    boxes = lx.bounds.params_box(variables, relative=1e-3)
    with pytest.raises(UnsupportedPrimitiveError, match="'fft'"):
        interval(module.apply)(boxes, x)
