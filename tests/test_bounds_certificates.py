"""Tests of lipxai.bounds.certificates: gradient bounds for the logit and the cross-entropy,
and the explanation certificates built on them, checked against sampled points of the box."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lipxai.bounds import Interval, interval
from lipxai.bounds.certificates import certify_explanation, cross_entropy, gradient_bounds

FEATURES, CLASSES, BATCH, SAMPLES = 12, 4, 16, 500


def _mlp(seed=0):
    rng = np.random.default_rng(seed)
    sizes = ((FEATURES, 24), (24, 24), (24, CLASSES))
    ws = [jnp.asarray(rng.normal(size=s) / np.sqrt(s[0]), jnp.float32) for s in sizes]
    bs = [jnp.asarray(0.1 * rng.normal(size=s[1]), jnp.float32) for s in sizes]

    def fn(x):
        h = jax.nn.relu(x @ ws[0] + bs[0])
        h = jax.nn.relu(h @ ws[1] + bs[1])
        return h @ ws[2] + bs[2]

    x = jnp.asarray(rng.normal(size=(BATCH, FEATURES)), jnp.float32)
    return fn, x, jnp.argmax(fn(x), axis=1)


def _score(fn, loss):
    def score(xi, ti):
        logits = fn(xi[None])[0]
        if loss == "logit":
            return logits[ti]
        return optax.softmax_cross_entropy_with_integer_labels(logits, ti)

    return score


def _sampled(fn, x, target, eps, loss, seed=1):
    """Gradients and logits at SAMPLES points of each example's box: [S, B, ...]."""
    noise = jax.random.uniform(jax.random.key(seed), (SAMPLES,) + x.shape, minval=-eps,
                               maxval=eps)
    points = x[None] + noise
    grad = jax.vmap(jax.vmap(jax.grad(_score(fn, loss))), in_axes=(0, None))(points, target)
    return grad, jax.vmap(fn)(points)


