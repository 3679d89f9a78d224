"""Tests of lipxai._core.xla_cpu: convolutions rewritten into XLA:CPU's fastest forms.

The rewritten functions must have the values (and derivatives, forward and reverse) of the
originals for every convolution layout; the input gradients inside loops must compile to the
ordinary (``01io``) convolution form that XLA:CPU runs with its library kernels, and the padded
convolutions must leave YNNPACK's fusions for XLA's own (threaded) convolution.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import lipxai.boundary as boundary_module
from lipxai.bounds import Interval
from lipxai.bounds import interval as bounds_interval
from lipxai import boundary
from lipxai._core.xla_cpu import (
    MAX_EXTRA_WORK,
    canonical_conv_kernels,
    for_gradient_loops,
    for_gradients,
    for_train_steps,
    small_conv_kernels,
    threaded_conv_kernels,
)

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


def _vjp_fn(f, w):
    """``(x, ct) -> (d/dx, d/dw)`` of ``<f(x, w), ct>``: a function that takes gradients."""
    return lambda x, ct: jax.vjp(f, x, w)[1](ct)


@pytest.mark.parametrize("name", list(CASES))
def test_gradients_equal_jax(name):
    case = CASES[name]
    f = _model(case)
    x, w = _inputs(case)
    ct = jax.random.normal(jax.random.PRNGKey(7), f(x, w).shape)
    plain = _vjp_fn(f, w)
    rewritten = canonical_conv_kernels(plain)
    assert "transpose[" in str(jax.make_jaxpr(rewritten)(x, ct))
    assert "transpose[" not in str(jax.make_jaxpr(plain)(x, ct))
    for a, b in zip(rewritten(x, ct), plain(x, ct), strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["valid_strided", "nchw_asymmetric_dilated"])
def test_derivatives_of_the_rewritten_function_equal_jax(name):
    """It is made of ordinary operations: forward and reverse mode go through it."""
    case = CASES[name]
    f = _model(case)
    x, w = _inputs(case, seed=1)
    saliency = lambda z: jax.grad(lambda u: jnp.sum(f(u, w) ** 2))(z)
    rewritten = canonical_conv_kernels(saliency)
    tangent = jax.random.normal(jax.random.PRNGKey(2), x.shape)
    np.testing.assert_allclose(jax.jvp(rewritten, (x,), (tangent,))[1],
                               jax.jvp(saliency, (x,), (tangent,))[1], rtol=1e-4, atol=1e-4)
    loss = lambda g: jax.grad(lambda z: jnp.sum(g(z) ** 2))(x)
    np.testing.assert_allclose(loss(rewritten), loss(saliency), rtol=1e-4, atol=1e-4)


def test_jit_and_vmap():
    case = CASES["same_nhwc"]
    f, (x, w) = _model(case), _inputs(case)
    grad = jax.grad(lambda z: jnp.sum(f(z, w) ** 3))
    rewritten = canonical_conv_kernels(grad)
    np.testing.assert_allclose(jax.jit(rewritten)(x), grad(x), rtol=1e-5, atol=1e-5)
    per_example = jax.vmap(lambda xi: rewritten(xi[None])[0])(x)
    np.testing.assert_allclose(per_example, grad(x), rtol=1e-5, atol=1e-5)


def _gradient_loop(f, w):
    step = lambda _, z: z + 1e-3 * jax.grad(lambda u: jnp.sum(f(u, w)))(z)
    return lambda z: lax.fori_loop(0, 3, step, z)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the XLA:CPU convolution forms")
def test_input_gradient_in_a_loop_compiles_to_the_plain_kernel_layout():
    case = CASES["same_nhwc"]
    f, (x, w) = _model(case), _inputs(case)
    loop = _gradient_loop(f, w)
    hlo = lambda g: jax.jit(g).lower(x).compile().as_text()
    plain = hlo(loop)
    if "01oi->" not in plain:
        pytest.skip("this XLA already canonicalises convolution transposes inside loops")
    rewritten = hlo(canonical_conv_kernels(loop))
    assert "01oi->" not in rewritten
    assert rewritten.count("convolution(") >= 2  # forward and input gradient
    np.testing.assert_allclose(canonical_conv_kernels(loop)(x), loop(x), rtol=1e-5, atol=1e-6)


def test_grouped_convolutions_and_weight_gradients_are_left_alone():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 4))
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 2, 6))
    dn = ("NHWC", "HWIO", "NHWC")
    grouped = lambda z: lax.conv_general_dilated(z, w, (1, 1), "SAME", dimension_numbers=dn,
                                                 feature_group_count=2)
    grad_grouped = jax.grad(lambda z: jnp.sum(grouped(z) ** 2))
    assert "transpose[" not in str(jax.make_jaxpr(canonical_conv_kernels(grad_grouped))(x))
    w2 = jax.random.normal(jax.random.PRNGKey(2), (3, 3, 4, 5))
    conv = lambda v: lax.conv_general_dilated(x, v, (1, 1), "SAME", dimension_numbers=dn)
    weight_grad = jax.grad(lambda v: jnp.sum(conv(v) ** 2))
    rewritten = canonical_conv_kernels(weight_grad)
    assert "transpose[" not in str(jax.make_jaxpr(rewritten)(w2))
    np.testing.assert_allclose(rewritten(w2), weight_grad(w2), rtol=1e-5)


def test_convolutions_inside_control_flow_and_calls_are_rewritten():
    case = CASES["same_nhwc"]
    conv = _model(case)
    x, w = _inputs(case)
    w_same = jax.random.normal(jax.random.PRNGKey(3), (3, 3, 3, 3))
    grad = lambda z: jax.grad(lambda u: jnp.sum(conv(u, w_same)))(z)  # conv: tanh(...)

    def f(z):
        z = jax.jit(grad)(z)
        z = jax.checkpoint(grad)(z)
        z = lax.cond(jnp.sum(z) > 0, grad, lambda u: -grad(u), z)
        z, _ = lax.scan(lambda c, _: (grad(c), None), z, None, length=2)
        return jnp.sum(conv(z, w) ** 2)

    g = canonical_conv_kernels(f)
    assert str(jax.make_jaxpr(g)(x)).count("transpose[") >= 5
    np.testing.assert_allclose(g(x), f(x), rtol=1e-4)  # a sum after six convolutions


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_the_cpu_entry_points_only_rewrite_on_cpu(backend, monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    case = WIDE["same_nhwc"]
    f, (x, w) = _model(case), _inputs(case)
    grad = jax.grad(lambda z: jnp.sum(f(z, w)))
    on_cpu = backend == "cpu"
    assert ("transpose[" in str(jax.make_jaxpr(for_gradient_loops(grad))(x))) == on_cpu
    assert _padded_convolutions(for_gradient_loops(grad), x) == 0  # layout only
    both = for_gradients(grad)
    assert ("transpose[" in str(jax.make_jaxpr(both)(x))) == on_cpu
    assert (_padded_convolutions(both, x) == 2) == on_cpu


@pytest.mark.parametrize("rewrite", [canonical_conv_kernels, threaded_conv_kernels,
                                     small_conv_kernels, for_gradient_loops, for_gradients,
                                     for_train_steps])
def test_not_callable(rewrite):
    with pytest.raises(TypeError, match="fn must be callable"):
        rewrite(3)


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
    monkeypatch.setattr(boundary_module, "for_gradients", lambda f: f)
    boundary._search.clear_cache()
    plain = boundary.search(fn, x, target, **kwargs)
    boundary._search.clear_cache()
    np.testing.assert_array_equal(rewritten.success, plain.success)
    np.testing.assert_allclose(rewritten.distances, plain.distances, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- threaded kernel (padding)

#: convolutions with more than 16 features, which XLA:CPU gives to YNNPACK
WIDE = {
    "same_nhwc": dict(x=(2, 12, 11, 20), w=(3, 3, 20, 24), strides=(1, 1),
                      padding=((1, 1), (1, 1)), dilation=(1, 1), dn=("NHWC", "HWIO", "NHWC")),
    "valid_nhwc": dict(x=(2, 30, 27, 20), w=(3, 3, 20, 17), strides=(1, 1), padding="VALID",
                       dilation=(1, 1), dn=("NHWC", "HWIO", "NHWC")),
    "nchw_dilated": dict(x=(2, 18, 24, 21), w=(24, 18, 3, 3), strides=(1, 1),
                         padding=((2, 2), (2, 1)), dilation=(2, 2), dn=("NCHW", "OIHW", "NCHW")),
}


def _padded_convolutions(fn, *args) -> int:
    """How many convolutions of ``fn``'s jaxpr are followed by a slice (the padded ones)."""
    text = str(jax.make_jaxpr(fn)(*args))
    return text.count("conv_general_dilated[") if "slice[" in text else 0


