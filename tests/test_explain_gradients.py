"""Tests for lipxai.explain gradient methods: hand gradients, completeness, invariances, errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lipxai import explain as ex

METHODS = ["riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre"]


def close(a, b, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def _act(v):
    # a smooth ReLU (softplus with sharpness 3): random ReLU nets with biases have kinks on
    # the IG path that no quadrature integrates to 1% with 16 nodes
    return nn.softplus(3.0 * v) / 3.0


class SmallCNN(nn.Module):
    classes: int = 5

    @nn.compact
    def __call__(self, x):
        x = _act(nn.Conv(8, (3, 3))(x))
        x = _act(nn.Conv(8, (3, 3), strides=2)(x))
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(self.classes)(x)


@pytest.fixture(scope="module")
def cnn():
    model = SmallCNN()
    x = jax.random.normal(jax.random.key(1), (64, 12, 12, 1))
    params = model.init(jax.random.key(0), x[:1])
    # random (non-zero) biases: with zero biases and a zero baseline the net is homogeneous
    # along the path and every quadrature is trivially exact
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(5), len(leaves))
    leaves = [
        leaf + 0.3 * jax.random.normal(k, leaf.shape) if leaf.ndim == 1 else leaf
        for leaf, k in zip(leaves, keys, strict=True)
    ]
    params = jax.tree_util.tree_unflatten(tree, leaves)
    fn = jax.jit(lambda z: model.apply(params, z))
    target = jnp.arange(64, dtype=jnp.int32) % 5
    return fn, x, target


def _linear(w, b):
    def fn(z):
        return z.reshape(z.shape[0], -1) @ w + b

    return fn


@pytest.fixture(scope="module")
def linear():
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(12, 3)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(3,)), jnp.float32)
    x = jnp.asarray(rng.normal(size=(4, 3, 4)), jnp.float32)
    t = jnp.array([0, 1, 2, 1], jnp.int32)
    return _linear(w, b), w, x, t


# ------------------------------------------------------------------ saliency / x input


def test_saliency_equals_hand_grad(cnn):
    fn, x, t = cnn
    x, t = x[:6], t[:6]
    expected = jnp.stack([jax.grad(lambda xi, i=i: fn(xi[None])[0, t[i]])(x[i]) for i in range(6)])
    close(ex.saliency(fn, x, t), expected)
    close(ex.saliency(fn, x, t, absolute=True), jnp.abs(expected))
    close(ex.saliency(fn, x, t, per_example=True), expected)


def test_gradient_x_input(cnn):
    fn, x, t = cnn
    close(ex.gradient_x_input(fn, x[:8], t[:8]), x[:8] * ex.saliency(fn, x[:8], t[:8]))


def test_per_example_exact_when_examples_interact():
    # batch-normalising fn: examples interact, the summed-logit trick is not per-example
    def fn(z):
        h = z - z.mean(0, keepdims=True)
        return jnp.stack([h.sum(1), (h**2).sum(1)], axis=1)

    x = jax.random.normal(jax.random.key(0), (5, 4))
    t = jnp.array([0, 1, 0, 1, 1], jnp.int32)
    single = jax.jit(lambda xi, ti: ex.saliency(fn, xi, ti))
    one_by_one = jnp.concatenate([single(x[i : i + 1], t[i : i + 1]) for i in range(5)])
    close(ex.saliency(fn, x, t, per_example=True), one_by_one)
    assert not np.allclose(ex.saliency(fn, x, t), one_by_one)
    ig1 = jax.jit(lambda xi, ti: ex.integrated_gradients(fn, xi, ti, steps=4))
    ig_one = jnp.concatenate([ig1(x[i : i + 1], t[i : i + 1]) for i in range(5)])
    ig = ex.integrated_gradients(fn, x, t, steps=4, batch_size=3, per_example=True)
    close(ig, ig_one, rtol=1e-5, atol=1e-6)
    eps = jax.random.normal(jax.random.key(1), (2,) + x.shape)
    sg = ex.smoothgrad(fn, x, t, noise=0.1, noise_samples=eps, per_example=True)
    sal = ex.saliency  # one example, one noisy copy at a time
    sg_one = jnp.stack(
        [
            jnp.stack([sal(fn, (x + 0.1 * e)[i : i + 1], t[i : i + 1])[0] for e in eps]).mean(0)
            for i in range(5)
        ]
    )
    close(sg, sg_one, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ integrated gradients


def test_quadrature_matches_captum_definition():
    n = 7
    a, w = ex.quadrature("riemann_left", n)
    close(a, np.arange(n) / n), close(w, np.full(n, 1 / n))
    a, w = ex.quadrature("riemann_right", n)
    close(a, np.arange(1, n + 1) / n)
    a, w = ex.quadrature("riemann_middle", n)
    close(a, (np.arange(n) + 0.5) / n)
    a, w = ex.quadrature("riemann_trapezoid", n)
    close(a, np.linspace(0, 1, n)), close(w.sum(), (n - 1) / n)
    a, w = ex.quadrature("gausslegendre", n)
    close(w.sum(), 1.0)
    close((w * a**5).sum(), 1 / 6)  # exact up to degree 2n - 1


@pytest.mark.parametrize("method", METHODS)
def test_ig_linear_model_exact(linear, method):
    fn, w, x, t = linear
    base = jnp.full_like(x, 0.3)
    attr = ex.integrated_gradients(fn, x, t, baseline=base, steps=9, method=method)
    expected = (x - base) * w[:, t].T.reshape(x.shape)
    # Captum's trapezoid weights sum to (n - 1) / n (see quadrature)
    scale = 8 / 9 if method == "riemann_trapezoid" else 1.0
    close(attr, scale * expected, rtol=1e-5, atol=1e-6)


def _completeness_error(fn, x, t, attr, base):
    gap = (fn(x) - fn(base))[jnp.arange(x.shape[0]), t]
    return np.asarray(jnp.abs(attr.reshape(x.shape[0], -1).sum(1) - gap) / jnp.abs(gap))


def test_ig_completeness_gausslegendre_16(cnn):
    # Measured on this network (64 examples, zero baseline), fraction of examples with
    # relative completeness error <= 1% / median error:
    #   gausslegendre  8: 100% / 1.2e-6     gausslegendre 16: 100% / 6e-7
    #   riemann_middle 8: 91% / 1.5e-3      riemann_middle 16: 98% / 3.7e-4
    #   riemann_middle 48: 100% / 4e-5      riemann_middle 256: 100% / 1.5e-6
    # i.e. riemann_middle meets the ">= 95% within 1%" bar from 16 steps, all examples
    # from 48 steps, and GL-16's median error is not reached even with 256 steps.
    fn, x, t = cnn
    base = jnp.zeros_like(x)
    attr = ex.integrated_gradients(fn, x, t, steps=16, method="gausslegendre")
    err = _completeness_error(fn, x, t, attr, base)
    assert (err <= 0.01).mean() >= 0.95
    attr = ex.integrated_gradients(fn, x, t, steps=16, method="riemann_middle")
    assert (_completeness_error(fn, x, t, attr, base) <= 0.01).mean() >= 0.95


def test_ig_per_example_independence_and_jit(cnn):
    fn, x, t = cnn
    x, t = x[:5], t[:5]
    ig = jax.jit(lambda x, t: ex.integrated_gradients(fn, x, t, steps=8, baseline=0.5))
    batch = ig(x, t)
    one_by_one = jnp.concatenate([ig(x[i : i + 1], t[i : i + 1]) for i in range(5)])
    close(batch, one_by_one, rtol=1e-4, atol=1e-6)
    vmapped = jax.vmap(lambda xi, ti: ig(xi[None], ti[None])[0])(x, t)
    close(batch, vmapped, rtol=1e-4, atol=1e-6)


def test_ig_chunking_invariance(cnn):
    fn, x, t = cnn
    x, t = x[:4], t[:4]
    ref = ex.integrated_gradients(fn, x, t, steps=7, method="riemann_middle", batch_size=None)
    for bs in (1, 3, 100):
        got = ex.integrated_gradients(fn, x, t, steps=7, method="riemann_middle", batch_size=bs)
        close(got, ref, rtol=1e-4, atol=1e-6)


def test_baselines(cnn):
    fn, x, t = cnn
    x, t = x[:3], t[:3]
    zeros = jnp.zeros_like(x)
    close(ex.make_baseline(x, None), zeros)
    close(ex.make_baseline(x, "zeros"), zeros)
    close(ex.make_baseline(x, 0.25), zeros + 0.25)
    close(ex.make_baseline(x, jnp.ones((1, 12, 12, 1))), zeros + 1)
    u = ex.make_baseline(x, "uniform", key=jax.random.key(0))
    assert u.shape == x.shape and float(u.min()) >= 0 and float(u.max()) <= 1
    close(
        ex.integrated_gradients(fn, x, t, steps=4, baseline="uniform", key=jax.random.key(0)),
        ex.integrated_gradients(fn, x, t, steps=4, baseline=u),
    )
    blur = ex.make_baseline(x, "blur", sigma=2.0)
    assert blur.shape == x.shape
    assert float(jnp.var(blur)) < float(jnp.var(x))  # smoother
    close(blur.mean(axis=(1, 2)), x.mean(axis=(1, 2)), atol=0.3)
    const = jnp.ones((2, 6, 6, 1)) * 0.7  # blurring a constant image leaves it unchanged
    close(ex.make_baseline(const, "blur", sigma=1.5), const)


def test_idgi_complete_and_invariant(cnn):
    fn, x, t = cnn
    x, t = x[:6], t[:6]
    attr = ex.idgi(fn, x, t, steps=8)
    err = _completeness_error(fn, x, t, attr, jnp.zeros_like(x))
    assert err.max() < 1e-4
    close(ex.idgi(fn, x, t, steps=8, batch_size=4), attr, rtol=1e-4, atol=1e-6)
    single = jax.jit(lambda xi, ti: ex.idgi(fn, xi, ti, steps=8))
    one = jnp.concatenate([single(x[i : i + 1], t[i : i + 1]) for i in range(6)])
    close(attr, one, rtol=1e-4, atol=1e-6)


def test_idgi_linear_model(linear):
    # constant gradient w: IDGI = w^2 / |w|^2 * (f(x) - f(x'))
    fn, w, x, t = linear
    attr = ex.idgi(fn, x, t, steps=5)
    wt = w[:, t].T
    gap = (fn(x) - fn(jnp.zeros_like(x)))[jnp.arange(4), t]
    expected = wt**2 / (wt**2).sum(1, keepdims=True) * gap[:, None]
    close(attr.reshape(4, -1), expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ smoothgrad family


def test_smoothgrad_no_noise_is_saliency(cnn):
    fn, x, t = cnn
    x, t = x[:3], t[:3]
    sal = ex.saliency(fn, x, t)
    key = jax.random.key(3)
    close(ex.smoothgrad(fn, x, t, key=key, samples=1, noise=0.0), sal)
    close(ex.squaregrad(fn, x, t, key=key, samples=1, noise=0.0), sal**2)
    close(ex.vargrad(fn, x, t, key=key, samples=3, noise=0.0), jnp.zeros_like(x), atol=1e-6)


def test_smoothgrad_family_definitions_and_chunking(cnn):
    fn, x, t = cnn
    x, t = x[:3], t[:3]
    eps = jax.random.normal(jax.random.key(7), (5,) + x.shape)
    grads = jax.vmap(lambda e: ex.saliency(fn, x + 0.3 * e, t))(eps)
    kw = dict(noise=0.3, noise_samples=eps)
    close(ex.smoothgrad(fn, x, t, **kw), grads.mean(0), rtol=1e-4)
    close(ex.squaregrad(fn, x, t, **kw), (grads**2).mean(0), rtol=1e-4)
    v = ex.vargrad(fn, x, t, **kw)
    close(v, grads.var(0), rtol=1e-3, atol=1e-6)
    assert bool((v >= 0).all())
    key = jax.random.key(1)
    ref = ex.smoothgrad(fn, x, t, key=key, samples=4, noise=0.3)
    got = ex.smoothgrad(fn, x, t, key=key, samples=4, noise=0.3, batch_size=2)
    close(got, ref, rtol=1e-4, atol=1e-6)
    assert float(v.max()) > 0


# ------------------------------------------------------------------ chunks


def test_default_chunk(monkeypatch):
    from lipxai.explain import gradients as g

    if jax.default_backend() == "cpu":
        # the values quoted in default_chunk's docstring (benchmarks/attributions.py)
        assert ex.default_chunk(32, (128, 28, 28, 1)) == 1
        assert ex.default_chunk(64, (128, 28, 28, 1)) == 1
        assert ex.default_chunk(32, (16, 28, 28, 1)) == 8
        assert ex.default_chunk(64, (16, 28, 28, 1)) == 10
        assert ex.default_chunk(48, (1, 28, 28, 1)) == ex.DEFAULT_CHUNK  # never above
        assert ex.default_chunk(50, (1, 28, 28, 1)) == 13  # balanced: 4 chunks, not 16+16+16+2
    for n in (1, 2, 7, 50, 64, 1000):
        for shape in ((1, 4), (16, 28, 28, 1), (256, 32, 32, 3)):
            c = ex.default_chunk(n, shape)
            assert 1 <= c <= min(n, ex.DEFAULT_CHUNK)
            chunks = -(-n // c)
            assert chunks == 1 or c * (chunks - 1) < n <= c * chunks
    monkeypatch.setattr(g.jax, "default_backend", lambda: "gpu")
    assert ex.default_chunk(32, (128, 28, 28, 1)) == ex.DEFAULT_CHUNK
    assert ex.default_chunk(5, (128, 28, 28, 1)) == 5


def test_chunked_and_single_chunk_agree(linear, monkeypatch):
    """Chunks in the scan (with the kernel-layout rewrite on CPU) plus a remainder chunk give
    what one chunk of every step / sample gives; so does the scan without the rewrite."""
    from lipxai._core import batched as g

    fn, _, x, t = linear
    fn = lambda z, fn=fn: jnp.tanh(fn(z))  # not linear: gradients vary along paths and noise
    key = jax.random.key(3)

    def run(chunks):
        sg, ig, idgi = chunks
        return (ex.smoothgrad(fn, x, t, key=key, samples=5, noise=0.3, batch_size=sg),
                ex.integrated_gradients(fn, x, t, steps=7, batch_size=ig),
                ex.idgi(fn, x, t, steps=5, batch_size=idgi))

    whole = run((5, 7, 5))
    for got, want in zip(jax.jit(lambda: run((2, 3, 2)))(), whole, strict=True):
        close(got, want, rtol=1e-5, atol=1e-7)
    monkeypatch.setattr(g, "for_gradient_loops", lambda f: f)
    monkeypatch.setattr(g, "for_gradients", lambda f: f)
    for got, want in zip(run((1, 2, 4)), whole, strict=True):
        close(got, want, rtol=1e-5, atol=1e-7)


def test_chunks_run_one_at_a_time():
    """Chunks are a loop: one chunk's intermediates are live at a time, not all of them."""
    rng = np.random.default_rng(0)
    w1 = jnp.asarray(rng.normal(size=(16, 2048)), jnp.float32)
    w2 = jnp.asarray(rng.normal(size=(2048, 3)), jnp.float32)
    fn = lambda z: jnp.tanh(z @ w1) @ w2  # 8 KiB of activations per example
    x, t = jnp.ones((8, 16)), jnp.zeros(8, jnp.int32)

    def temp_bytes(batch_size):
        f = jax.jit(lambda x: ex.smoothgrad(fn, x, t, key=jax.random.key(0), samples=8,
                                            batch_size=batch_size))
        memory = f.lower(x).compile().memory_analysis()
        if memory is None:
            pytest.skip("no memory analysis on this backend")
        return memory.temp_size_in_bytes

    one_chunk = 8 * 2048 * 4  # one chunk's tanh activations
    chunked, whole = temp_bytes(1), temp_bytes(8)
    assert whole >= 8 * one_chunk, whole
    assert chunked <= 3 * one_chunk, (chunked, one_chunk)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the XLA:CPU convolution forms")
