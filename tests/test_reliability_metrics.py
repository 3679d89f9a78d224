"""The NaN rule of :mod:`lipxai.metrics` (issue 18): an example whose input, attribution or
mask holds a NaN or an infinity, or whose target is out of range under ``jit``, scores NaN
(the other examples unchanged), and a traced invalid scalar makes every score NaN: never a
plausible number.  A tiny MLP on 4x4x1 inputs, batch 3."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lipxai import explain, metrics
from lipxai.metrics import similarity

NAN, INF = float("nan"), float("inf")
CLASSES = 10
_RNG = np.random.default_rng(0)
PARAMS = {"w1": jnp.asarray(_RNG.normal(size=(16, 8)), jnp.float32),
          "w2": jnp.asarray(_RNG.normal(size=(8, CLASSES)), jnp.float32)}
X = jnp.asarray(_RNG.uniform(size=(3, 4, 4, 1)), jnp.float32)
KEY = jax.random.key(0)


def mlp_of(p, x):
    return jax.nn.relu(x.reshape(x.shape[0], 16) @ p["w1"]) @ p["w2"]


mlp = functools.partial(mlp_of, PARAMS)
T = jnp.argmax(mlp(X), axis=1)
A = explain.saliency(mlp, X, T)
MASKS = jnp.zeros((3, 4, 4), jnp.float32).at[:, 1:3, 1:3].set(1.0)  # numeric: can hold a NaN
MAPS = jnp.asarray(_RNG.uniform(size=(3, 4, 4)), jnp.float32)
BAD_T = jnp.array([T[0], CLASSES, -1])  # example 0 valid, 1 and 2 out of range


def _saliency(x, t):
    return explain.saliency(mlp, x, t)


def _saliency_of(p, x, t):
    return explain.saliency(functools.partial(mlp_of, p), x, t)


def _plain_gradient(x, t):
    """An explanation without the NaN rule: the one-hot of a target out of range is 0, the
    gradient at a NaN input is 0 (ReLU), so only the metric's own checks give NaN."""
    return jax.grad(lambda z: (mlp(z) * jax.nn.one_hot(t, CLASSES)).sum())(x)


# name -> (metric(x, t, a, m), the arguments it reads among "x", "a", "m"); "m" is the mask,
# human map, second map or target map
_CASES = {
    "deletion": (lambda x, t, a, m: metrics.deletion(mlp, x, t, a, steps=4,
                                                     return_curve=True), "xa"),
    "insertion": (lambda x, t, a, m: metrics.insertion(mlp, x, t, a, steps=4, sigma=1.0), "xa"),
    "pixel_flipping": (lambda x, t, a, m: metrics.pixel_flipping(mlp, x, t, a,
                                                                 features_per_step=4), "xa"),
    "mufidelity": (lambda x, t, a, m: metrics.mufidelity(mlp, x, t, a, key=KEY, samples=8,
                                                         subset_size=4), "xa"),
    "infidelity": (lambda x, t, a, m: metrics.infidelity(mlp, x, t, a, key=KEY, samples=4),
                   "xa"),
    "completeness": (lambda x, t, a, m: metrics.completeness(mlp, x, t, a), "xa"),
    "road": (lambda x, t, a, m: metrics.road(mlp, x, t, a, key=KEY, percentages=(0.25, 0.5),
                                             return_curve=True), "xa"),
    "noisy_linear_imputation": (lambda x, t, a, m: metrics.noisy_linear_imputation(
        x, m, key=KEY), "xm"),
    "sparseness": (lambda x, t, a, m: metrics.sparseness(a), "a"),
    "complexity": (lambda x, t, a, m: metrics.complexity(a), "a"),
    "effective_complexity": (lambda x, t, a, m: metrics.effective_complexity(a), "a"),
    "max_sensitivity": (lambda x, t, a, m: metrics.max_sensitivity(_saliency, x, t, key=KEY,
                                                                   samples=3), "x"),
    "avg_sensitivity": (lambda x, t, a, m: metrics.avg_sensitivity(_saliency, x, t, key=KEY,
                                                                   samples=3), "x"),
    "local_lipschitz_estimate": (lambda x, t, a, m: metrics.local_lipschitz_estimate(
        _saliency, x, t, key=KEY, samples=3), "x"),
    "stability": (lambda x, t, a, m: metrics.stability(_saliency, x, t, key=KEY, samples=3),
                  "x"),
    "pointing_game": (lambda x, t, a, m: metrics.pointing_game(a, m), "am"),
    "relevance_mass": (lambda x, t, a, m: metrics.relevance_mass(a, m, positive=False), "am"),
    "relevance_rank": (lambda x, t, a, m: metrics.relevance_rank(a, m), "am"),
    "top_k_intersection": (lambda x, t, a, m: metrics.top_k_intersection(a, m, 3), "am"),
    "attribution_localisation": (lambda x, t, a, m: metrics.attribution_localisation(a, m),
                                 "am"),
    "human_alignment spearman": (lambda x, t, a, m: metrics.human_alignment(a, m), "am"),
    "human_alignment auc": (lambda x, t, a, m: metrics.human_alignment(a, m, measure="auc"),
                            "am"),
    "model_randomization": (lambda x, t, a, m: metrics.model_randomization(
        _saliency_of, PARAMS, x, t, key=KEY).scores.T, "x"),
    "random_logit": (lambda x, t, a, m: metrics.random_logit(
        _plain_gradient, x, t, key=KEY, num_classes=CLASSES, similarity="mse"), "x"),
    "similarity.top_k_intersection": (lambda x, t, a, m: similarity.top_k_intersection(
        a, m[..., None], 3), "am"),
    "similarity.spearman": (lambda x, t, a, m: similarity.spearman(a, m[..., None]), "am"),
    "similarity.pearson": (lambda x, t, a, m: similarity.pearson(a, m[..., None]), "am"),
    "similarity.ssim": (lambda x, t, a, m: similarity.ssim(a, m[..., None], win_size=3), "am"),
    "similarity.mse": (lambda x, t, a, m: similarity.mse(a, m[..., None]), "am"),
    "similarity.center_of_mass_shift": (lambda x, t, a, m: similarity.center_of_mass_shift(
        a, m[..., None]), "am"),
    "attack_explanation": (lambda x, t, a, m: metrics.attack_explanation(
        mlp, x, t, eps=0.05, steps=2, objective="target_map", target_map=m), "xm"),
}
_M = {name: MAPS if "human" in name or "similarity" in name or "attack" in name else MASKS
      for name in _CASES}
