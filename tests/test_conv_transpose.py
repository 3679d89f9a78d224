"""Tests of lipxai._conv_transpose: convolution input-gradients written as plain convolutions.

The rewritten function must have the values and derivatives of the original for every
convolution layout, and its input gradients inside loops must compile to the ordinary
(``01io``) convolution form that XLA:CPU runs with its library kernels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import lipxai.boundary as boundary_module
from lipxai import boundary
from lipxai._conv_transpose import explicit_conv_transposes, for_gradient_loops

CASES = {
    "same_nhwc": dict(x=(2, 9, 8, 3), w=(3, 3, 3, 4), strides=(1, 1), padding=((1, 1), (1, 1)),
                      dilation=(1, 1), dn=("NHWC", "HWIO", "NHWC")),
    "valid_strided": dict(x=(2, 9, 8, 3), w=(3, 2, 3, 4), strides=(2, 3), padding="VALID",
                          dilation=(1, 1), dn=("NHWC", "HWIO", "NHWC")),
    "nchw_asymmetric_dilated": dict(x=(2, 3, 11, 10), w=(5, 3, 3, 3), strides=(2, 2),
                                    padding=((2, 0), (1, 3)), dilation=(2, 1),
                                    dn=("NCHW", "OIHW", "NCHW")),
    "1d_same_strided": dict(x=(2, 12, 3), w=(4, 3, 6), strides=(3,), padding="SAME",
                            dilation=(2,), dn=("NWC", "WIO", "NWC")),
}


def _model(case):
    def f(x, w):
        y = lax.conv_general_dilated(x, w, case["strides"], case["padding"],
                                     rhs_dilation=case["dilation"], dimension_numbers=case["dn"])
        return jnp.tanh(y)

    return f


def _inputs(case, seed=0):
    kx, kw = jax.random.split(jax.random.PRNGKey(seed))
    return jax.random.normal(kx, case["x"]), jax.random.normal(kw, case["w"])


def _has_custom_vjp(jaxpr) -> bool:
    return "custom_vjp_call" in str(jaxpr)


@pytest.mark.parametrize("name", list(CASES))
def test_values_and_both_gradients_equal_jax(name):
    case = CASES[name]
    f = _model(case)
    g = explicit_conv_transposes(f)
    x, w = _inputs(case)
    y = f(x, w)
    np.testing.assert_allclose(g(x, w), y, rtol=1e-6, atol=1e-6)
    assert _has_custom_vjp(jax.make_jaxpr(g)(x, w))
    ct = jax.random.normal(jax.random.PRNGKey(7), y.shape)
    expected = jax.vjp(f, x, w)[1](ct)
    got = jax.vjp(g, x, w)[1](ct)
    for a, b in zip(got, expected, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["valid_strided", "nchw_asymmetric_dilated"])
def test_second_order_gradients_equal_jax(name):
    case = CASES[name]
    f, x_w = _model(case), _inputs(case, seed=1)
    g = explicit_conv_transposes(f)

    def double_backward(h):
        x, w = x_w
        inner = lambda z: jnp.sum(jax.grad(lambda z: jnp.sum(h(z, w) ** 2))(z) ** 2)
        return jax.grad(inner)(x)

    np.testing.assert_allclose(double_backward(g), double_backward(f), rtol=1e-4, atol=1e-4)


def test_jit_and_vmap():
    case = CASES["same_nhwc"]
    f, (x, w) = _model(case), _inputs(case)
    g = explicit_conv_transposes(f)
    grad = lambda h: jax.grad(lambda z: jnp.sum(h(z, w) ** 3))
    np.testing.assert_allclose(jax.jit(grad(g))(x), grad(f)(x), rtol=1e-5, atol=1e-5)
    per_example = jax.vmap(lambda xi: grad(g)(xi[None])[0])(x)
    np.testing.assert_allclose(per_example, grad(f)(x), rtol=1e-5, atol=1e-5)


def _loop_hlo(h, x, w):
    step = lambda _, z: z + 1e-3 * jax.grad(lambda u: jnp.sum(h(u, w)))(z)
    return jax.jit(lambda z: lax.fori_loop(0, 3, step, z)).lower(x).compile().as_text()


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the XLA:CPU convolution forms")
def test_input_gradient_in_a_loop_compiles_to_the_plain_kernel_layout():
    case = CASES["same_nhwc"]
    f, (x, w) = _model(case), _inputs(case)
    plain = _loop_hlo(f, x, w)
    if "01oi->" not in plain:
        pytest.skip("this XLA already canonicalises convolution transposes inside loops")
    rewritten = _loop_hlo(explicit_conv_transposes(f), x, w)
    assert "01oi->" not in rewritten
    assert rewritten.count("convolution(") >= 2  # forward and input gradient


def test_grouped_and_input_dilated_convolutions_are_left_alone():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 4))
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 2, 6))
    dn = ("NHWC", "HWIO", "NHWC")
    grouped = lambda z: lax.conv_general_dilated(z, w, (1, 1), "SAME", dimension_numbers=dn,
                                                 feature_group_count=2)
    w_dilated = jax.random.normal(jax.random.PRNGKey(2), (3, 3, 4, 2))
    dilated = lambda z: lax.conv_general_dilated(z, w_dilated, (1, 1), ((1, 1), (1, 1)),
                                                 lhs_dilation=(2, 2), dimension_numbers=dn)
    for f in (grouped, dilated):
        g = explicit_conv_transposes(f)
        assert not _has_custom_vjp(jax.make_jaxpr(g)(x))
        squared = lambda h: jax.grad(lambda z: jnp.sum(h(z) ** 2))(x)
        np.testing.assert_allclose(squared(g), squared(f), rtol=1e-5)


def test_custom_derivative_rules_are_kept():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 6, 1))
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 1, 2))

    @jax.custom_jvp
    def blocked(z):
        return lax.conv_general_dilated(z, w, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

    blocked.defjvp(lambda primals, tangents: (blocked(*primals), jnp.zeros_like(blocked(*primals))))
    g = explicit_conv_transposes(lambda z: jnp.sum(blocked(z) ** 2))
    np.testing.assert_array_equal(jax.grad(g)(x), np.zeros(x.shape))


def test_convolutions_inside_control_flow_and_calls_are_rewritten():
    case = CASES["same_nhwc"]
    conv = _model(case)
    x, w = _inputs(case)
    w_same = jax.random.normal(jax.random.PRNGKey(3), (3, 3, 3, 3))

    def f(z):
        z = jax.jit(lambda u: conv(u, w_same))(z)
        z = jax.checkpoint(lambda u: conv(u, w_same))(z)
        z = lax.cond(jnp.sum(z) > 0, lambda u: conv(u, w_same), lambda u: -conv(u, w_same), z)
        z, _ = lax.scan(lambda c, _: (conv(c, w_same), None), z, None, length=2)
        return jnp.sum(conv(z, w) ** 2)

    g = explicit_conv_transposes(f)
    jaxpr = str(jax.make_jaxpr(g)(x))
    assert jaxpr.count("custom_vjp_call") >= 5
    np.testing.assert_allclose(g(x), f(x), rtol=1e-5)
    np.testing.assert_allclose(jax.grad(g)(x), jax.grad(f)(x), rtol=1e-4, atol=1e-5)


def test_for_gradient_loops_only_rewrites_on_cpu():
    case = CASES["same_nhwc"]
    f, (x, w) = _model(case), _inputs(case)
    rewritten = _has_custom_vjp(jax.make_jaxpr(for_gradient_loops(f))(x, w))
    assert rewritten == (jax.default_backend() == "cpu")


def test_not_callable():
    with pytest.raises(TypeError, match="fn must be callable"):
        explicit_conv_transposes(3)


def _small_cnn(seed=0):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    w1 = jax.random.normal(k1, (3, 3, 1, 4)) * 0.5
    w2 = jax.random.normal(k2, (3, 3, 4, 6)) * 0.3
    dense = jax.random.normal(k3, (6 * 4 * 4, 5)) * 0.2
    dn = ("NHWC", "HWIO", "NHWC")

    def fn(x):
        h = jax.nn.relu(lax.conv_general_dilated(x, w1, (1, 1), "SAME", dimension_numbers=dn))
        h = jax.nn.relu(lax.conv_general_dilated(h, w2, (2, 2), "SAME", dimension_numbers=dn))
        return h.reshape(h.shape[0], -1) @ dense

    return fn


@pytest.mark.parametrize("method", ["pgd", "deepfool", "cw"])
def test_boundary_search_is_unchanged_by_the_rewrite(method, monkeypatch):
    fn = _small_cnn()
    x = jax.random.uniform(jax.random.PRNGKey(5), (6, 8, 8, 1))
    target = jnp.argmax(fn(x), axis=1)
    kwargs = dict(method=method, steps=5, num_eps=6, cw_steps=10, cw_rounds=2, max_iter=10)
    rewritten = boundary.search(fn, x, target, **kwargs)
    monkeypatch.setattr(boundary_module, "for_gradient_loops", lambda f: f)
    boundary._search.clear_cache()
    plain = boundary.search(fn, x, target, **kwargs)
    boundary._search.clear_cache()
    np.testing.assert_array_equal(rewritten.success, plain.success)
    np.testing.assert_allclose(rewritten.distances, plain.distances, rtol=1e-4, atol=1e-5)
