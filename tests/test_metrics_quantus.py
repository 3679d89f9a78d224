"""lipxai.metrics against Quantus on the same small CNN (weights ported from torch) and the same
attributions; relative error < 1e-4 (float32)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
quantus = pytest.importorskip("quantus")

from lipxai import metrics as mx  # noqa: E402
from lipxai.metrics import _common  # noqa: E402

pytestmark = [pytest.mark.peers, pytest.mark.filterwarnings("ignore")]

B, H, W, CLASSES = 8, 8, 8, 3
RTOL = 1e-4
PER_EXAMPLE = {"normalise_axes": (1, 2, 3)}  # Quantus' max-normalisation, per example
QUIET = {"disable_warnings": True}


def _torch_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),  # (C, H, W) order
        torch.nn.Linear(4 * H * W, CLASSES),
    ).eval()


NET = _torch_model()
_KC = jnp.asarray(NET[0].weight.detach().numpy().transpose(2, 3, 1, 0))  # OIHW -> HWIO
_BC = jnp.asarray(NET[0].bias.detach().numpy())
_WL = jnp.asarray(NET[3].weight.detach().numpy().T)
_BL = jnp.asarray(NET[3].bias.detach().numpy())


def fn(z):
    """The torch network on NHWC inputs."""
    h = jax.lax.conv_general_dilated(z, _KC, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC")) + _BC
    h = jax.nn.relu(h).transpose(0, 3, 1, 2).reshape(z.shape[0], -1)
    return h @ _WL + _BL


_rng = np.random.default_rng(0)
X = _rng.uniform(size=(B, H, W, 1)).astype(np.float32)
Y = np.asarray(jnp.argmax(fn(X), axis=1)).astype(np.int64)  # the predicted classes
A = _rng.normal(size=(B, H, W, 1)).astype(np.float32)
XQ, AQ = X.transpose(0, 3, 1, 2).copy(), A.transpose(0, 3, 1, 2).copy()  # NCHW for Quantus
T = Y.astype(np.int32)


def rel_close(ours, ref, rtol=RTOL):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    err = np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-12)
    assert err < rtol, err


def _quantus(metric, **call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return metric(model=NET, x_batch=XQ, y_batch=Y, channel_first=True,
                      **{"a_batch": AQ.copy(), **call})


def test_same_model():
    with torch.no_grad():
        ref = NET(torch.from_numpy(XQ)).numpy()
    rel_close(fn(X), ref, 1e-5)


def test_complexity_metrics():
    rel_close(mx.sparseness(A), _quantus(quantus.Sparseness(normalise_func_kwargs=PER_EXAMPLE,
                                                            **QUIET)))
    rel_close(mx.complexity(A), _quantus(quantus.Complexity(normalise_func_kwargs=PER_EXAMPLE,
                                                            **QUIET)))
    # a threshold that splits the maps, on exactly the same float32 normalised values
    ref = _quantus(quantus.EffectiveComplexity(eps=0.3, normalise_func_kwargs=PER_EXAMPLE,
                                               **QUIET))
    np.testing.assert_array_equal(np.asarray(mx.effective_complexity(A, eps=0.3)), ref)
    # Quantus' defaults (max over the whole batch) agree on a batch of one
    for i in range(2):
        for ours, metric in ((mx.sparseness, quantus.Sparseness),
                             (mx.complexity, quantus.Complexity)):
            ref = metric(**QUIET)(model=NET, x_batch=XQ[i:i + 1], y_batch=Y[i:i + 1],
                                  a_batch=AQ[i:i + 1].copy(), channel_first=True)
            rel_close(ours(A[i:i + 1]), ref)


def test_pixel_flipping_curves():
    # Quantus' defaults: softmax probabilities, "black" baseline, one element per step; here
    # 4 per step (Quantus needs it to divide the number of features)
    ref = np.asarray(_quantus(quantus.PixelFlipping(features_in_step=4, **QUIET)))
    auc, curve = mx.pixel_flipping(fn, X, T, A, features_per_step=4, return_curve=True)
    assert curve.shape == ref.shape == (B, H * W // 4)
    rel_close(curve, ref)
    # Quantus' own AUC calls np.trapz, gone from numpy 2: the same rule
    rel_close(auc, np.trapezoid(ref, dx=1, axis=1))


def test_completeness():
    # Quantus returns sum(a) == f(x) - f(baseline) (exact equality); its output_func sees the
    # output difference, which gives the error itself
    seen = []

    def record(d):
        seen.append(np.asarray(d, np.float64))
        return d

    flags = _quantus(quantus.Completeness(normalise=False, output_func=record, **QUIET))
    ref = np.abs(AQ.reshape(B, -1).astype(np.float64).sum(1) - seen[0])
    ours = mx.completeness(fn, X, T, A, baseline="black")
    rel_close(ours, ref)
    assert not any(flags) and np.all(np.asarray(ours) > 0)


def test_road():
    pct = [10, 40, 70, 90]
    ref = _quantus(quantus.ROAD(noise=0.0, percentages=pct, **QUIET))
    _, curve = mx.road(fn, X, T, A, key=jax.random.key(0), noise=0.0,
                       percentages=[p / 100 for p in pct], return_curve=True)
    np.testing.assert_allclose(np.asarray(curve).mean(0), [ref[p] for p in pct], atol=1e-6)


def test_noisy_linear_imputation():
    from quantus.functions.perturb_func import noisy_linear_imputation

    mask = np.zeros((2, H * W), bool)
    refs = []
    for i in range(2):
        idx = np.argsort(-A[i].reshape(-1))[: 20 + 25 * i]
        mask[i, idx] = True
        refs.append(noisy_linear_imputation(XQ[i], idx, noise=0.0).transpose(1, 2, 0))
    ours = mx.noisy_linear_imputation(X[:2], mask.reshape(2, H, W), noise=0.0)
    rel_close(ours, np.stack(refs))


def _explain(z, t):
    """Saliency of the ported model (lipxai's metrics call it on NHWC inputs)."""
    from lipxai import explain

    return explain.saliency(fn, z, t)


def _quantus_explain(model, inputs, targets, **kwargs):
    """The same explanation for Quantus (NCHW numpy in and out)."""
    z = jnp.asarray(np.asarray(inputs).transpose(0, 2, 3, 1))
    return np.asarray(_explain(z, jnp.asarray(targets, jnp.int32))).transpose(0, 3, 1, 2)


@pytest.mark.parametrize(
    "name, kind, scale, extra",
    [
        ("max_sensitivity", "uniform", 0.2, {}),
        ("avg_sensitivity", "uniform", 0.2, {}),
        ("local_lipschitz_estimate", "normal", 0.1, {"normalise_func_kwargs": PER_EXAMPLE}),
    ],
)
def test_robustness_with_the_same_noise(name, kind, scale, extra):
    # Quantus draws its noise with np.random; give it ours through perturb_func
    samples, key = 4, jax.random.key(7)
    deltas = np.asarray(_common.draws(key, samples, (H, W, 1), np.float32, kind, scale))
    it = iter(d.transpose(2, 0, 1).reshape(-1) for d in deltas)

    def perturb(arr, indices, **kwargs):
        return arr + next(it)[None]

    cls = {"max_sensitivity": quantus.MaxSensitivity, "avg_sensitivity": quantus.AvgSensitivity,
           "local_lipschitz_estimate": quantus.LocalLipschitzEstimate}[name]
    metric = cls(nr_samples=samples, perturb_func=perturb, **extra, **QUIET)
    ref = _quantus(metric, a_batch=_quantus_explain(None, XQ, Y), explain_func=_quantus_explain)
    size = {"radius": scale} if kind == "uniform" else {"noise": scale}
    ours = getattr(mx, name)(_explain, X, T, key=key, samples=samples, **size)
    rel_close(ours, ref)


# ---------------------------------------------------------------------------------------
# localisation, similarity and sanity checks (lipxai.metrics.localisation / similarity /
# sanity) against Quantus and skimage
# ---------------------------------------------------------------------------------------

_mrng = np.random.default_rng(3)
S = np.zeros((B, H, W), bool)  # a random box per example
for _i in range(B):
    _r, _c = _mrng.integers(0, 5, size=2)
    _h, _w = _mrng.integers(2, 4, size=2)
    S[_i, _r:_r + _h, _c:_c + _w] = True
SQ = S[:, None].copy()  # NCHW
AL = A.copy()  # the attributions' maximum inside the box for even examples
for _i in range(0, B, 2):
    _r, _c = np.argwhere(S[_i])[-1]
    AL[_i, _r, _c, 0] = 5.0
ALQ = AL.transpose(0, 3, 1, 2).copy()


def test_localisation_metrics():
    def q(metric, **call):
        return np.asarray(_quantus(metric, s_batch=SQ, **{"a_batch": ALQ.copy(), **call}),
                          np.float64)

    pg = mx.pointing_game(AL, S)
    rel_close(pg, q(quantus.PointingGame(**QUIET)))
    np.testing.assert_array_equal(np.asarray(pg), np.arange(B) % 2 == 0)
    rel_close(mx.relevance_mass(AL, S, positive=False),
              q(quantus.RelevanceMassAccuracy(**QUIET)))
    # Arras et al.'s positive relevance: Quantus on the positive part of the attribution
    rel_close(mx.relevance_mass(AL, S),
              q(quantus.RelevanceMassAccuracy(**QUIET), a_batch=np.maximum(ALQ, 0)))
    rel_close(mx.relevance_rank(AL, S), q(quantus.RelevanceRankAccuracy(**QUIET)))
    for k in (1, 10):
        rel_close(mx.top_k_intersection(AL, S, k), q(quantus.TopKIntersection(k=k, **QUIET)))
    rel_close(mx.attribution_localisation(AL, S), q(quantus.AttributionLocalisation(**QUIET)))
    rel_close(mx.attribution_localisation(AL, S, absolute=False),
              q(quantus.AttributionLocalisation(abs=False, positive_attributions=True,
                                                **QUIET)))
    # ROC-AUC of the attribution against the mask
    rel_close(mx.human_alignment(AL, S.astype(np.float32), measure="auc"),
              q(quantus.AUC(**QUIET)))


def test_ssim_against_skimage():
    from quantus.functions.similarity_func import ssim as quantus_ssim
    from skimage.metrics import structural_similarity

    A2 = (A + 0.5 * _mrng.normal(size=A.shape)).astype(np.float32)
    maps, maps2 = A[..., 0].astype(np.float64), A2[..., 0].astype(np.float64)
    ref = [structural_similarity(
        maps[i], maps2[i], win_size=7, gaussian_weights=False,
        data_range=max(maps[i].max(), maps2[i].max()) - min(maps[i].min(), maps2[i].min()))
        for i in range(B)]
    rel_close(mx.similarity.ssim(A, A2), ref)
    rel_close(mx.similarity.ssim(A, A2), quantus_ssim(maps, maps2, batched=True))  # 2-D maps
    rel_close(mx.similarity.ssim(A, A2, data_range=3.0),
              [structural_similarity(maps[i], maps2[i], win_size=7, data_range=3.0)
               for i in range(B)])


def _apply(params, z):
    """``fn`` with its parameters as a (Flax-like) pytree."""
    h = jax.lax.conv_general_dilated(z, params["conv"]["kernel"], (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = jax.nn.relu(h + params["conv"]["bias"]).transpose(0, 3, 1, 2).reshape(z.shape[0], -1)
    return h @ params["dense"]["kernel"] + params["dense"]["bias"]


def _explain_params(params, z, t):
    from lipxai import explain

    return explain.saliency(lambda u: _apply(params, u), z, t)


def _torch_saliency(model, inputs, targets, **kwargs):
    inputs = torch.tensor(np.asarray(inputs), requires_grad=True)
    out = model(inputs)
    out[torch.arange(len(inputs)), torch.as_tensor(np.asarray(targets))].sum().backward()
    return inputs.grad.detach().numpy()


def test_model_randomization_with_quantus_draws():
    # Quantus re-initialises each layer with torch.manual_seed(seed + 1), top down; give our
    # model_randomization the same weights through its init hook
    import copy

    lin, conv = copy.deepcopy(NET[3]), copy.deepcopy(NET[0])
    for module in (lin, conv):
        torch.manual_seed(43)
        module.reset_parameters()
    by_shape = {
        (3, 3, 1, 4): conv.weight.detach().numpy().transpose(2, 3, 1, 0),
        (4,): conv.bias.detach().numpy(),
        (4 * H * W, CLASSES): lin.weight.detach().numpy().T,
        (CLASSES,): lin.bias.detach().numpy(),
    }
    params = {"conv": {"kernel": _KC, "bias": _BC}, "dense": {"kernel": _WL, "bias": _BL}}
    rel_close(_apply(params, X), fn(X), 1e-6)
    res = mx.model_randomization(_explain_params, params, X, T, key=jax.random.key(0),
                                 init=lambda k, w: jnp.asarray(by_shape[tuple(w.shape)]))
    ref = _quantus(quantus.MPRT(seed=42, normalise_func_kwargs=PER_EXAMPLE, **QUIET),
                   a_batch=None, explain_func=_torch_saliency)
    assert res.layers == ("dense", "conv") and list(ref)[1:] == ["3", "0"]
    np.testing.assert_allclose(np.asarray(res.scores), np.stack([ref["3"], ref["0"]]),
                               atol=1e-4)