def test_chunked_convolution_gradients_use_the_plain_kernel_layout(cnn):
    """On CPU the scan over chunks has its input-gradient convolutions' kernels laid out
    explicitly (lipxai._core.xla_cpu), so XLA:CPU runs them with its library kernel."""
    fn, x, t = cnn
    x, t = x[:4], t[:4]
    f = jax.jit(lambda x: ex.integrated_gradients(fn, x, t, steps=4, batch_size=1))
    hlo = f.lower(x).compile().as_text()
    assert "while" in hlo
    assert "01oi->" not in hlo


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="a CPU rewrite")
def test_wide_convolutions_are_padded_for_the_threaded_cpu_kernel():
    """Saliency and the chunked methods pad the convolutions XLA:CPU would give to YNNPACK
    (lipxai._core.xla_cpu.threaded_conv_kernels); the values are those of plain JAX."""
    w = jax.random.normal(jax.random.key(0), (3, 3, 1, 20)) / 3
    dense = jax.random.normal(jax.random.key(1), (12 * 12 * 20, 3)) / 50
    fn = lambda z: jnp.tanh(jax.lax.conv_general_dilated(
        z, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))).reshape(
        z.shape[0], -1) @ dense
    x, t = jax.random.normal(jax.random.key(2), (3, 12, 12, 1)), jnp.array([0, 1, 2])
    for method in (lambda x: ex.saliency(fn, x, t),
                   lambda x: ex.integrated_gradients(fn, x, t, steps=4, batch_size=2)):
        assert "padding=((1, 2), (1, 1))" in str(jax.make_jaxpr(method)(x))
    want = jax.vmap(jax.grad(lambda xi, ti: fn(xi[None])[0, ti]))(x, t)
    close(ex.saliency(fn, x, t), want, rtol=1e-4, atol=1e-6)