def test_cross_entropy_is_optax_in_value_and_gradient():
    logits = jax.random.normal(jax.random.key(0), (5, 7)) * 3
    labels = jnp.array([0, 3, 6, 2, 2])
    onehot = jax.nn.one_hot(labels, 7)
    want = optax.softmax_cross_entropy_with_integer_labels
    np.testing.assert_allclose(cross_entropy(logits, onehot), want(logits, labels), rtol=1e-5)
    got = jax.grad(lambda z: jnp.sum(cross_entropy(z, onehot)))(logits)
    np.testing.assert_allclose(got, jax.grad(lambda z: jnp.sum(want(z, labels)))(logits),
                               rtol=1e-5, atol=1e-7)
    tangent = jax.random.normal(jax.random.key(1), logits.shape)
    np.testing.assert_allclose(jax.jvp(lambda z: cross_entropy(z, onehot), (logits,), (tangent,))[1],
                               jax.jvp(lambda z: want(z, labels), (logits,), (tangent,))[1],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss", ["logit", "cross_entropy"])
@pytest.mark.parametrize("eps", [1e-3, 3e-2])
def test_gradient_bounds_contain_sampled_gradients(loss, eps):
    fn, x, target = _mlp()
    bounds = gradient_bounds(fn, x, target, eps=eps, loss=loss)
    grads, logits = _sampled(fn, x, target, eps, loss)
    assert np.all(bounds.lower <= grads + 1e-5) and np.all(grads <= bounds.upper + 1e-5)
    assert np.all(bounds.logits.lower <= logits + 1e-5)
    assert np.all(logits <= bounds.logits.upper + 1e-5)
    np.testing.assert_allclose(bounds.gradient, grads.mean(0), atol=20 * eps)


def test_cross_entropy_gradient_bounds_use_the_exact_softmax():
    """The softmax in the cross-entropy's gradient is bounded as one call; as the separate
    ``exp / sum exp`` that ``jax.grad`` of ``log_softmax`` leaves, the bounds are far wider."""
    fn, x, target = _mlp()
    eps = 3e-2
    ours = gradient_bounds(fn, x, target, eps=eps, loss="cross_entropy")

    def optax_gradient(xs):
        loss = lambda z: jnp.sum(optax.softmax_cross_entropy_with_integer_labels(fn(z), target))
        return jax.grad(loss)(xs)

    generic = interval(optax_gradient)(Interval(x - eps, x + eps))
    ours_width = float(jnp.mean(ours.upper - ours.lower))
    generic_width = float(jnp.mean(generic.upper - generic.lower))
    assert ours_width < 0.6 * generic_width, (ours_width, generic_width)


def test_zero_width_box_gives_the_point_gradient_and_exact_certificates():
    fn, x, target = _mlp()
    for loss in ("logit", "cross_entropy"):
        bounds = gradient_bounds(fn, x, target, eps=0.0, loss=loss)
        np.testing.assert_allclose(bounds.lower, bounds.gradient, atol=1e-6)
        np.testing.assert_allclose(bounds.upper, bounds.gradient, atol=1e-6)
        cert = certify_explanation(bounds, target, k=3)
        np.testing.assert_allclose(cert["change_linf"], 0.0, atol=1e-6)
        assert np.all(cert["topk_stable"]) and np.all(cert["prediction_certified"])
        np.testing.assert_array_equal(cert["sign_stable"], bounds.gradient != 0)


@pytest.mark.parametrize("loss", ["logit", "cross_entropy"])
@pytest.mark.parametrize("eps", [2e-3, 1e-2])
def test_certificates_hold_at_sampled_points(loss, eps):
    fn, x, target = _mlp(seed=3)
    k = 3
    bounds = gradient_bounds(fn, x, target, eps=eps, loss=loss)
    sensitive = jnp.arange(FEATURES) >= FEATURES - 4
    cert = certify_explanation(bounds, target, k=k, sensitive=sensitive)
    grads, logits = _sampled(fn, x, target, eps, loss, seed=5)
    saliency, nominal = jnp.abs(grads), jnp.abs(bounds.gradient)

    change = jnp.abs(saliency - nominal[None])
    assert np.all(change.max(axis=(0, 2)) <= cert["change_linf"] + 1e-6)
    assert np.all(jnp.linalg.norm(change, axis=2).max(0) <= cert["change_l2"] + 1e-6)
    assert np.all(change.sum(2).max(0) <= cert["change_l1"] + 1e-6)

    stable = cert["sign_stable"]
    same_sign = jnp.sign(grads) == jnp.sign(bounds.gradient)[None]
    assert np.all(same_sign | ~stable[None])

    top = lambda s: jnp.sort(jax.lax.top_k(s, k)[1], axis=-1)
    same_top = jnp.all(top(saliency) == top(nominal)[None], axis=-1)  # [S, B]
    assert np.all(same_top | ~cert["topk_stable"][None])
    in_top = jax.nn.one_hot(jax.lax.top_k(saliency, k)[1], FEATURES).sum(-2) > 0  # [S, B, F]
    sensitive_in_top = jnp.any(in_top & sensitive, axis=-1)
    assert np.all(~sensitive_in_top | ~cert["sensitive_excluded"][None])
    flipped = jnp.argmax(logits, axis=-1) != target[None]
    assert np.all(~flipped | ~cert["prediction_certified"][None])
    # not vacuous: at these radii some certificates hold and some do not, and at the larger
    # one the top k of some examples does change inside the box
    assert 0 < float(stable.mean()) < 1
    assert eps > 2e-3 or np.any(cert["topk_stable"])
    assert np.any(cert["prediction_certified"])
    assert eps < 1e-2 or not np.all(same_top)


def test_certificates_by_hand():
    """One example, five features, k = 2: |gradient| 5, 4, 3, 1, 0.5 within the bounds
    below.  Feature 0 stays in the top 2 (nothing else can reach 4.9); feature 1 (at least
    3.5) can be overtaken by features 2 and 3, which may reach 3.6 and 3.55."""
    from lipxai.bounds.certificates import GradientBounds

    lower = jnp.array([[4.9, -4.5, 2.0, 0.5, -0.6]])
    upper = jnp.array([[5.1, -3.5, 3.6, 3.55, 0.4]])
    gradient = jnp.array([[5.0, -4.0, 3.0, 1.0, -0.5]])
    logits = Interval(jnp.array([[2.0, 0.5]]), jnp.array([[3.0, 1.5]]))
    bounds = GradientBounds(lower, upper, gradient, logits)
    sensitive = jnp.array([False, False, False, False, True])
    cert = certify_explanation(bounds, jnp.array([0]), k=2, sensitive=sensitive)
    assert int(cert["topk_certified"][0]) == 1 and not bool(cert["topk_stable"][0])
    np.testing.assert_array_equal(cert["sign_stable"][0], [True, True, True, True, False])
    assert bool(cert["sensitive_excluded"][0])  # |g_4| <= 0.6 < 2.0 <= |g_2|, 4.9 <= |g_0|
    assert not certify_explanation(bounds, k=4, sensitive=sensitive)["sensitive_excluded"][0]
    assert bool(cert["prediction_certified"][0])  # 2.0 > 1.5
    # saliency |g|: the worst deviations are 0.1, 0.5, 1.0 (down to 2.0), 2.55, 0.5
    np.testing.assert_allclose(cert["change_linf"], [2.55], rtol=1e-6)
    np.testing.assert_allclose(cert["change_l1"], [0.1 + 0.5 + 1.0 + 2.55 + 0.5], rtol=1e-6)
    signed = certify_explanation(bounds, k=2, explanation="gradient")
    np.testing.assert_allclose(signed["change_linf"], [2.55], rtol=1e-6)
    np.testing.assert_allclose(signed["change_l1"], [0.1 + 0.5 + 1.0 + 2.55 + 0.9], rtol=1e-6)
