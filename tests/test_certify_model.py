"""Whole-model Lipschitz bounds: the upper bound is above every attained value, and tight for lipxai models."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lipxai as lx

KEY = jax.random.PRNGKey(0)


def max_jacobian_norm(fn, x):
    """Largest per-example Jacobian spectral norm of a batched fn (exact, float64 SVD); the
    Jacobians in one compiled program (op by op, each primitive would compile on its own)."""
    jacobians = jax.jit(jax.vmap(jax.jacobian(lambda xi: fn(xi[None])[0])))(x)
    return max(np.linalg.svd(np.asarray(jac, np.float64).reshape(-1, x[0].size), compute_uv=False)[0]
               for jac in jacobians)


MODELS = [
    ("cnn-aol", lambda: lx.nn.zoo.cnn(4, channels=(4, 8), dense=(8,)), (3, 8, 8, 1)),
    ("cnn-cayley", lambda: lx.nn.zoo.cnn(4, channels=(4, 8), dense=(8,), conv_method="cayley"), (3, 8, 8, 1)),
    # 2x2 stride-2 convolution: the stride-1 bound alone would give 2
    ("cnn-patch", lambda: lx.nn.zoo.cnn(4, channels=(4, 8), dense=(8,), downsample="patch"), (3, 8, 8, 1)),
    ("mlp-spectral", lambda: lx.nn.zoo.mlp(4, hidden=(16,), method="spectral"), (3, 4, 4, 1)),
    ("liresnet", lambda: lx.nn.zoo.liresnet(4, width=4, depth=2, head=8, pool=2), (3, 8, 8, 2)),
]


@pytest.mark.parametrize("name,make,shape", MODELS, ids=[m[0] for m in MODELS])
def test_upper_bound_is_at_most_one_and_above_attained_values(name, make, shape):
    model = make()
    x = jax.random.uniform(jax.random.PRNGKey(1), shape)
    variables = model.init(KEY, x)
    upper = float(lx.certify.lipschitz_upper_bound(model, variables, (1, *shape[1:])))
    fn = lambda z: model.apply(variables, z)
    assert upper <= 1 + 1e-4
    assert max_jacobian_norm(fn, x) <= upper + 1e-5
    report = lx.certify.lipschitz_report(model, variables, x, key=KEY, steps=3, power_iters=5)
    assert report["lipschitz_lower"] <= report["lipschitz_upper"] + 1e-5


def test_orthogonal_model_upper_bound_is_exactly_one():
    model = nn.Sequential([lx.nn.OrthoDense(8, method="cayley"), lx.nn.GroupSort(2),
                           lx.nn.OrthoDense(8, method="cayley")])
    x = jnp.ones((1, 8))
    variables = model.init(KEY, x)
    np.testing.assert_allclose(lx.certify.lipschitz_upper_bound(model, variables, x.shape), 1.0, atol=1e-5)
    lower = lx.certify.lipschitz_lower_bound(lambda z: model.apply(variables, z), x, key=KEY)
    np.testing.assert_allclose(lower, 1.0, atol=1e-4)


def test_plain_flax_model_bound_is_sound():
    model = nn.Sequential([nn.Conv(4, (3, 3), strides=2), jax.nn.relu, lx.nn.Flatten(), nn.Dense(5),
                           jnp.tanh, nn.Dense(3)])
    x = jax.random.normal(jax.random.PRNGKey(2), (4, 6, 6, 2))
    variables = model.init(KEY, x)
    upper = float(lx.certify.lipschitz_upper_bound(model, variables, (1, 6, 6, 2)))
    attained = max_jacobian_norm(lambda z: model.apply(variables, z), x)
    assert attained <= upper + 1e-5
    assert upper > 1.0  # unconstrained weights: the bound is not trivially 1


@pytest.mark.parametrize("seed", range(5))
def test_sll_scaling_dominates_the_gram_matrix_for_any_weights(seed):
    """SLL's T makes ||T^{-1/2} W^T|| <= 1 for any kernel and any q (Araujo et al. 2023, Thm 3)."""
    from lipxai.nn.reparam import conv_gram_abs_rowsum
    from lipxai.nn.residual import sll_scale

    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(seed), 4)
    kernel = 3.0 * jax.random.normal(k1, (6, 9))
    t = sll_scale(jnp.abs(kernel.T @ kernel), 2.0 * jax.random.normal(k2, (9,)))
    assert float(lx.certify.dense_operator_norm(kernel / jnp.sqrt(t))) <= 1 + 1e-5
    conv = jax.random.normal(k3, (3, 3, 4, 5))
    t = sll_scale(conv_gram_abs_rowsum(conv.swapaxes(2, 3)), 2.0 * jax.random.normal(k4, (5,)))
    assert float(lx.certify.conv_operator_norm(conv / jnp.sqrt(t), (7, 7), padding="CIRCULAR")) <= 1 + 1e-5


def test_unknown_layer_is_rejected_by_name():
    model = nn.Sequential([nn.Dense(3), jax.nn.gelu])
    x = jnp.ones((1, 4))
    with pytest.raises(TypeError, match="gelu"):
        lx.certify.lipschitz_upper_bound(model, model.init(KEY, x), x.shape)
