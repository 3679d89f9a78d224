"""Reliability at the public API boundary (issue 18): invalid arguments raise an error naming
them, and what cannot be checked (NaN inputs, traced values under ``jit``) gives NaN, never a
plausible number.  Small shapes only: every model here is a few matrix products."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lipxai as lx
from lipxai import boundary, certify, explain, losses, metrics
from lipxai.bounds import Interval, box, certify_explanation, gradient_bounds, interval, params_box

NAN, INF = float("nan"), float("inf")
FEATURES, CLASSES = 4, 3
_RNG = np.random.default_rng(0)
W1 = jnp.asarray(_RNG.normal(size=(FEATURES, 8)), jnp.float32)
W2 = jnp.asarray(_RNG.normal(size=(8, CLASSES)), jnp.float32)
X = jnp.asarray(_RNG.uniform(size=(3, FEATURES)), jnp.float32)
W_IMG = jnp.asarray(_RNG.normal(size=(32, CLASSES)), jnp.float32)
X_IMG = jnp.asarray(_RNG.uniform(size=(2, 4, 4, 1)), jnp.float32)
KEY = jax.random.key(0)


def mlp(x):
    return jax.nn.relu(x @ W1) @ W2


def mlp_params(p, x):
    return jax.nn.relu(x @ p["w"]) @ W2


def img_features(x):
    return jnp.concatenate([x, x * x], axis=-1)  # [B, 4, 4, 2]


def img_head(x, a):
    del x
    return a.reshape(a.shape[0], 32) @ W_IMG


def img_fn(x):
    return img_head(x, img_features(x))


T = jnp.argmax(mlp(X), axis=1)
T_IMG = jnp.argmax(img_fn(X_IMG), axis=1)
X_NAN = X.at[1, 2].set(NAN)  # example 1 is invalid, 0 and 2 are fine


def _saliency_fn(x, t):
    return explain.saliency(img_fn, x, t)


# ---------------------------------------------------------------------------------------
# 1. the domain of gradient_bounds
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("domain", [(1.0, 0.0), (0.0, NAN), (NAN, 1.0), (-INF, 1.0), 0.5,
                                    (0.0, 0.5, 1.0), ("a", "b")])
def test_gradient_bounds_rejects_bad_domain(domain):
    with pytest.raises(ValueError, match="domain"):
        gradient_bounds(mlp, X, T, eps=0.1, domain=domain)


def test_domain_inverted_under_jit_certifies_nothing():
    f = jax.jit(lambda lo, hi: certify_explanation(
        gradient_bounds(mlp, X, T, eps=0.1, domain=(lo, hi)), T, k=2)["prediction_certified"])
    assert not f(1.0, 0.0).any()
    assert f(0.0, 1.0).shape == (3,)


def test_x_outside_domain_gives_nan_bounds():
    x = X.at[0].set(5.0)  # the box clipped to [0, 1] is empty for example 0
    b = gradient_bounds(mlp, x, T, eps=0.1, domain=(0.0, 1.0))
    assert np.isnan(b.lower[0]).all() and np.isnan(b.logits.upper[0]).all()
    assert np.isfinite(b.lower[1:]).all()


# ---------------------------------------------------------------------------------------
# 2. Interval arguments of interval(f)
# ---------------------------------------------------------------------------------------


def test_interval_rejects_inverted_box_naming_argument_and_index():
    f = interval(lambda w, z: z @ w)
    lower, upper = jnp.zeros((2, 3)), jnp.ones((2, 3))
    with pytest.raises(ValueError, match=r"args\[1\].*lower > upper at index \(1, 2\)"):
        f(jnp.ones((3, 2)), Interval(lower.at[1, 2].set(2.0), upper))
    with pytest.raises(ValueError, match=r"args\[0\]\['w'\].*NaN bound at index \(0,\)"):
        interval(lambda p, z: z * p["w"])({"w": Interval(jnp.array([NAN]), jnp.array([1.0]))},
                                          jnp.ones(1))
    with pytest.raises(ValueError, match=r"args\[0\].*NaN bound"):
        f(Interval(jnp.zeros(3), jnp.full(3, NAN)), jnp.ones(3))


def test_interval_checks_symbolic_too_and_skips_tracers():
    bad = Interval(jnp.ones((1, 2)), jnp.zeros((1, 2)))
    with pytest.raises(ValueError, match=r"args\[0\]"):
        interval(lambda z: z @ jnp.ones((2, 2)), method="symbolic")(bad)
    out = jax.jit(interval(lambda z: 2 * z))(bad)  # traced bounds: the caller's promise
    assert out.lower.shape == (1, 2)


# ---------------------------------------------------------------------------------------
# 3. and 8. NaN, infinities, negatives, floats and bools where a number or a count is expected
# ---------------------------------------------------------------------------------------

_BAD_ARGUMENTS = {
    "box eps nan": (lambda: box(X, NAN), "eps"),
    "box eps -1": (lambda: box(X, -1.0), "eps"),
    "box eps array nan": (lambda: box(X, jnp.array([0.1, NAN, 0.1, 0.1])), "eps"),
    "gradient_bounds eps nan": (lambda: gradient_bounds(mlp, X, T, eps=NAN), "eps"),
    "gradient_bounds eps inf": (lambda: gradient_bounds(mlp, X, T, eps=INF), "eps"),
    "gradient_bounds eps shape": (lambda: gradient_bounds(mlp, X, T, eps=jnp.ones(2)), "eps"),
    "params_box relative nan": (lambda: params_box({"w": W1}, relative=NAN), "relative"),
    "params_box absolute inf": (lambda: params_box({"w": W1}, absolute=INF), "absolute"),
    "certify_explanation k float": (lambda: certify_explanation(
        gradient_bounds(mlp, X, T, eps=0.1), T, k=2.5), "k"),
    "certify_explanation k bool": (lambda: certify_explanation(
        gradient_bounds(mlp, X, T, eps=0.1), T, k=True), "k"),
    "certified_accuracy eps nan": (lambda: certify.certified_accuracy(mlp(X), T, NAN), "eps"),
    "certified_accuracy eps array": (
        lambda: certify.certified_accuracy(mlp(X), T, jnp.array([0.1, NAN])), "eps"),
    "radius lipschitz inf": (lambda: certify.radius(mlp(X), lipschitz=INF), "lipschitz"),
    "radius lipschitz nan": (lambda: certify.radius(mlp(X), lipschitz=jnp.float32(NAN)),
                             "lipschitz"),
    "smoothgrad noise nan": (lambda: explain.smoothgrad(mlp, X, T, key=KEY, noise=NAN), "noise"),
    "smoothgrad noise inf": (lambda: explain.smoothgrad(mlp, X, T, key=KEY, noise=INF), "noise"),
    "vargrad noise nan": (lambda: explain.vargrad(mlp, X, T, key=KEY, noise=NAN), "noise"),
    "squaregrad noise -1": (lambda: explain.squaregrad(mlp, X, T, key=KEY, noise=-1.0), "noise"),
    "smoothgrad samples float": (lambda: explain.smoothgrad(mlp, X, T, key=KEY, samples=2.5),
                                 "samples"),
    "smoothgrad batch_size bool": (
        lambda: explain.smoothgrad(mlp, X, T, key=KEY, samples=2, batch_size=True), "batch_size"),
    "ig steps float": (lambda: explain.integrated_gradients(mlp, X, T, steps=5.5), "steps"),
    "ig steps bool": (lambda: explain.integrated_gradients(mlp, X, T, steps=True), "steps"),
    "ig batch_size float": (lambda: explain.integrated_gradients(mlp, X, T, batch_size=2.0),
                            "batch_size"),
    "ig baseline nan": (lambda: explain.integrated_gradients(mlp, X, T, baseline=NAN),
                        "baseline"),
    "ig uniform low > high": (lambda: explain.make_baseline(X, "uniform", key=KEY, low=1.0,
                                                            high=0.0), "low, high"),
    "ig sigma nan": (lambda: explain.make_baseline(X_IMG, "blur", sigma=NAN), "sigma"),
    "idgi steps float": (lambda: explain.idgi(mlp, X, T, steps=4.0), "steps"),
    "counterfactual t nan": (lambda: explain.counterfactual(mlp, X, T, t=NAN), "t"),
    "search tol nan": (lambda: boundary.search(mlp, X, T, tol=NAN), "tol"),
    "search step_size inf": (lambda: boundary.search(mlp, X, T, step_size=INF), "step_size"),
    "search overshoot -1": (lambda: boundary.search(mlp, X, T, method="transport",
                                                    overshoot=-1.0), "overshoot"),
    "search eps nan": (lambda: boundary.search(mlp, X, T, eps=[0.1, NAN]), "eps"),
    "search eps_max nan": (lambda: boundary.search(mlp, X, T, eps_max=NAN), "eps_max"),
    "search steps bool": (lambda: boundary.search(mlp, X, T, steps=True), "steps"),
    "search batch_size float": (lambda: boundary.search(mlp, X, T, batch_size=1.5),
                                "batch_size"),
    "infidelity noise nan": (lambda: metrics.infidelity(img_fn, X_IMG, T_IMG, X_IMG, key=KEY,
                                                        noise=NAN), "noise"),
    "max_sensitivity radius nan": (lambda: metrics.max_sensitivity(
        _saliency_fn, X_IMG, T_IMG, key=KEY, radius=NAN), "radius"),
    "local_lipschitz noise inf": (lambda: metrics.local_lipschitz_estimate(
        _saliency_fn, X_IMG, T_IMG, key=KEY, noise=INF), "noise"),
    "stability noise nan": (lambda: metrics.stability(_saliency_fn, X_IMG, T_IMG, key=KEY,
                                                      noise=NAN), "noise"),
    "effective_complexity eps nan": (lambda: metrics.effective_complexity(X_IMG, eps=NAN),
                                     "eps"),
    "imputation noise nan": (lambda: metrics.noisy_linear_imputation(
        X_IMG, jnp.zeros((2, 4, 4), bool), key=KEY, noise=NAN), "noise"),
    "ssim data_range nan": (lambda: metrics.similarity.ssim(
        jnp.ones((1, 8, 8, 1)), jnp.ones((1, 8, 8, 1)), data_range=NAN), "data_range"),
    "ssim data_range array nan": (lambda: metrics.similarity.ssim(
        jnp.ones((1, 8, 8, 1)), jnp.ones((1, 8, 8, 1)), data_range=jnp.array([NAN])),
        "data_range"),
    "softplus_relu beta nan": (lambda: metrics.softplus_relu(mlp, NAN), "beta"),
    "attack eps nan": (lambda: metrics.attack_explanation(img_fn, X_IMG, T_IMG, eps=NAN),
                       "eps"),
}


@pytest.mark.parametrize("case", sorted(_BAD_ARGUMENTS))
def test_bad_argument_raises_naming_it(case):
    call, name = _BAD_ARGUMENTS[case]
    with pytest.raises(ValueError, match=rf"(^|\W){name}\W"):
        call()


def test_orthodense_and_orthoconv_reject_bad_sizes():
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="features"):
            lx.nn.OrthoDense(features=bad).init(KEY, jnp.ones((1, 3)))
        with pytest.raises(ValueError, match="features"):
            lx.nn.OrthoConv(features=bad).init(KEY, jnp.ones((1, 4, 4, 1)))
    for bad in (0, 2.0, (3, 0), (3, True), (3, 3, 3)):
        with pytest.raises(ValueError, match="kernel_size"):
            lx.nn.OrthoConv(features=2, kernel_size=bad).init(KEY, jnp.ones((1, 4, 4, 1)))
    with pytest.raises(ValueError, match="iters"):
        lx.nn.OrthoDense(features=2, iters=0).init(KEY, jnp.ones((1, 3)))
    variables = lx.nn.OrthoConv(features=2, kernel_size=np.int64(3)).init(KEY, X_IMG)
    assert variables["params"]["kernel"].shape == (3, 3, 1, 2)


# ---------------------------------------------------------------------------------------
# 4. a NaN or infinite input gives NaN for its example
# ---------------------------------------------------------------------------------------

_ATTRIBUTIONS = {
    "saliency": lambda x, t: explain.saliency(mlp, x, t),
    "saliency per_example": lambda x, t: explain.saliency(mlp, x, t, per_example=True,
                                                          absolute=True),
    "gradient_x_input": lambda x, t: explain.gradient_x_input(mlp, x, t),
    "integrated_gradients": lambda x, t: explain.integrated_gradients(mlp, x, t, steps=4),
    "idgi": lambda x, t: explain.idgi(mlp, x, t, steps=4),
    "smoothgrad": lambda x, t: explain.smoothgrad(mlp, x, t, key=KEY, samples=3),
    "vargrad": lambda x, t: explain.vargrad(mlp, x, t, key=KEY, samples=3),
    "squaregrad": lambda x, t: explain.squaregrad(mlp, x, t, key=KEY, samples=3),
    "boundary_saliency": lambda x, t: explain.boundary_saliency(mlp, x, t),
    "big": lambda x, t: explain.big(mlp, x, t, steps=4),
    "boundary_smoothgrad": lambda x, t: explain.boundary_smoothgrad(mlp, x, t, key=KEY,
                                                                    samples=3),
    "counterfactual": lambda x, t: explain.counterfactual(mlp, x, t).points,
    "counterfactual search": lambda x, t: explain.counterfactual(
        mlp, x, t, method="search", search=dict(num_eps=4, steps=3)).points,
    "boundary.search": lambda x, t: boundary.search(mlp, x, t, num_eps=4, steps=3).points,
}


def _nan_rows(a):
    return np.isnan(np.asarray(a)).reshape(a.shape[0], -1).all(axis=1).tolist()


@pytest.mark.parametrize("name", sorted(_ATTRIBUTIONS))
def test_nan_input_gives_nan_attribution(name):
    for bad in (NAN, INF):
        a = _ATTRIBUTIONS[name](X.at[1, 2].set(bad), T)
        assert a.shape == X.shape
        assert _nan_rows(a) == [False, True, False]
        assert np.isfinite(np.asarray(a)[[0, 2]]).all()


def test_nan_input_with_precomputed_boundary_gives_nan():
    found = boundary.search(mlp, X, T, num_eps=4, steps=3)
    for method in (explain.boundary_saliency, explain.big):
        assert _nan_rows(method(mlp, X_NAN, T, boundary=found))[1]
    assert _nan_rows(explain.boundary_smoothgrad(mlp, X_NAN, T, key=KEY, samples=2,
                                                 boundary=found))[1]


@pytest.mark.parametrize("method", [explain.grad_cam, explain.grad_cam_plus_plus])
def test_nan_input_gives_nan_grad_cam(method):
    x = X_IMG.at[0, 1, 1, 0].set(NAN)
    cam = method((img_features, img_head), x, T_IMG)
    assert _nan_rows(cam) == [True, False]


def test_nan_example_is_never_certified():
    b = gradient_bounds(mlp, X_NAN, T, eps=0.05)
    for array in (b.lower, b.upper, b.gradient, b.logits.lower, b.logits.upper):
        assert _nan_rows(array) == [False, True, False]
    cert = certify_explanation(b, T, k=2, sensitive=jnp.zeros(FEATURES, bool))
    assert not cert["prediction_certified"][1] and not cert["topk_stable"][1]
    assert not cert["sensitive_excluded"][1] and not cert["sign_stable"][1].any()
    assert cert["topk_certified"][1] == -1
    for name in ("change_l1", "change_l2", "change_linf", "relative_change_l2",
                 "sign_stable_fraction"):
        assert np.isnan(cert[name][1]) and np.isfinite(np.asarray(cert[name])[[0, 2]]).all()


def test_nan_logits_have_nan_radius_and_are_not_certified():
    logits = jnp.array([[3.0, 0.0, 0.0], [NAN, 0.0, 5.0], [0.0, 4.0, INF]])
    r = certify.radius(logits)
    assert np.isfinite(r[0]) and np.isnan(r[1:]).all()
    assert certify.certified_accuracy(logits, jnp.array([0, 0, 1]), 0.1) == pytest.approx(1 / 3)


# ---------------------------------------------------------------------------------------
# 5. values seen only under jit
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(_ATTRIBUTIONS))
def test_target_out_of_range_under_jit_gives_nan(name):
    a = jax.jit(_ATTRIBUTIONS[name])(X, jnp.array([T[0], CLASSES, -1]))
    assert _nan_rows(a) == [False, True, True]


def test_grad_cam_target_out_of_range_under_jit():
    cam = jax.jit(lambda x, t: explain.grad_cam((img_features, img_head), x, t))(
        X_IMG, jnp.array([CLASSES, T_IMG[1]]))
    assert _nan_rows(cam) == [True, False]


def test_negative_noise_under_jit_gives_nan():
    a = jax.jit(lambda s: explain.smoothgrad(mlp, X, T, key=KEY, samples=2, noise=s))(-0.1)
    assert np.isnan(a).all()


def test_gradient_bounds_invalid_under_jit_gives_nan():
    f = jax.jit(lambda x, t, eps: gradient_bounds(mlp, x, t, eps=eps))
    for eps in (-0.1, NAN):
        b = f(X, T, eps)
        assert np.isnan(b.lower).all() and np.isnan(b.logits.lower).all()
    b = f(X, jnp.array([T[0], CLASSES, T[2]]), 0.1)
    assert _nan_rows(b.upper) == [False, True, False]
    g = jax.jit(lambda r: gradient_bounds(mlp_params, X, T, params={"w": W1},
                                          params_box=params_box({"w": W1}, relative=r)))
    assert np.isfinite(g(0.1).lower).all() and np.isnan(g(-0.1).lower).all()


def test_certified_accuracy_invalid_under_jit_gives_nan():
    f = jax.jit(certify.certified_accuracy)
    logits = mlp(X)
    assert np.isnan(f(logits, T, -1.0))
    np.testing.assert_array_equal(np.isnan(f(logits, T, jnp.array([0.1, -1.0]))), [False, True])
    assert np.isnan(f(logits, T.at[0].set(CLASSES), 0.1))
    assert np.isnan(jax.jit(certify.radius)(logits, -1.0)).all()


_LOSSES = {
    "kr": lambda f, y: losses.kr(f[:, 0], y),
    "hinge_margin": lambda f, y: losses.hinge_margin(f[:, 0], y),
    "hkr": lambda f, y: losses.hkr(f[:, 0], y),
    "multiclass_kr": losses.multiclass_kr,
    "multiclass_hinge": losses.multiclass_hinge,
    "multiclass_hkr": losses.multiclass_hkr,
    "soft_hkr": losses.soft_hkr,
    "tau_cross_entropy": lambda f, y: losses.tau_cross_entropy(f, y, tau=2.0),
    "margin_eikonal": lambda f, y: losses.margin_eikonal(mlp, X, y),
}


@pytest.mark.parametrize("name", sorted(_LOSSES))
def test_loss_with_label_out_of_range_under_jit_is_nan(name):
    loss = jax.jit(_LOSSES[name])
    logits = mlp(X)
    good = jnp.array([0, 1, 0])
    assert np.isfinite(loss(logits, good))
    bad = CLASSES if name.startswith(("multi", "soft", "tau", "margin")) else 2
    assert np.isnan(loss(logits, good.at[1].set(bad)))
    assert np.isnan(loss(logits, good.at[2].set(-1)))


def test_margin_eikonal_nan_input_is_nan():
    assert np.isnan(losses.margin_eikonal(mlp, X_NAN, T))


# ---------------------------------------------------------------------------------------
# 6. an empty batch
# ---------------------------------------------------------------------------------------

_X0, _T0, _I0 = jnp.zeros((0, FEATURES)), jnp.zeros((0,), jnp.int32), jnp.zeros((0, 4, 4, 1))
_EMPTY = {
    "radius": (lambda: certify.radius(jnp.zeros((0, 3))), "logits"),
    "certified_accuracy": (lambda: certify.certified_accuracy(jnp.zeros((0, 3)), _T0, 0.1),
                           "logits"),
    "saliency": (lambda: explain.saliency(mlp, _X0, _T0), "x"),
    "integrated_gradients": (lambda: explain.integrated_gradients(mlp, _X0, _T0), "x"),
    "smoothgrad": (lambda: explain.smoothgrad(mlp, _X0, _T0, key=KEY), "x"),
    "counterfactual": (lambda: explain.counterfactual(mlp, _X0, _T0), "x"),
    "grad_cam": (lambda: explain.grad_cam((img_features, img_head), _I0, _T0), "x"),
    "boundary.search": (lambda: boundary.search(mlp, _X0, _T0), "x"),
    "gradient_bounds": (lambda: gradient_bounds(mlp, _X0, _T0, eps=0.1), "x"),
    "prediction_certified": (lambda: lx.bounds.prediction_certified(
        Interval(jnp.zeros((0, 3)), jnp.zeros((0, 3))), _T0), "logits"),
    "multiclass_hkr": (lambda: losses.multiclass_hkr(jnp.zeros((0, 3)), _T0), "logits"),
    "kr": (lambda: losses.kr(jnp.zeros((0,)), _T0), "logits"),
    "margin_eikonal": (lambda: losses.margin_eikonal(mlp, _X0, _T0), "x"),
    "deletion": (lambda: metrics.deletion(img_fn, _I0, _T0, _I0, steps=4), "x"),
    "road": (lambda: metrics.road(img_fn, _I0, _T0, _I0, key=KEY), "x"),
    "sparseness": (lambda: metrics.sparseness(_I0), "attributions"),
    "max_sensitivity": (lambda: metrics.max_sensitivity(_saliency_fn, _I0, _T0, key=KEY), "x"),
    "pointing_game": (lambda: metrics.pointing_game(_I0, jnp.zeros((0, 4, 4), bool)),
                      "attributions"),
    "similarity.spearman": (lambda: metrics.similarity.spearman(_I0, _I0), "a"),
    "random_logit": (lambda: metrics.random_logit(_saliency_fn, _I0, _T0, key=KEY,
                                                  num_classes=CLASSES), "x"),
    "attack_explanation": (lambda: metrics.attack_explanation(img_fn, _I0, _T0, eps=0.1), "x"),
}


@pytest.mark.parametrize("name", sorted(_EMPTY))
def test_empty_batch_raises_naming_the_batch(name):
    call, arg = _EMPTY[name]
    with pytest.raises(ValueError, match=rf"^{arg} must have at least one example"):
        call()


def test_valid_inputs_stay_finite():
    """The NaN rule leaves valid examples alone (one where on the output)."""
    np.testing.assert_array_equal(explain.saliency(mlp, X, T),
                                  jax.grad(lambda x: jnp.sum(mlp(x)[jnp.arange(3), T]))(X))
    r = certify.radius(mlp(X))
    top2 = jax.lax.top_k(mlp(X), 2)[0]
    np.testing.assert_allclose(r, (top2[:, 0] - top2[:, 1]) / math.sqrt(2), rtol=1e-6)
