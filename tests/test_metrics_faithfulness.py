"""lipxai.metrics faithfulness: known answers on linear models, batch/chunk invariance, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lipxai import explain as ex
from lipxai import metrics as mx

B, H, W, C, CLASSES = 4, 8, 8, 1, 3
N = H * W * C
STEPS = 8
_rng = np.random.default_rng(0)
_W = _rng.normal(size=(N, CLASSES)).astype(np.float32)
_B = np.array([0.3, -0.2, 0.1], np.float32)
_W1 = (0.5 * _rng.normal(size=(N, 16))).astype(np.float32)
_W2 = _rng.normal(size=(16, CLASSES)).astype(np.float32)
X = _rng.uniform(size=(B, H, W, C)).astype(np.float32)
T = np.array([0, 1, 2, 0], np.int32)
RANDOM = _rng.normal(size=(B, H, W, C)).astype(np.float32)
KEY = jax.random.key(5)
# exact attributions of the linear model: its gradient and gradient x input
SALIENCY = _W.T[T].reshape(X.shape)
PERFECT = SALIENCY * X


def linear(z):
    return z.reshape(z.shape[0], -1) @ _W + _B


def mlp(z):
    return jnp.tanh(z.reshape(z.shape[0], -1) @ _W1) @ _W2


def close(a, b, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def _np_linear(z):
    return z.reshape(z.shape[0], -1) @ _W + _B


def _logit(z, t=T):
    return _np_linear(np.asarray(z))[np.arange(z.shape[0]), t]


def _softmax(z, t=T):
    v = _np_linear(np.asarray(z))
    p = np.exp(v - v.max(1, keepdims=True))
    return (p / p.sum(1, keepdims=True))[np.arange(z.shape[0]), t]


# the calls that the known-answer tests and the batch / chunk tests share (one compilation)
def _deletion(x, t, a, bs=None, **kw):
    return mx.deletion(linear, x, t, a, steps=STEPS, output="logit", baseline="zeros",
                       batch_size=bs, **kw)


def _insertion(x, t, a, bs=None, **kw):
    return mx.insertion(linear, x, t, a, steps=STEPS, output="logit", baseline="zeros",
                        batch_size=bs, **kw)


def _pixel_flipping(x, t, a, bs=None, **kw):
    return mx.pixel_flipping(linear, x, t, a, features_per_step=5, batch_size=bs, **kw)


def _mufidelity(x, t, a, bs=None):
    return mx.mufidelity(linear, x, t, a, key=KEY, samples=16, subset_size=12,
                         baseline="zeros", batch_size=bs)


def _infidelity(x, t, a, bs=None, **kw):
    return mx.infidelity(linear, x, t, a, key=KEY, samples=16, noise=0.1, batch_size=bs, **kw)


def _road(x, t, a, bs=None, **kw):
    return mx.road(mlp, x, t, a, key=KEY, percentages=(0.25, 0.75), output="softmax",
                   batch_size=bs, **kw)


# ---------------------------------------------------------------------------------------
# known answers
# ---------------------------------------------------------------------------------------


def test_perfect_attribution_of_linear_model_is_best_on_deletion_and_insertion():
    # for a linear model, w * x ranks the features by their exact contribution to the logit:
    # every prefix removes (inserts) the largest possible logit mass, so its curve is
    # pointwise below (above) that of any other ordering
    d_good, c_good = _deletion(X, T, PERFECT, return_curve=True)
    d_rand, c_rand = _deletion(X, T, RANDOM, return_curve=True)
    assert np.all(np.asarray(c_good) <= np.asarray(c_rand) + 1e-4)
    assert np.all(np.asarray(d_good) < np.asarray(d_rand))
    assert np.all(np.asarray(_insertion(X, T, PERFECT)) > np.asarray(_insertion(X, T, RANDOM)))


def test_deletion_insertion_curves_follow_the_ranking():
    # after step k the logit is the bias plus the contributions of the features outside the
    # top floor(k N / K)
    auc, curve = _deletion(X, T, RANDOM, return_curve=True)
    iauc, icurve = _insertion(X, T, RANDOM, return_curve=True)
    assert curve.shape == icurve.shape == (B, STEPS + 1)
    contrib = PERFECT.reshape(B, -1)
    order = np.argsort(-RANDOM.reshape(B, -1), axis=1, kind="stable")
    for k in range(STEPS + 1):
        top = np.zeros((B, N), bool)
        np.put_along_axis(top, order[:, : (k * N) // STEPS], True, axis=1)
        close(curve[:, k], (contrib * ~top).sum(1) + _B[T], rtol=1e-4, atol=1e-5)
        close(icurve[:, k], (contrib * top).sum(1) + _B[T], rtol=1e-4, atol=1e-5)
    close(curve[:, 0], _logit(X), rtol=1e-5)
    c = np.asarray(curve)
    close(auc, (c[:, :-1] + c[:, 1:]).sum(1) / (2 * STEPS), rtol=1e-5)
    # the baseline is an array argument: a constant baseline reuses the compilation
    _, curve5 = mx.deletion(linear, X, T, RANDOM, steps=STEPS, output="logit", baseline=0.5,
                            return_curve=True)
    close(curve5[:, -1], _logit(np.full_like(X, 0.5)), rtol=1e-5)


def test_pixel_flipping_curve_and_area():
    auc, curve = _pixel_flipping(X, T, RANDOM, return_curve=True)
    assert curve.shape == (B, math.ceil(N / 5))
    # default: softmax probability, "black" (per-example minimum) baseline
    black = np.broadcast_to(X.min(axis=(1, 2, 3), keepdims=True), X.shape)
    close(curve[:, -1], _softmax(black), rtol=1e-5)
    close(auc, np.trapezoid(np.asarray(curve), dx=1, axis=1), rtol=1e-5)
    assert np.all((np.asarray(curve) >= 0) & (np.asarray(curve) <= 1))


def test_mufidelity_of_linear_model():
    # the output drop of a subset is exactly its w * x mass: correlation 1
    close(_mufidelity(X, T, PERFECT), np.ones(B), atol=1e-5)
    assert np.all(np.asarray(_mufidelity(X, T, RANDOM)) < 0.9)


def test_infidelity_of_linear_model():
    # f(x) - f(x - I) = w . I exactly: the gradient has infidelity 0, for any noise
    close(_infidelity(X, T, SALIENCY), np.zeros(B), atol=1e-8)
    assert np.all(np.asarray(_infidelity(X, T, RANDOM)) > 1e-3)
    # normalize: a rescaled gradient is optimal again
    close(_infidelity(X, T, 3.0 * SALIENCY, normalize=True), np.zeros(B), atol=1e-8)
    assert np.all(np.asarray(_infidelity(X, T, 3.0 * SALIENCY)) > 1e-3)


def test_completeness():
    # gradient x input of a linear model is complete w.r.t. the zero baseline
    assert np.all(np.asarray(mx.completeness(linear, X, T, PERFECT)) < 1e-4)
    drop = _logit(X) - _logit(np.zeros_like(X))
    expected = np.abs(SALIENCY.reshape(B, -1).sum(1) - drop)
    close(mx.completeness(linear, X, T, SALIENCY), expected, rtol=1e-5)
    close(mx.completeness(linear, X, T, SALIENCY, relative=True), expected / np.abs(drop),
          rtol=1e-5)
    # Integrated Gradients of a non-linear model, on the same baseline
    ig = jax.jit(lambda x: ex.integrated_gradients(mlp, x, jnp.asarray(T), steps=16))(X)
    assert np.all(np.asarray(mx.completeness(mlp, X, T, ig)) < 1e-4)


# ---------------------------------------------------------------------------------------
# ROAD
# ---------------------------------------------------------------------------------------


def _dense_imputation(img, missing):
    """Reference: the ROAD system for one [H, W, C] image solved densely by numpy."""
    h, w, _ = img.shape
    ids = {p: i for i, p in enumerate(zip(*np.nonzero(missing), strict=True))}
    a = np.zeros((len(ids), len(ids)))
    rhs = np.zeros((len(ids), img.shape[2]))
    for (i, j), r in ids.items():
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                if (di, dj) == (0, 0) or not (0 <= i + di < h and 0 <= j + dj < w):
                    continue
                wt = 1 / 6 if di == 0 or dj == 0 else 1 / 12
                a[r, r] += wt
                if (i + di, j + dj) in ids:
                    a[r, ids[(i + di, j + dj)]] -= wt
                else:
                    rhs[r] += wt * img[i + di, j + dj]
    sol = np.linalg.solve(a, rhs)
    out = img.astype(np.float64).copy()
    for (i, j), r in ids.items():
        out[i, j] = sol[r]
    return out


def test_noisy_linear_imputation_solves_the_system():
    x = _rng.uniform(size=(2, H, W, 1)).astype(np.float32)
    mask = _rng.uniform(size=(2, H, W)) < 0.6
    mask[1, :, :5] = True  # a large region: needs many CG steps
    out = mx.noisy_linear_imputation(x, mask, noise=0.0)
    for b in range(2):
        close(out[b], _dense_imputation(x[b], mask[b]), rtol=1e-4, atol=1e-5)
    noisy = mx.noisy_linear_imputation(x, mask, key=KEY, noise=0.5)
    diff = np.asarray(noisy) - np.asarray(out)
    assert np.all(diff[~mask] == 0) and np.all(np.abs(diff[mask]) > 0)


def test_road_curve():
    score, curve = _road(X, T, RANDOM, return_curve=True)
    assert curve.shape == (B, 2)
    close(score, np.asarray(curve).mean(1))
    assert np.all((np.asarray(curve) >= 0) & (np.asarray(curve) <= 1))
    lerf = _road(X, T, RANDOM, order="lerf")
    assert not np.allclose(np.asarray(lerf), np.asarray(score))


# ---------------------------------------------------------------------------------------
# batch independence and chunking
# ---------------------------------------------------------------------------------------

_CASES = {
    "deletion": _deletion,
    "insertion": _insertion,
    "pixel_flipping": _pixel_flipping,
    "mufidelity": _mufidelity,
    "infidelity": _infidelity,
    "road": _road,
}


@pytest.mark.parametrize("name", sorted(_CASES))
def test_batch_independence_and_chunking(name):
    # the whole batch, all steps / samples in one chunk (batch_size=None here) == each
    # example alone, one step / sample per chunk
    f = _CASES[name]
    full = f(X, T, RANDOM)
    assert full.shape == (B,) and full.dtype == jnp.float32
    close(f(X[1:2], T[1:2], RANDOM[1:2], 1), full[1:2], rtol=1e-5, atol=1e-6)


def test_chunking_of_the_batch():
    # batch_size=1 with the whole batch: chunk boundaries inside a batch of B > 1
    close(_deletion(X, T, RANDOM, 1), _deletion(X, T, RANDOM), rtol=1e-5, atol=1e-6)
    close(_mufidelity(X, T, RANDOM, 3), _mufidelity(X, T, RANDOM), rtol=1e-5, atol=1e-6)


def test_completeness_batch_independence():
    full = mx.completeness(linear, X, T, RANDOM)
    close(mx.completeness(linear, X[2:3], T[2:3], RANDOM[2:3]), full[2:3], rtol=1e-5)


def test_jit_compatible():
    out = jax.jit(lambda x, a: mx.deletion(linear, x, jnp.asarray(T), a, steps=4))(X, RANDOM)
    close(out, mx.deletion(linear, X, T, RANDOM, steps=4))


# ---------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: mx.deletion(linear, X, T, RANDOM[:, :4]), "attributions"),
        (lambda: mx.insertion(linear, X, T, RANDOM.astype(jnp.int32)), "attributions"),
        (lambda: mx.deletion(linear, X, T, RANDOM, steps=0), "steps"),
        (lambda: mx.insertion(linear, X, T, RANDOM, steps=-1), "steps"),
        (lambda: mx.deletion(linear, X, T, RANDOM, output="prob"), "output"),
        (lambda: mx.deletion(linear, X, T, RANDOM, features="rows"), "features"),
        (lambda: mx.deletion(linear, X, T, RANDOM, baseline="grey"), "baseline"),
        (lambda: mx.deletion(linear, X, T, RANDOM, batch_size=0), "batch_size"),
        (lambda: mx.pixel_flipping(linear, X, T, RANDOM, features_per_step=0),
         "features_per_step"),
        (lambda: mx.mufidelity(linear, X, T, RANDOM, key=KEY, samples=0), "samples"),
        (lambda: mx.mufidelity(linear, X, T, RANDOM, key=KEY, subset_size=N + 1),
         "subset_size"),
        (lambda: mx.mufidelity(linear, X, T, RANDOM, key=None), "key"),
        (lambda: mx.infidelity(linear, X, T, RANDOM, key=KEY, samples=0), "samples"),
        (lambda: mx.infidelity(linear, X, T, RANDOM, key=KEY, noise=0.0), "noise"),
        (lambda: mx.completeness(linear, X, T, RANDOM[:2]), "attributions"),
        (lambda: mx.road(linear, X, T, RANDOM, key=KEY, percentages=(0.5, 1.5)),
         "percentages"),
        (lambda: mx.road(linear, X, T, RANDOM, key=KEY, order="random"), "order"),
        (lambda: mx.road(linear, X.reshape(B, -1, 1), T, RANDOM.reshape(B, -1, 1), key=KEY),
         "x"),
        (lambda: mx.deletion(linear, X, T[:2], RANDOM), "target"),
        (lambda: mx.noisy_linear_imputation(X, np.zeros((B, H), bool)), "mask"),
    ],
)
def test_bad_inputs(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
