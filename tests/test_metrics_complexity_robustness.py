"""lipxai.metrics complexity and robustness: known answers, invariances, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lipxai import explain as ex
from lipxai import metrics as mx
from lipxai.metrics import _common

B, H, W, C, CLASSES = 4, 8, 8, 1, 3
N = H * W * C
_rng = np.random.default_rng(1)
_W = _rng.normal(size=(N, CLASSES)).astype(np.float32)
_W1 = (0.5 * _rng.normal(size=(N, 16))).astype(np.float32)
_W2 = _rng.normal(size=(16, CLASSES)).astype(np.float32)
X = _rng.uniform(size=(B, H, W, C)).astype(np.float32)
T = np.array([0, 1, 2, 0], np.int32)
A = _rng.normal(size=(B, H, W, C)).astype(np.float32)
KEY = jax.random.key(3)
S = 5  # samples


def close(a, b, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def linear_saliency(z, t):
    """The saliency of the linear model ``z @ _W``: ``_W[:, t]``, whatever ``z``."""
    return jnp.asarray(_W.T)[t].reshape(z.shape)


def mlp(z):
    return jnp.tanh(z.reshape(z.shape[0], -1) @ _W1) @ _W2


def mlp_saliency(z, t):
    return ex.saliency(mlp, z, t)


# ---------------------------------------------------------------------------------------
# complexity
# ---------------------------------------------------------------------------------------


def _onehot_and_constant():
    onehot = np.zeros((2, H, W, C), np.float32)
    onehot[0, 3, 5, 0] = 2.5
    onehot[1, 0, 0, 0] = -0.1
    return onehot, np.full((2, H, W, C), 0.7, np.float32)


def test_gini_known_answers():
    onehot, const = _onehot_and_constant()
    close(mx.sparseness(const), np.zeros(2), atol=1e-6)
    # one-hot: (N - 1) / N, up to Quantus' 1e-7 offset
    close(mx.sparseness(onehot), np.full(2, 1 - 1 / N), rtol=1e-5)
    assert np.all(np.asarray(mx.sparseness(onehot)) > 0.98)
    g = np.asarray(mx.sparseness(A))
    assert np.all((g > 0) & (g < 1))
    # scale invariant (normalised), and |a|: the sign does not matter
    close(mx.sparseness(10.0 * A), g, rtol=1e-5)
    close(mx.sparseness(-A), g, rtol=1e-5)


def test_entropy_known_answers():
    onehot, const = _onehot_and_constant()
    close(mx.complexity(onehot), np.zeros(2), atol=1e-6)
    close(mx.complexity(const), np.full(2, math.log(N)), rtol=1e-5)
    assert np.isnan(np.asarray(mx.complexity(np.zeros((1, 4, 4, 1), np.float32)))).all()


def test_effective_complexity_known_answers():
    onehot, const = _onehot_and_constant()
    close(mx.effective_complexity(onehot), np.ones(2))
    close(mx.effective_complexity(const), np.full(2, N))
    a = np.zeros((1, 4, 4, 1), np.float32)
    a.flat[:5] = [1.0, -0.5, 0.3, 0.2, -1e-7]
    close(mx.effective_complexity(a, eps=0.25), [3.0])  # |a| / max|a| > 0.25
    close(mx.effective_complexity(a, eps=0.25, absolute=False), [2.0])  # positive only
    close(mx.effective_complexity(a, eps=0.25, normalise=False), [3.0])
    close(mx.effective_complexity(a), [4.0])  # 1e-7 is below eps=1e-5


def test_complexity_reference_formulas_and_batch_independence():
    # Quantus' formulas, written with numpy on per-example max-normalised |a|
    a = np.abs(A / np.abs(A).max(axis=(1, 2, 3), keepdims=True)).reshape(B, -1)
    s = np.sort(a + 1e-7, axis=1)
    i = np.arange(1, N + 1)
    gini = ((2 * i - N - 1) * s).sum(1) / (N * s.sum(1))
    p = a / a.sum(1, keepdims=True)
    entropy = -(p * np.log(p + 1e-12)).sum(1)
    for f, ref in ((mx.sparseness, gini), (mx.complexity, entropy)):
        out = f(A)
        assert out.shape == (B,) and out.dtype == jnp.float32
        close(out, ref, rtol=1e-5)
        close(f(A[2:3]), ref[2:3], rtol=1e-5)
    # rank-2 (tabular) attributions work too
    close(mx.sparseness(A.reshape(B, -1)), gini, rtol=1e-5)


# ---------------------------------------------------------------------------------------
# robustness
# ---------------------------------------------------------------------------------------


def test_linear_model_saliency_is_perfectly_robust():
    # the saliency of a linear model does not depend on the input
    for metric in (mx.max_sensitivity, mx.avg_sensitivity, mx.local_lipschitz_estimate):
        close(metric(linear_saliency, X, T, key=KEY, samples=S), np.zeros(B), atol=1e-6)
    close(mx.stability(linear_saliency, X, T, key=KEY, samples=S), np.ones(B), atol=1e-6)


def _robustness_calls():
    return {
        "max_sensitivity": lambda x, t, bs=None: mx.max_sensitivity(
            mlp_saliency, x, t, key=KEY, samples=S, batch_size=bs),
        "avg_sensitivity": lambda x, t, bs=None: mx.avg_sensitivity(
            mlp_saliency, x, t, key=KEY, samples=S, batch_size=bs),
        "local_lipschitz_estimate": lambda x, t, bs=None: mx.local_lipschitz_estimate(
            mlp_saliency, x, t, key=KEY, samples=S, batch_size=bs),
        "stability": lambda x, t, bs=None: mx.stability(
            mlp_saliency, x, t, key=KEY, samples=S, batch_size=bs),
    }


@pytest.mark.parametrize("name", sorted(_robustness_calls()))
def test_robustness_batch_independence_and_chunking(name):
    # the whole batch with all samples in one chunk == one example alone, one sample per
    # chunk
    f = _robustness_calls()[name]
    full = f(X, T)
    assert full.shape == (B,) and full.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(full)))
    close(f(X[2:3], T[2:3], 1), full[2:3], rtol=1e-5, atol=1e-6)


def test_robustness_values_on_a_non_linear_model():
    calls = _robustness_calls()
    mx_s = np.asarray(calls["max_sensitivity"](X, T))
    avg_s = np.asarray(calls["avg_sensitivity"](X, T))
    assert np.all(mx_s >= avg_s - 1e-6) and np.all(avg_s > 0)
    stab = np.asarray(calls["stability"](X, T))
    assert np.all((stab > -1) & (stab < 1))
    # the same key gives the same draws; another key others
    close(calls["max_sensitivity"](X, T), mx_s)
    other = mx.max_sensitivity(mlp_saliency, X, T, key=jax.random.key(4), samples=S)
    assert not np.allclose(np.asarray(other), mx_s)
    # a direct check of max-sensitivity from its definition, with the same draws
    deltas = np.asarray(_common.draws(KEY, S, X.shape[1:], X.dtype, "uniform", 0.2))
    assert np.all(np.abs(deltas) <= 0.2)
    a0 = np.asarray(mlp_saliency(X, T)).reshape(B, -1)
    ratios = [
        np.linalg.norm(np.asarray(mlp_saliency(X + d, T)).reshape(B, -1) - a0, axis=1)
        / np.linalg.norm(a0, axis=1)
        for d in deltas
    ]
    close(mx_s, np.max(ratios, axis=0), rtol=1e-4)
    close(avg_s, np.mean(ratios, axis=0), rtol=1e-4)


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    a = _rng.integers(0, 5, size=(3, 40)).astype(np.float32)  # many ties
    b = (a + _rng.normal(size=a.shape)).astype(np.float32)
    b[0, :10] = 1.0
    ours = np.asarray(jax.jit(_common.spearman)(a, b))
    ref = [stats.spearmanr(a[i], b[i]).statistic for i in range(3)]
    close(ours, ref, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: mx.sparseness(np.ones((4,), np.float32)), "attributions"),
        (lambda: mx.complexity(np.ones((2, 4), np.int32)), "attributions"),
        (lambda: mx.effective_complexity(A, eps=-1.0), "eps"),
        (lambda: mx.max_sensitivity(mlp_saliency, X, T, key=KEY, samples=0), "samples"),
        (lambda: mx.avg_sensitivity(mlp_saliency, X, T, key=KEY, radius=0.0), "radius"),
        (lambda: mx.max_sensitivity(mlp_saliency, X, T, key=KEY, norm="l3"), "norm"),
        (lambda: mx.max_sensitivity(mlp_saliency, X, T, key=None), "key"),
        (lambda: mx.max_sensitivity(mlp_saliency, X, T, key=KEY, batch_size=0), "batch_size"),
        (lambda: mx.max_sensitivity(lambda z, t: z[:, :4], X, T, key=KEY), "explain_fn"),
        (lambda: mx.max_sensitivity("saliency", X, T, key=KEY), "explain_fn"),
        (lambda: mx.local_lipschitz_estimate(mlp_saliency, X, T, key=KEY, noise=-1.0),
         "noise"),
        (lambda: mx.stability(mlp_saliency, X, T, key=KEY, samples=0), "samples"),
        (lambda: mx.stability(mlp_saliency, X, T[:2], key=KEY), "target"),
        (lambda: mx.stability(mlp_saliency, X.astype(np.int32), T, key=KEY), "x"),
    ],
)
def test_bad_inputs(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
