"""Operator-norm tests: every layer's full Jacobian, not its kernel, is checked with numpy SVD."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lipxai.nn as lnn

KEY = jax.random.PRNGKey(0)
TOL = 1e-4


def jacobian_singular_values(module, variables, x):
    """Singular values of d module(x[0]) / d x[0] (float64 SVD)."""
    def single(xi):
        return module.apply(variables, xi[None])[0].ravel()

    jac = jax.jacobian(single)(x[0]).reshape(-1, x[0].size)
    return np.linalg.svd(np.asarray(jac, np.float64), compute_uv=False)


def scaled(variables, factor=5.0):
    return {**variables, "params": jax.tree_util.tree_map(lambda a: factor * a, variables["params"])}


def adversarial_steps(module, variables, x, steps=5, lr=0.05):
    """Adam steps that maximise ||module(x)||^2, updating the mutable state as in training."""
    params = variables["params"]
    state = {k: v for k, v in variables.items() if k != "params"}
    opt = optax.adam(lr)
    opt_state = opt.init(params)

    def loss(p, state):
        out, new_state = module.apply({"params": p, **state}, x, mutable=list(state))
        return -jnp.sum(out ** 2), new_state

    for _ in range(steps):
        (_, state), grads = jax.value_and_grad(loss, has_aux=True)(params, state)
        updates, opt_state = opt.update(grads, opt_state)
        params = optax.apply_updates(params, updates)
        state = dict(state)
    return {"params": params, **state}


def weight_variants(module, x):
    variables = module.init(KEY, x)
    yield "init", variables
    if variables.get("params"):
        yield "x5", scaled(variables)
        yield "adam", adversarial_steps(module, variables, x)


DENSE_SHAPES = {"square": (12, 12), "wide": (8, 20), "tall": (16, 5)}
CONV_CHANNELS = [(3, 3), (2, 5), (4, 2)]
# Cayley convs are the slowest to differentiate (FFT + complex solves): four cases still cover
# both strides, both paddings, and equal, widening and narrowing channels.
CAYLEY_CONV_CASES = {(1, 3, 3, "SAME"), (1, 2, 5, "CIRCULAR"), (2, 4, 2, "SAME"), (2, 3, 3, "CIRCULAR")}

LAYERS = (
    [(f"dense-{m}-{k}", lambda m=m, o=o: lnn.OrthoDense(o, method=m), (2, i))
     for m in lnn.DENSE_METHODS for k, (i, o) in DENSE_SHAPES.items()]
    + [(f"conv-{m}-s{s}-{ci}to{co}-{p}", lambda m=m, s=s, co=co, p=p: lnn.OrthoConv(co, 3, strides=s, padding=p, method=m),
        (2, 6, 6, ci))
       for m in lnn.CONV_METHODS for s in (1, 2) for ci, co in CONV_CHANNELS
       for p in (("SAME", "CIRCULAR") if m == "cayley" else ("SAME", "VALID", "CIRCULAR"))
       if m != "cayley" or (s, ci, co, p) in CAYLEY_CONV_CASES]
    + [
        ("sll-dense", lambda: lnn.SLLDense(7), (2, 6)),
        ("sll-conv", lambda: lnn.SLLConv(5), (2, 5, 5, 3)),
        ("groupsort3", lambda: lnn.GroupSort(3), (2, 9)),
        ("maxmin", lambda: lnn.MaxMin(), (2, 5)),
        ("fullsort", lambda: lnn.FullSort(), (2, 6)),
        ("householder", lambda: lnn.Householder(), (2, 6)),
        ("l2pool", lambda: lnn.L2NormPool(2), (2, 6, 6, 2)),
        ("l2pool-overlap", lambda: lnn.L2NormPool(3, 1), (2, 6, 6, 2)),
        ("global-l2pool", lambda: lnn.GlobalL2NormPool(), (2, 4, 4, 3)),
        ("downsample", lambda: lnn.InvertibleDownsample(2), (2, 4, 4, 2)),
        ("layer-centering", lambda: lnn.LayerCentering(), (2, 4, 4, 2)),
        ("mlp", lambda: lnn.zoo.mlp(4, hidden=(16, 8)), (2, 4, 4, 1)),
        ("cnn", lambda: lnn.zoo.cnn(3, channels=(4, 4), dense=(8,)), (2, 8, 8, 1)),
        ("cnn-patch", lambda: lnn.zoo.cnn(3, channels=(4, 8), dense=(8,), downsample="patch"), (2, 8, 8, 1)),
        ("liresnet", lambda: lnn.zoo.liresnet(3, width=4, depth=2, head=8, pool=2), (2, 4, 4, 2)),
    ]
)


@pytest.mark.parametrize("name,make,shape", LAYERS, ids=[n for n, _, _ in LAYERS])
def test_full_jacobian_is_1_lipschitz(name, make, shape):
    module = make()
    x = jax.random.normal(jax.random.PRNGKey(1), shape)
    for variant, variables in weight_variants(module, x):
        s_max = jacobian_singular_values(module, variables, x).max()
        assert s_max <= 1 + TOL, f"{name} ({variant}): largest singular value {s_max}"


ORTHOGONAL = [
    ("dense-bjorck", lambda: lnn.OrthoDense(12, method="bjorck"), (2, 12)),
    ("dense-cayley", lambda: lnn.OrthoDense(12, method="cayley"), (2, 12)),
    ("dense-bjorck-wide", lambda: lnn.OrthoDense(20, method="bjorck"), (2, 8)),
    ("dense-cayley-wide", lambda: lnn.OrthoDense(20, method="cayley"), (2, 8)),
    ("conv-cayley", lambda: lnn.OrthoConv(3, 3, padding="CIRCULAR", method="cayley"), (2, 6, 6, 3)),
    ("conv-cayley-stride2", lambda: lnn.OrthoConv(8, 3, strides=2, padding="CIRCULAR", method="cayley"), (2, 6, 6, 2)),
    ("conv-cayley-5x5-widen", lambda: lnn.OrthoConv(6, 5, padding="CIRCULAR", method="cayley"), (2, 6, 6, 3)),
    ("groupsort", lambda: lnn.GroupSort(2), (2, 8)),
    ("maxmin", lambda: lnn.MaxMin(), (2, 5)),
    ("householder", lambda: lnn.Householder(), (2, 6)),
    ("l2pool", lambda: lnn.L2NormPool(2), (2, 6, 6, 2)),
    ("downsample", lambda: lnn.InvertibleDownsample(2), (2, 4, 4, 2)),
    ("conv-rko-patch", lambda: lnn.OrthoConv(8, 2, strides=2, padding="VALID", method="rko"), (2, 4, 4, 2)),
    ("conv-rko-patch-narrow", lambda: lnn.OrthoConv(6, 2, strides=2, padding="VALID", method="rko"), (2, 4, 4, 2)),
]


@pytest.mark.parametrize("name,make,shape", ORTHOGONAL, ids=[n for n, _, _ in ORTHOGONAL])
def test_orthogonal_layers_preserve_gradient_norm(name, make, shape):
    """Smallest singular value of the Jacobian (as a map onto its range) within 1e-3 of 1."""
    module = make()
    x = jax.random.normal(jax.random.PRNGKey(2), shape)
    for variant, variables in weight_variants(module, x):
        s = jacobian_singular_values(module, variables, x)
        rank = min(x[0].size, module.apply(variables, x[:1]).size)
        s = np.sort(s)[::-1][:rank]
        assert abs(s.min() - 1) <= 1e-3 and abs(s.max() - 1) <= 1e-3, f"{name} ({variant}): {s.min()}..{s.max()}"


def apply_layers(layers, params, h, start=0, stop=None):
    """Apply ``layers[start:stop]`` of a ``Sequential`` with its ``params`` (``layers_i``)."""
    for i, layer in enumerate(layers[start:stop], start=start):
        h = layer.apply({"params": params[f"layers_{i}"]} if f"layers_{i}" in params else {}, h)
    return h


@pytest.mark.parametrize("downsample,preserved", [("patch", True), ("pool", False)])
def test_patch_cnn_preserves_gradient_norms_after_the_first_block(downsample, preserved):
    """Every logit's gradient w.r.t. the first block's output has norm 1 with 2x2 stride-2
    orthogonal convolutions (and Björck dense layers), whatever the weights; a second 3x3
    convolution into twice the channels loses the part of the gradient outside its range."""
    module = lnn.zoo.cnn(5, channels=(4, 8), dense=(12,), downsample=downsample)
    x = jax.random.normal(jax.random.PRNGKey(4), (3, 8, 8, 1))
    for variant, variables in weight_variants(module, x):
        params = variables["params"]
        h = apply_layers(module.layers, params, x, stop=3)                     # [3, 4, 4, 4]
        tail = functools.partial(apply_layers, module.layers, params, start=3)
        jac = jax.vmap(jax.jacrev(lambda v, tail=tail: tail(v[None])[0]))(h)  # [3, 5, 4, 4, 4]
        norms = np.sqrt(np.asarray(jnp.sum(jac ** 2, axis=(2, 3, 4))))
        if preserved:
            np.testing.assert_allclose(norms, 1.0, atol=1e-3, err_msg=variant)
        else:
            assert norms.min() < 0.99, f"{variant}: {norms.min()}"


def test_bjorck_matches_polar_factor():
    w = jax.random.normal(KEY, (10, 6))
    u, _, vt = np.linalg.svd(np.asarray(w), full_matrices=False)
    # 50 iterations: the polar factor U V^T of a well-conditioned Gaussian matrix.
    np.testing.assert_allclose(lnn.reparam.bjorck(w, iters=50), u @ vt, atol=1e-5)


def max_min_spectral_norm_upper(w):
    """The bound written with jnp.max / jnp.minimum (whose derivatives test floats for equality)."""
    abs_w = jnp.abs(w)
    holder = jnp.sqrt(jnp.max(abs_w.sum(0)) * jnp.max(abs_w.sum(1)))
    return jnp.maximum(jnp.minimum(jnp.sqrt(jnp.sum(w * w)), holder), 1e-12)


@pytest.mark.parametrize("kind", ["tall-frobenius", "wide-frobenius", "near-identity-holder"])
def test_spectral_norm_upper_matches_the_max_min_formulation(kind):
    noise = jax.random.normal(KEY, (256, 10) if kind.startswith("tall") else (10, 256) if kind.startswith("wide")
                              else (64, 64))
    w = jnp.eye(64) + 0.01 * noise if kind.endswith("holder") else noise
    upper = lnn.reparam.spectral_norm_upper
    abs_w = np.abs(np.asarray(w))
    holder = np.sqrt(abs_w.sum(0).max() * abs_w.sum(1).max())
    assert (holder < np.linalg.norm(np.asarray(w))) == kind.endswith("holder")   # both branches covered
    assert upper(w) >= np.linalg.norm(np.asarray(w), 2) * (1 - 1e-6)
    np.testing.assert_array_equal(upper(w), max_min_spectral_norm_upper(w))
    np.testing.assert_allclose(jax.grad(upper)(w), jax.grad(max_min_spectral_norm_upper)(w), rtol=1e-6, atol=1e-9)


def test_spectral_norm_upper_gradient_tests_no_float_for_equality():
    """jnp.max's derivative divides the mask ``v == max(v)`` by its count; XLA may recompute ``v``
    with other rounding in another fusion, and on an H100 one row of a Björck kernel's gradient
    (the row of the largest row sum) came out NaN.  The bound's backward pass must not compare."""
    w = jax.random.normal(KEY, (256, 10))
    used = primitives(jax.make_jaxpr(jax.grad(lnn.reparam.spectral_norm_upper))(w).jaxpr)
    assert not used & {"eq", "reduce_max", "reduce_min", "max", "min"}, used
    assert {"eq", "reduce_max"} <= primitives(jax.make_jaxpr(jax.grad(max_min_spectral_norm_upper))(w).jaxpr)


