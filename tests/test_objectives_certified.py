"""Tests of the certified-explanation objective term (Wicker et al., ICLR 2023): its gradient
bounds contain the true input gradient at sampled, corner and adversarial points of the input
and parameter boxes, equal ``jax.grad`` at zero radius, follow the ramp, and the term equals
α · mean width and κ · worst-case CE computed by hand from ``lipxai.bounds``."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lipxai as lx
from _fast_compile import fast_jit
from lipxai.train.objectives.base import Context
from lipxai.train.objectives.certified import (
    certified_explanation,
    explanation_bounds,
    worst_case_logits,
)

BATCH, CLASSES, EPS, GAMMA = 4, 3, 0.05, 0.02


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = x.reshape(x.shape[0], -1)
        h = nn.relu(nn.Dense(16)(h))
        h = nn.relu(nn.Dense(16)(h))
        return nn.Dense(CLASSES)(h)


class CNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(4, (3, 3))(x))
        h = nn.relu(nn.Conv(4, (3, 3), strides=2)(h))
        return nn.Dense(CLASSES)(h.reshape(h.shape[0], -1))


MODELS = {"mlp": (MLP(), (BATCH, 12)), "cnn": (CNN(), (BATCH, 8, 8, 1))}


@functools.cache
def _setup(name):
    """``(apply, variables, x, y)``: the model, a batch in [0, 1] whose first example is all
    zeros (on the domain's edge: its box is clipped) and labels, built once per model."""
    module, shape = MODELS[name]
    x = np.random.default_rng(0).uniform(size=shape).astype(np.float32)
    x[0] = 0.0
    variables = fast_jit(module.init)(jax.random.key(1), x)
    return module.apply, variables, jnp.asarray(x), jnp.arange(BATCH, dtype=jnp.int32) % CLASSES


def _context(apply, variables, x, y, progress=1.0, domain=(0.0, 1.0)):
    logits = apply(variables, x)
    return Context(apply=apply, variables=variables, x=x, y=y, key=None,
                   progress=jnp.float32(progress), logits=logits,
                   task_loss=lambda z, t: optax.softmax_cross_entropy_with_integer_labels(z, t).mean(),
                   domain=domain)


def _true_gradient(apply, target):
    """``grad_x score`` per example at inputs ``x`` and parameters ``params``."""
    def score(params, x, y):
        logits = apply({"params": params}, x)
        if target == "logit":
            per_example = jnp.take_along_axis(logits, y[:, None], 1)[:, 0]
        else:
            per_example = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return jnp.sum(per_example)  # examples do not interact: the per-example gradients

    return jax.grad(score, argnums=1)


def _compiled(term, apply, x, y):
    """``(variables, progress) -> term.fn(context)`` on this batch, compiled once."""
    return fast_jit(lambda v, p: term.fn(_context(apply, v, x, y, p)))


def _term_value(term, apply, variables, x, y, progress=1.0):
    return _compiled(term, apply, x, y)(variables, jnp.float32(progress))


def _outside(grad, bounds):
    """How far (>= 0) a gradient lies outside the bounds, beyond float rounding."""
    tol = 1e-6 + 1e-5 * jnp.abs(grad)
    return jnp.max(jnp.maximum(bounds.lower - tol - grad, grad - bounds.upper - tol))


@pytest.mark.parametrize("name, target, boxes", [
    ("mlp", "loss", "input"), ("mlp", "loss", "input+params"), ("mlp", "logit", "input"),
    ("mlp", "logit", "input+params"), ("cnn", "loss", "input+params"), ("cnn", "logit", "input"),
])
def test_bounds_contain_the_true_gradient(name, target, boxes):
    """Sampled points, corners, and points found by sign-gradient ascent/descent on the gradient
    itself (inside the boxes) all have their true gradient inside [L, U]."""
    apply, variables, x, y = _setup(name)
    gamma = GAMMA if boxes == "input+params" else None
    bounds = fast_jit(lambda v: explanation_bounds(_context(apply, v, x, y), EPS, gamma,
                                                  target=target))(variables)
    lo_x, hi_x = jnp.clip(x - EPS, 0, 1), jnp.clip(x + EPS, 0, 1)
    grad = _true_gradient(apply, target)
    direction = jnp.sign(jax.random.normal(jax.random.key(7), x.shape))
    # ascent (+1) / descent (-1) on a random signed sum of the gradient's entries
    push = jax.grad(lambda xs, p, sign: sign * jnp.sum(direction * grad(p, xs, y)))

    def params_at(params, key):
        if gamma is None:
            return params
        leaves, tree = jax.tree_util.tree_flatten(params)
        keys = jax.random.split(key, len(leaves))
        return jax.tree_util.tree_unflatten(tree, [
            w * (1 + gamma * jax.random.uniform(k, w.shape, minval=-1, maxval=1))
            for k, w in zip(keys, leaves, strict=True)])

    @fast_jit
    def violations(params, key):
        """How far outside [L, U] the gradient gets at sampled points, random corners, the
        two extreme corners, and after each step of the attacks; and how far they moved."""
        def sampled(key):
            k1, k2, k3 = jax.random.split(key, 3)
            corner = jnp.where(jax.random.bernoulli(k1, 0.5, x.shape), hi_x, lo_x)
            inside = jax.random.uniform(k2, x.shape, minval=lo_x, maxval=hi_x)
            p = params_at(params, k3)
            return jnp.maximum(_outside(grad(p, corner, y), bounds),
                               _outside(grad(p, inside, y), bounds))

        worst = [jnp.max(jax.lax.map(sampled, jax.random.split(key, 16))),
                 _outside(grad(params, lo_x, y), bounds), _outside(grad(params, hi_x, y), bounds)]
        p = params_at(params, jax.random.fold_in(key, 1))

        def attack(sign):
            def step(_, carry):
                xs, far = carry
                xs = jnp.clip(xs + 0.5 * EPS * jnp.sign(push(xs, p, sign)), lo_x, hi_x)
                return xs, jnp.maximum(far, _outside(grad(p, xs, y), bounds))

            xs, far = jax.lax.fori_loop(0, 5, step, (x, -jnp.inf))
            return far, jnp.max(jnp.abs(xs - x))

        far, moved = jax.vmap(attack)(jnp.array([1.0, -1.0]))
        return jnp.max(jnp.stack(worst + [jnp.max(far)])), jnp.max(moved)

    worst, moved = violations(variables["params"], jax.random.key(100))
    assert float(worst) <= 0.0
    if target == "loss":  # the softmax makes the loss gradient move: the attack was not idle
        assert float(moved) > 0


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("target", ["loss", "logit"])
def test_zero_radius_bounds_are_jax_grad(name, target):
    apply, variables, x, y = _setup(name)
    want = fast_jit(_true_gradient(apply, target))(variables["params"], x, y)
    radii = ((0.0, None), (None, 0.0), (0.0, 0.0))  # input box, parameter box, both
    every = fast_jit(lambda v: [explanation_bounds(_context(apply, v, x, y), eps, gamma,
                                                   target=target) for eps, gamma in radii])
    for b in every(variables):
        np.testing.assert_allclose(b.lower, want, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(b.upper, want, rtol=1e-6, atol=1e-6)
    value, aux = _term_value(certified_explanation(1.0, 0.0, target=target), apply, variables, x, y)
    assert float(value) <= 1e-6 and float(aux["width"]) <= 1e-6


def test_ramp_starts_at_zero_and_reaches_the_full_radius():
    apply, variables, x, y = _setup("cnn")
    ramped = _compiled(certified_explanation(1.0, EPS, gamma=GAMMA, ramp_fraction=0.5), apply,
                       x, y)
    full_value, full = _term_value(certified_explanation(1.0, EPS, gamma=GAMMA), apply,
                                   variables, x, y, progress=0.1)
    assert float(full["width"]) > 1e-3
    _, start = ramped(variables, jnp.float32(0.0))
    assert float(start["width"]) <= 1e-6 and float(start["eps"]) == 0 and float(start["gamma"]) == 0
    _, half = ramped(variables, jnp.float32(0.25))
    np.testing.assert_allclose([half["eps"], half["gamma"]], [EPS / 2, GAMMA / 2], rtol=1e-6)
    assert 1e-6 < float(half["width"]) < float(full["width"])
    for progress in (0.5, 0.9):
        value, end = ramped(variables, jnp.float32(progress))
        np.testing.assert_allclose([end["eps"], end["gamma"]], [EPS, GAMMA], rtol=1e-6)
        np.testing.assert_allclose(value, full_value, rtol=1e-6)


@pytest.mark.parametrize("target", ["loss", "logit"])
def test_value_is_alpha_times_the_mean_width_from_lipxai_bounds(target):
    apply, variables, x, y = _setup("mlp")
    alpha = 0.7
    value, aux = _term_value(certified_explanation(alpha, EPS, gamma=GAMMA, target=target),
                             apply, variables, x, y)
    score = "cross_entropy" if target == "loss" else "logit"
    by_hand = fast_jit(lambda params: lx.bounds.gradient_bounds(
        lambda p, xs: apply({"params": p}, xs), x, y, eps=EPS, params=params,
        params_box=lx.bounds.params_box(params, relative=GAMMA), loss=score,
        domain=(0.0, 1.0)))(variables["params"])
    width = float(jnp.mean(by_hand.upper - by_hand.lower))
    np.testing.assert_allclose(aux["width"], width, rtol=1e-5)
    np.testing.assert_allclose(value, alpha * width, rtol=1e-5)
    assert set(aux) == {"width", "eps", "gamma"}  # no worst-case CE without kappa
    assert value.dtype == jnp.float32 and value.shape == ()


def test_kappa_adds_the_cross_entropy_of_the_worst_case_logits():
    apply, variables, x, y = _setup("cnn")
    kappa = 0.3
    value, aux = _term_value(certified_explanation(0.0, EPS, kappa=kappa), apply, variables, x, y)
    box = lx.bounds.Interval(jnp.clip(x - EPS, 0, 1), jnp.clip(x + EPS, 0, 1))
    logits = fast_jit(lx.bounds.interval(lambda xs: apply(variables, xs)))(box)
    onehot = np.eye(CLASSES, dtype=bool)[np.asarray(y)]
    worst = np.where(onehot, logits.lower, logits.upper)  # the true class low, the others high
    z = worst - worst.max(1, keepdims=True)
    ce = float(np.mean(np.log(np.exp(z).sum(1)) - z[onehot]))
    assert ce > float(optax.softmax_cross_entropy_with_integer_labels(apply(variables, x), y).mean())
    np.testing.assert_allclose(aux["worst_case_ce"], ce, rtol=1e-5)
    np.testing.assert_allclose(value, kappa * ce, rtol=1e-5)
    np.testing.assert_array_equal(worst_case_logits(logits, y), worst)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_gradient_in_the_parameters_is_finite_and_nonzero(name):
    apply, variables, x, y = _setup(name)
    term = certified_explanation(1.0, EPS, gamma=GAMMA, kappa=0.5)
    grads = fast_jit(jax.grad(lambda p: term.fn(_context(apply, {"params": p}, x, y))[0]))(
        variables["params"])
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in leaves)


def test_training_on_the_term_lowers_the_width():
    apply, variables, x, y = _setup("mlp")
    term = certified_explanation(1.0, EPS)
    opt = optax.adam(1e-2)

    @jax.jit
    def step(params, state):
        (_, aux), grads = jax.value_and_grad(
            lambda p: term.fn(_context(apply, {"params": p}, x, y)), has_aux=True)(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, aux["width"]

    params = variables["params"]
    state = opt.init(params)
    widths = []
    for _ in range(15):
        params, state, width = step(params, state)
        widths.append(float(width))
    assert widths[-1] < 0.7 * widths[0]


def test_symbolic_bounds_are_sound_and_the_term_uses_them():
    apply, variables, x, y = _setup("mlp")
    term = certified_explanation(2.0, EPS, method="symbolic")
    symbolic, (value, _) = fast_jit(lambda v: (
        explanation_bounds(_context(apply, v, x, y), EPS, target="loss", method="symbolic"),
        term.fn(_context(apply, v, x, y))))(variables)
    np.testing.assert_allclose(value, 2.0 * jnp.mean(symbolic.upper - symbolic.lower), rtol=1e-5)
    grad = fast_jit(_true_gradient(apply, "loss"))
    lo_x, hi_x = jnp.clip(x - EPS, 0, 1), jnp.clip(x + EPS, 0, 1)
    points = jax.random.uniform(jax.random.key(0), (8,) + x.shape, minval=lo_x, maxval=hi_x)
    grads = jax.vmap(grad, in_axes=(None, 0, None))(variables["params"], points, y)
    assert float(_outside(grads, symbolic)) <= 0


def test_term_metadata():
    term = certified_explanation(0.5, 0.1)
    assert term.name == "certified_explanation" and term.needs_key is False


@pytest.mark.parametrize("kwargs, key", [
    (dict(alpha=-1.0, eps=0.1), "alpha"),
    (dict(alpha=math.nan, eps=0.1), "alpha"),
    (dict(alpha=1.0, eps=-0.1), "eps"),
    (dict(alpha=1.0, eps=math.inf), "eps"),
    (dict(alpha=1.0, eps=0.1, gamma=-0.01), "gamma"),
    (dict(alpha=1.0, eps=0.1, gamma=math.nan), "gamma"),
    (dict(alpha=1.0, eps=0.1, kappa=-1.0), "kappa"),
    (dict(alpha=1.0, eps=0.1, kappa=math.inf), "kappa"),
    (dict(alpha=1.0, eps=0.1, ramp_fraction=1.5), "ramp_fraction"),
    (dict(alpha=1.0, eps=0.1, target="saliency"), "target"),
    (dict(alpha=1.0, eps=0.1, method="crown"), "method"),
    (dict(alpha=1.0, eps=0.1, gamma=0.01, method="symbolic"), "gamma"),
])
def test_bad_hyperparameters_name_the_argument(kwargs, key):
    with pytest.raises(ValueError, match=key):
        certified_explanation(**kwargs)
