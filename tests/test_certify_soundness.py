"""Certificates against attacks: no L2 attack inside 0.99x the certified radius flips a prediction."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lipxai as lx

CLASSES, DIM = 3, 16


def blobs(key, n):
    """Three Gaussian blobs in R^16 (a toy problem the test trains on; not a dataset stand-in)."""
    k1, k2 = jax.random.split(key)
    centers = 1.5 * jnp.eye(CLASSES, DIM)
    labels = jax.random.randint(k1, (n,), 0, CLASSES)
    return centers[labels] + 0.5 * jax.random.normal(k2, (n, DIM)), labels


@pytest.fixture(scope="module")
def trained():
    model = lx.nn.zoo.mlp(CLASSES, hidden=(32, 32), method="bjorck")
    x, y = blobs(jax.random.PRNGKey(0), 512)
    variables = model.init(jax.random.PRNGKey(1), x)
    opt = optax.adam(1e-2)
    opt_state = opt.init(variables["params"])

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(
            lambda p: lx.losses.multiclass_hkr(model.apply({"params": p}, x), y, alpha=0.9, min_margin=0.5)
        )(params)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    params = variables["params"]
    for _ in range(300):
        params, opt_state, _ = step(params, opt_state)
    variables = {"params": params}
    lipschitz = float(lx.certify.lipschitz_upper_bound(model, variables, (1, DIM)))
    return model, variables, lipschitz


@functools.partial(jax.jit, static_argnums=(0, 6))
def pgd_l2(fn, x, label, target, eps, key, steps=100):
    """Targeted L2 PGD: maximise logit[target] - logit[label] inside ||delta|| <= eps."""
    def project(d):
        norm = jnp.linalg.norm(d, axis=-1, keepdims=True)
        return d * jnp.minimum(1.0, eps[:, None] / jnp.maximum(norm, 1e-12))

    def objective(d):
        z = fn(x + d)
        return jnp.sum(jnp.take_along_axis(z, target[:, None], 1) - jnp.take_along_axis(z, label[:, None], 1))

    def body(_, d):
        g = jax.grad(objective)(d)
        g = g / jnp.maximum(jnp.linalg.norm(g, axis=-1, keepdims=True), 1e-12)
        return project(d + 0.05 * eps[:, None] * g)

    d0 = project(jax.random.normal(key, x.shape) * eps[:, None])
    d = jax.lax.fori_loop(0, steps, body, d0)
    return jnp.argmax(fn(x + d), -1)


def attack_flips(model, variables, x, eps, key):
    fn = functools.partial(model.apply, variables)
    pred = jnp.argmax(fn(x), -1)
    flipped = jnp.zeros(x.shape[0], bool)
    for shift in range(1, CLASSES):
        key, sub = jax.random.split(key)
        flipped |= pgd_l2(fn, x, pred, (pred + shift) % CLASSES, eps, sub) != pred
    return np.asarray(flipped)


def test_trained_model_is_1_lipschitz_and_accurate(trained):
    model, variables, lipschitz = trained
    x, y = blobs(jax.random.PRNGKey(7), 256)
    assert lipschitz <= 1 + 1e-4
    assert float(jnp.mean(jnp.argmax(model.apply(variables, x), -1) == y)) >= 0.9


@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1))
def test_pgd_inside_certified_radius_never_flips(trained, seed):
    model, variables, lipschitz = trained
    x, _ = blobs(jax.random.PRNGKey(seed), 32)
    r = lx.certify.radius(model.apply(variables, x), lipschitz=lipschitz)
    flips = attack_flips(model, variables, x, 0.99 * r, jax.random.PRNGKey(seed + 1))
    assert not flips.any(), f"attack flipped {flips.sum()} certified predictions at 0.99 r"


def test_attack_is_strong_enough_to_flip_beyond_the_radius(trained):
    """The same attack does flip predictions at a few times the radius: it is not toothless."""
    model, variables, lipschitz = trained
    x, _ = blobs(jax.random.PRNGKey(3), 64)
    r = lx.certify.radius(model.apply(variables, x), lipschitz=lipschitz)
    flips = attack_flips(model, variables, x, 3.0 * r, jax.random.PRNGKey(4))
    assert flips.mean() >= 0.5