def test_spectral_training_state_tracks_top_singular_vector():
    module = lnn.OrthoDense(6, method="spectral", power_iters=1)
    x = jax.random.normal(KEY, (3, 6))
    variables = module.init(KEY, x)
    w = jax.random.normal(jax.random.PRNGKey(5), (6, 6)) * jnp.array([3.0, 1, 1, 1, 1, 1])[:, None]
    variables = {"params": {**variables["params"], "kernel": w}, **{k: v for k, v in variables.items() if k != "params"}}
    for _ in range(30):
        _, new = module.apply(variables, x, mutable=["lipschitz_state"])
        variables = {**variables, **new}
    sigma, _ = lnn.reparam.power_iteration(w, variables["lipschitz_state"]["u"], iters=0)
    np.testing.assert_allclose(sigma, np.linalg.norm(np.asarray(w), 2), rtol=1e-4)


def test_batch_centering_training_is_a_projection_and_eval_a_shift():
    module = lnn.BatchCentering()
    x = jax.random.normal(KEY, (4, 3))
    variables = module.init(KEY, x)

    def train_fn(flat):
        out, _ = module.apply(variables, flat.reshape(4, 3), mutable=["batch_stats"])
        return out.ravel()

    s = np.linalg.svd(np.asarray(jax.jacobian(train_fn)(x.ravel())), compute_uv=False)
    assert s.max() <= 1 + TOL
    _, new = module.apply(variables, x, mutable=["batch_stats"])
    np.testing.assert_allclose(new["batch_stats"]["mean"], 0.1 * x.mean(0), atol=1e-6)
    eval_out = module.apply({**variables, **new}, x)
    np.testing.assert_allclose(eval_out, x - new["batch_stats"]["mean"], atol=1e-6)