@pytest.mark.parametrize("name", list(WIDE))
def test_padded_convolutions_have_the_values_and_derivatives_of_jax(name):
    case = WIDE[name]
    f = _model(case)
    x, w = _inputs(case, seed=2)
    ct = jax.random.normal(jax.random.PRNGKey(8), f(x, w).shape)
    plain = _vjp_fn(f, w)
    rewritten = threaded_conv_kernels(plain)
    assert _padded_convolutions(rewritten, x, ct) >= 2  # the forward and the input gradient
    for a, b in zip(rewritten(x, ct), plain(x, ct), strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    saliency = lambda z: jax.grad(lambda u: jnp.sum(f(u, w) ** 2))(z)
    both = for_gradients(saliency)
    tangent = jax.random.normal(jax.random.PRNGKey(2), x.shape)
    _close_to_scale(jax.jvp(both, (x,), (tangent,))[1], jax.jvp(saliency, (x,), (tangent,))[1])
    loss = lambda g: jax.grad(lambda z: jnp.sum(g(z) ** 2))(x)
    _close_to_scale(loss(both), loss(saliency))
    _close_to_scale(jax.vmap(lambda xi: both(xi[None])[0])(x), saliency(x))


def _close_to_scale(got, want, rel=1e-4):
    """Equal up to float32 rounding of sums of many terms: ``max|got - want| <= rel * max|want|``."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= rel * np.max(np.abs(want))


def test_only_convolutions_yNNPACK_takes_are_padded_and_only_where_it_is_cheap():
    dn = ("NHWC", "HWIO", "NHWC")
    grad_of = lambda conv: jax.grad(lambda z: jnp.sum(jnp.tanh(conv(z))))

    def padded(x_shape, w_shape, strides=(1, 1), groups=1):
        x = jax.random.normal(jax.random.PRNGKey(0), x_shape)
        w = jax.random.normal(jax.random.PRNGKey(1), w_shape)
        conv = lambda z: lax.conv_general_dilated(z, w, strides, "SAME", dimension_numbers=dn,
                                                  feature_group_count=groups)
        return _padded_convolutions(threaded_conv_kernels(grad_of(conv)), x)

    assert padded((2, 14, 14, 20), (3, 3, 20, 24)) == 2  # 1/14 more outputs
    assert padded((2, 14, 14, 8), (3, 3, 8, 16)) == 0  # at most 16 features: not YNNPACK's
    assert 1 / 7 > MAX_EXTRA_WORK
    assert padded((2, 7, 7, 20), (3, 3, 20, 24)) == 0  # 1/7 more outputs: too dear
    assert padded((2, 16, 16, 20), (3, 3, 20, 24), strides=(2, 2)) == 0  # 9 more than 8
    assert padded((2, 14, 14, 20), (3, 3, 10, 24), groups=2) == 0  # grouped


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the XLA:CPU convolution forms")
def test_padded_convolutions_leave_the_yNNPACK_fusions():
    case = WIDE["same_nhwc"]
    f, (x, w) = _model(case), _inputs(case)
    grad = jax.grad(lambda z: jnp.sum(f(z, w) ** 2))

    if _ynn_convolutions(grad, x) == 0:
        pytest.skip("this XLA:CPU gives no convolution to YNNPACK")
    assert _ynn_convolutions(for_gradients(grad), x) == 0


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the XLA:CPU convolution forms")
def test_interval_convolutions_leave_the_yNNPACK_fusions_and_keep_their_values():
    """The centre-radius convolutions of lipxai.bounds (whose outputs a comparison uses whole)
    get the threaded kernel; the bounds are still exactly ``c W -/+ r |W|``."""
    case = WIDE["same_nhwc"]
    f, (x, w) = _model(case), _inputs(case)
    bounds = lambda lo, hi: bounds_interval(lambda z: f(z, w) > 0.5)(Interval(lo, hi))  # noqa: E731
    radius = 0.1 * jnp.ones_like(x)
    plain = lambda z: jnp.sum(f(z, w) > 0.0)  # noqa: E731
    if _ynn_convolutions(plain, x) == 0:
        pytest.skip("this XLA:CPU gives no convolution to YNNPACK")
    assert _ynn_convolutions(bounds, x - radius, x + radius) == 0
    linear = bounds_interval(lambda z: lax.conv_general_dilated(
        z, w, case["strides"], case["padding"], dimension_numbers=case["dn"]))(
        Interval(x - radius, x + radius))
    center = lax.conv_general_dilated(x, w, case["strides"], case["padding"],
                                      dimension_numbers=case["dn"], precision="highest")
    spread = lax.conv_general_dilated(radius, jnp.abs(w), case["strides"], case["padding"],
                                      dimension_numbers=case["dn"], precision="highest")
    _close_to_scale(linear.lower, center - spread, rel=1e-5)
    _close_to_scale(linear.upper, center + spread, rel=1e-5)


def _ynn_convolutions(fn, *args) -> int:
    """How many convolutions the compiled ``fn`` leaves inside YNNPACK fusions."""
    hlo = jax.jit(fn).lower(*args).compile().as_text()
    called = {line.split("calls=")[1].split(",")[0] for line in hlo.splitlines()
              if "__ynn_fusion" in line and "calls=" in line}
    blocks = hlo.split("\n\n")
    return sum(block.count("convolution(") for block in blocks
               if any(block.lstrip().startswith(c + " ") for c in called))


# ---- small kernels: the weight gradient of a transposed convolution --------------------------

#: Convolutions whose input gradient (a transposed convolution) has a weight gradient with a
#: kernel larger than its input: "VALID" ones (Wicker's CNN), strided ones (lhs dilation).
SMALL = {
    "valid_nhwc": dict(x=(2, 9, 8, 3), w=(4, 3, 3, 4), strides=(1, 1), padding="VALID",
                       dilation=(1, 1), dn=("NHWC", "HWIO", "NHWC")),
    "valid_strided": CASES["valid_strided"],
    "nchw_padded": dict(x=(2, 3, 10, 9), w=(5, 3, 4, 3), strides=(1, 1), padding=((1, 0), (0, 1)),
                        dilation=(1, 1), dn=("NCHW", "OIHW", "NCHW")),
}


def _swaps(fn, *args) -> int:
    """How many convolutions of ``fn``'s jaxpr the small-kernel rewrite swapped (one ``rev``
    each, on top of the kernel flips of the original)."""
    return (str(jax.make_jaxpr(small_conv_kernels(fn))(*args)).count("rev[")
            - str(jax.make_jaxpr(fn)(*args)).count("rev["))


def _input_gradient_penalty(f, x):
    """``w -> |grad_x sum f(x, w)^2|^2``: double backpropagation, whose weight gradient holds the
    weight gradient of the transposed (input-gradient) convolution."""
    return lambda w: jnp.sum(jax.grad(lambda u: jnp.sum(f(u, w) ** 2))(x) ** 2)


@pytest.mark.parametrize("name", list(SMALL))
def test_small_kernel_form_has_the_values_and_derivatives_of_jax(name):
    case = SMALL[name]
    f = _model(case)
    x, w = _inputs(case, seed=3)
    grad = jax.grad(_input_gradient_penalty(f, x))
    rewritten = small_conv_kernels(grad)
    assert _swaps(grad, w) == 1
    _close_to_scale(rewritten(w), grad(w))
    _close_to_scale(jax.jit(rewritten)(w), grad(w))
    tangent = jax.random.normal(jax.random.PRNGKey(4), w.shape)
    _close_to_scale(jax.jvp(rewritten, (w,), (tangent,))[1], jax.jvp(grad, (w,), (tangent,))[1])
    second = lambda g: jax.grad(lambda v: jnp.sum(jnp.sin(g(v))))(w)
    _close_to_scale(second(rewritten), second(grad))


def test_small_kernel_form_of_one_convolution_by_hand():
    """A 1-D lhs-dilated convolution with a kernel longer than its input, against the sum
    ``o_i = sum_p L_{p + i - l} R_p`` written out, and its gradients in both operands."""
    lhs = jax.random.normal(jax.random.PRNGKey(5), (3, 2, 4))    # N C W: 4 positions, dilated to 7
    rhs = jax.random.normal(jax.random.PRNGKey(6), (5, 2, 9))    # O I W: 9 > 7 positions
    conv = lambda a, b: lax.conv_general_dilated(a, b, (1,), ((2, 3),), lhs_dilation=(2,),
                                                 dimension_numbers=("NCW", "OIW", "NCW"))
    assert _swaps(conv, lhs, rhs) == 1
    dilated = jnp.zeros((3, 2, 7)).at[:, :, ::2].set(lhs)
    padded = jnp.pad(dilated, ((0, 0), (0, 0), (2, 3)))             # 12 positions: 4 outputs
    by_hand = jnp.stack([jnp.einsum("ncp,ocp->no", padded[:, :, i:i + 9], rhs) for i in range(4)], -1)
    _close_to_scale(small_conv_kernels(conv)(lhs, rhs), by_hand)
    ct = jax.random.normal(jax.random.PRNGKey(7), by_hand.shape)
    for a, b in zip(jax.vjp(small_conv_kernels(conv), lhs, rhs)[1](ct), jax.vjp(conv, lhs, rhs)[1](ct),
                    strict=True):
        _close_to_scale(a, b)


def test_small_kernel_form_leaves_other_convolutions_alone():
    """Forward convolutions, input gradients, ordinary weight gradients, grouped and
    kernel-dilated convolutions keep their form."""
    case = SMALL["valid_nhwc"]
    f = _model(case)
    x, w = _inputs(case)
    assert _swaps(jax.grad(lambda u: jnp.sum(f(u, w) ** 2)), x) == 0
    assert _swaps(jax.grad(lambda v: jnp.sum(f(x, v) ** 2)), w) == 0
    grouped = lambda u, v: jnp.tanh(lax.conv_general_dilated(u, v, (1, 1), "VALID", feature_group_count=3,
                                                             dimension_numbers=case["dn"]))
    v = jax.random.normal(jax.random.PRNGKey(8), (4, 3, 1, 6))
    assert _swaps(jax.grad(_input_gradient_penalty(grouped, x)), v) == 0
    dilated = _model(dict(case, dilation=(2, 1)))
    assert _swaps(jax.grad(_input_gradient_penalty(dilated, x)), w) == 0


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_for_gradients_writes_small_kernels_only_on_cpu(backend, monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    case = SMALL["valid_nhwc"]
    f = _model(case)
    x, w = _inputs(case)
    grad = jax.grad(_input_gradient_penalty(f, x))
    revs = lambda fn: str(jax.make_jaxpr(fn)(w)).count("rev[")
    assert revs(for_gradients(grad)) - revs(grad) == (backend == "cpu")
    assert revs(for_gradient_loops(grad)) == revs(grad)  # layout only
    small_only = str(jax.make_jaxpr(for_train_steps(grad))(w))
    assert small_only.count("rev[") - revs(grad) == (backend == "cpu")
    assert "transpose[" not in small_only and "slice[" not in small_only