def test_jit_with_cpu_compiler_options(cnn, monkeypatch):
    from lipxai._core import xla_cpu

    fn, x, t = cnn
    x, t = x[:2], t[:2]
    f = lambda x: ex.smoothgrad(fn, x, t, key=jax.random.key(0), samples=3, batch_size=2)
    close(ex.jit(f)(x), jax.jit(f)(x), rtol=1e-4, atol=1e-6)
    if jax.default_backend() == "cpu":
        assert ex.compiler_options() == ex.CPU_COMPILER_OPTIONS  # known to this XLA
    monkeypatch.setattr(xla_cpu, "CPU_COMPILER_OPTIONS", {"xla_cpu_no_such_option": ""})
    assert ex.compiler_options() == {}  # unknown options are dropped, not errors
    close(ex.jit(lambda x: x + 1)(x), x + 1)


# ------------------------------------------------------------------ bad inputs


def _all_methods():
    key = jax.random.key(0)
    return {
        "saliency": ex.saliency,
        "gradient_x_input": ex.gradient_x_input,
        "ig": lambda *a, **k: ex.integrated_gradients(*a, steps=3, **k),
        "idgi": lambda *a, **k: ex.idgi(*a, steps=3, **k),
        "smoothgrad": lambda *a, **k: ex.smoothgrad(*a, key=key, samples=2, **k),
        "vargrad": lambda *a, **k: ex.vargrad(*a, key=key, samples=2, **k),
        "squaregrad": lambda *a, **k: ex.squaregrad(*a, key=key, samples=2, **k),
    }