FORBIDDEN_AT_INFERENCE = {"while", "scan", "custom_linear_solve", "lu", "triangular_solve", "svd",
                          "eigh", "cholesky", "lu_pivots_to_permutation"}


def primitives(jaxpr):
    """Names of all primitives in a jaxpr, sub-jaxprs (pjit, custom_jvp, ...) included."""
    from jax.extend.core import jaxprs_in_params

    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for sub in jaxprs_in_params(eqn.params):
            names |= primitives(sub)
    return names


def test_primitive_scan_sees_the_iterations_of_unexported_layers():
    x = jnp.ones((1, 8, 8, 1))
    module = lnn.zoo.cnn(4, channels=(4,), dense=(), conv_method="cayley")
    used = primitives(jax.make_jaxpr(module.apply)(module.init(KEY, x), x).jaxpr)
    assert used & FORBIDDEN_AT_INFERENCE


EXPORTED = [
    ("mlp-bjorck", lambda: lnn.zoo.mlp(5, hidden=(16,), method="bjorck"), (3, 4, 4, 1)),
    ("mlp-spectral", lambda: lnn.zoo.mlp(5, hidden=(16,), method="spectral"), (3, 4, 4, 1)),
    ("mlp-aol", lambda: lnn.zoo.mlp(5, hidden=(16,), method="aol"), (3, 4, 4, 1)),
    ("mlp-cayley", lambda: lnn.zoo.mlp(5, hidden=(16,), method="cayley"), (3, 4, 4, 1)),
    ("cnn-aol", lambda: lnn.zoo.cnn(4, channels=(4, 8), dense=(8,)), (3, 8, 8, 1)),
    ("cnn-rko", lambda: lnn.zoo.cnn(4, channels=(4, 8), dense=(8,), conv_method="rko"), (3, 8, 8, 1)),
    ("cnn-cayley", lambda: lnn.zoo.cnn(4, channels=(4, 8), dense=(8,), conv_method="cayley"), (3, 8, 8, 1)),
    ("cnn-patch", lambda: lnn.zoo.cnn(4, channels=(4, 8), dense=(8,), downsample="patch"), (3, 8, 8, 1)),
    ("liresnet", lambda: lnn.zoo.liresnet(4, width=4, depth=2, head=8, pool=2), (3, 8, 8, 2)),
    ("sll-dense", lambda: lnn.SLLDense(5), (3, 6)),
    ("strided-cayley", lambda: lnn.OrthoConv(8, 3, strides=2, method="cayley"), (3, 8, 8, 2)),
    ("centering", lambda: lnn.BatchCentering(), (3, 6)),
]