_TARGETED = sorted(n for n, (_, reads) in _CASES.items() if "x" in reads
                   and n != "noisy_linear_imputation")


def _call(name, x=X, t=T, a=A, m=None):
    return _CASES[name][0](x, t, a, _M[name] if m is None else m)


@functools.cache
def _clean(name):
    return _call(name)


def _leaves(out):
    return [np.asarray(v) for v in jax.tree_util.tree_leaves(out)]


def _invalid(leaf):
    """Per example: NaN (floating), False (bool) or -1 (int) everywhere."""
    rows = leaf.reshape(leaf.shape[0], -1)
    if np.issubdtype(leaf.dtype, np.floating):
        return np.isnan(rows).all(1)
    return (~rows).all(1) if leaf.dtype == bool else (rows == -1).all(1)


def _check(out, invalid, expected=None):
    """Examples ``invalid`` give invalid outputs; the others are finite and ``expected``."""
    ok = [i for i in range(len(invalid)) if not invalid[i]]
    for i, leaf in enumerate(_leaves(out)):
        np.testing.assert_array_equal(_invalid(leaf), invalid)
        if np.issubdtype(leaf.dtype, np.floating):
            assert np.isfinite(leaf[ok]).all()
        if expected is not None:
            np.testing.assert_allclose(leaf[ok], expected[i], rtol=1e-5, atol=1e-6)


def _poison(arr, value):
    return arr.at[(1,) + (0,) * (arr.ndim - 1)].set(value)


@pytest.mark.parametrize("name,arg", sorted((n, r) for n, (_, reads) in _CASES.items()
                                            for r in reads))
def test_nan_example_gives_nan_and_leaves_the_others(name, arg):
    """Example 1 of ``x``, the attributions or the masks holds a NaN or an infinity: it
    scores NaN, examples 0 and 2 score as in the clean batch."""
    expected = [v[[0, 2]] for v in _leaves(_clean(name))]
    for value in (NAN, INF):
        bad = {"x": X, "a": A, "m": _M[name]}[arg]
        _check(_call(name, **{arg: _poison(bad, value)}), [False, True, False], expected)


@pytest.mark.parametrize("name", _TARGETED)
def test_target_out_of_range_under_jit_gives_nan(name):
    out = jax.jit(lambda t: _call(name, t=t))(BAD_T)
    _check(out, [False, True, True], [v[:1] for v in _leaves(_clean(name))])


def test_concrete_target_out_of_range_still_raises():
    with pytest.raises(ValueError, match="target"):
        metrics.deletion(mlp, X, BAD_T, A, steps=4)
    with pytest.raises(ValueError, match="target"):
        metrics.random_logit(_saliency, X, BAD_T, key=KEY, num_classes=CLASSES)


# name -> (metric of the traced scalar s, a valid value, invalid values)
_SCALARS = {
    "infidelity noise": (lambda s: metrics.infidelity(mlp, X, T, A, key=KEY, samples=4,
                                                      noise=s), 0.1, (0.0, -0.1, NAN)),
    "max_sensitivity radius": (lambda s: metrics.max_sensitivity(
        _saliency, X, T, key=KEY, samples=3, radius=s), 0.1, (0.0, -0.1, INF)),
    "stability noise": (lambda s: metrics.stability(_saliency, X, T, key=KEY, samples=3,
                                                    noise=s), 0.1, (-0.1, NAN)),
    "road noise": (lambda s: metrics.road(mlp, X, T, A, key=KEY, percentages=(0.25, 0.5),
                                          noise=s), 0.01, (-0.1, NAN)),
    "noisy_linear_imputation noise": (lambda s: metrics.noisy_linear_imputation(
        X, MASKS, key=KEY, noise=s), 0.01, (-0.1, NAN)),
    "effective_complexity eps": (lambda s: metrics.effective_complexity(A, eps=s), 0.1,
                                 (-0.1, NAN)),
    "human_alignment threshold": (lambda s: metrics.human_alignment(
        A, MAPS, measure="auc", threshold=s), 0.5, (-0.1, 1.0, NAN)),
    "ssim data_range": (lambda s: similarity.ssim(A, MAPS[..., None], win_size=3,
                                                  data_range=s), 1.0, (0.0, -1.0, NAN)),
    "attack eps, step_size": (lambda s: metrics.attack_explanation(
        mlp, X, T, eps=s[0], steps=2, step_size=s[1]), (0.05, 0.02),
        ((-0.1, 0.02), (NAN, 0.02), (0.05, 0.0), (0.05, -0.1), (0.05, NAN))),
}


@pytest.mark.parametrize("name", sorted(_SCALARS))
def test_traced_invalid_scalar_gives_nan(name):
    metric, good, bad = _SCALARS[name]
    traced = jax.jit(metric)
    _check(traced(good), [False] * 3, _leaves(metric(good)))
    for value in bad:
        _check(traced(value), [True] * 3)