@pytest.mark.parametrize("name", list(_all_methods()))
def test_bad_inputs_every_method(linear, name):
    fn, _, x, t = linear
    method = _all_methods()[name]
    with pytest.raises(ValueError, match=r"target must lie in \[0, 3\)"):
        method(fn, x, jnp.array([0, 1, 3, 0], jnp.int32))
    with pytest.raises(ValueError, match=r"target must lie"):
        method(fn, x, jnp.array([0, -1, 2, 0], jnp.int32))
    with pytest.raises(ValueError, match=r"target must have shape \(4,\)"):
        method(fn, x, jnp.array([0, 1], jnp.int32))
    with pytest.raises(TypeError, match="target must be an integer"):
        method(fn, x, jnp.zeros(4))
    with pytest.raises(TypeError, match="x must be a floating-point"):
        method(fn, jnp.ones((4, 3, 4), jnp.int32), t)
    with pytest.raises(ValueError, match="x must have rank >= 2"):
        method(lambda z: z[None], jnp.ones(3), jnp.array([0], jnp.int32))
    with pytest.raises(ValueError, match="fn must map x"):
        method(lambda z: z.reshape(z.shape[0], -1)[:, :, None], x, t)


def test_bad_options(linear):
    fn, _, x, t = linear
    with pytest.raises(ValueError, match="steps must be an integer >= 2"):
        ex.integrated_gradients(fn, x, t, steps=1)
    with pytest.raises(ValueError, match="steps must be an integer >= 2"):
        ex.idgi(fn, x, t, steps=1)
    with pytest.raises(ValueError, match="method must be one of"):
        ex.integrated_gradients(fn, x, t, method="simpson")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        ex.integrated_gradients(fn, x, t, batch_size=0)
    with pytest.raises(ValueError, match="baseline must be one of"):
        ex.integrated_gradients(fn, x, t, baseline="black")
    with pytest.raises(ValueError, match="baseline must be broadcastable"):
        ex.integrated_gradients(fn, x, t, baseline=jnp.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="key must be"):
        ex.integrated_gradients(fn, x, t, baseline="uniform")
    with pytest.raises(ValueError, match="spatial axes"):
        ex.integrated_gradients(fn, x.reshape(4, 12), t, baseline="blur")
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="samples must be an integer >= 1"):
        ex.smoothgrad(fn, x, t, key=key, samples=0)
    with pytest.raises(ValueError, match="noise must be a finite number >= 0"):
        ex.smoothgrad(fn, x, t, key=key, noise=-0.1)
    with pytest.raises(ValueError, match="key must be"):
        ex.vargrad(fn, x, t)
    with pytest.raises(ValueError, match="noise_samples must have shape"):
        ex.squaregrad(fn, x, t, noise_samples=jnp.zeros((2, 4, 3)))