@pytest.mark.parametrize("name,make,shape", EXPORTED, ids=[n for n, _, _ in EXPORTED])
def test_export_same_outputs_and_no_iterations(name, make, shape):
    module = make()
    x = jax.random.normal(jax.random.PRNGKey(3), shape)
    variables = adversarial_steps(module, module.init(KEY, x), x, steps=2, lr=0.01)
    plain, plain_vars = lnn.export(module, variables, input_shape=shape)
    np.testing.assert_allclose(plain.apply(plain_vars, x), module.apply(variables, x), atol=1e-5)
    used = primitives(jax.make_jaxpr(plain.apply)(plain_vars, x).jaxpr)
    assert not used & FORBIDDEN_AT_INFERENCE, f"{name}: exported model runs {used & FORBIDDEN_AT_INFERENCE}"
    assert set(jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda a: a.dtype.kind, plain_vars))) <= {"f"}


def test_export_rejects_unknown_modules_and_cayley_without_shape():
    import flax.linen as nn

    class Custom(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(x)

    x = jnp.ones((1, 4))
    with pytest.raises(TypeError, match="Custom"):
        lnn.export(Custom(), Custom().init(KEY, x))
    conv = lnn.OrthoConv(2, 3, method="cayley")
    with pytest.raises(ValueError, match="input_shape"):
        lnn.export(conv, conv.init(KEY, jnp.ones((1, 4, 4, 2))))


@pytest.mark.parametrize("make,x,error,match", [
    (lambda: lnn.GroupSort(3), jnp.ones((2, 8)), ValueError, "divisible by group_size"),
    (lambda: lnn.Householder(), jnp.ones((2, 5)), ValueError, "even"),
    (lambda: lnn.OrthoDense(4), jnp.ones((2, 3), jnp.int32), TypeError, "floating"),
    (lambda: lnn.OrthoDense(4, method="qr"), jnp.ones((2, 3)), ValueError, "method"),
    (lambda: lnn.OrthoConv(4), jnp.ones((2, 3)), ValueError, "rank 4"),
    (lambda: lnn.OrthoConv(4, padding="FULL"), jnp.ones((1, 4, 4, 1)), ValueError, "padding"),
    (lambda: lnn.OrthoConv(4, method="cayley", padding="VALID"), jnp.ones((1, 4, 4, 1)), ValueError, "padding"),
    (lambda: lnn.OrthoConv(4, strides=2, method="cayley"), jnp.ones((1, 5, 5, 1)), ValueError, "divisible"),
    (lambda: lnn.OrthoConv(4, kernel_size=0), jnp.ones((1, 4, 4, 1)), ValueError, "kernel_size"),
    (lambda: lnn.L2NormPool(2), jnp.ones((2, 4)), ValueError, "rank 4"),
    (lambda: lnn.SLLConv(kernel_size=2), jnp.ones((1, 4, 4, 1)), ValueError, "odd"),
    (lambda: lnn.InvertibleDownsample(2), jnp.ones((1, 3, 4, 1)), ValueError, "divisible"),
])
def test_bad_inputs_raise_clear_errors(make, x, error, match):
    module = make()
    with pytest.raises(error, match=match):
        module.init(KEY, x)
