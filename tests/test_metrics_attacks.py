"""softplus_relu (a jaxpr transformation) and attacks on explanations (Ghorbani / Dombrowski).

Random numbers come from numpy, and the CNN is initialised with an ``rbg`` key: JAX's default
(threefry) generator takes seconds to compile on a loaded CPU.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _datasets import require

import lipxai as lx
from lipxai import data
from lipxai.metrics import attack_explanation, similarity, softplus_relu
from lipxai.metrics import attacks as A
from lipxai.nn import zoo
from lipxai.train import fit_cross_entropy

# ---------------------------------------------------------------------------------------
# softplus_relu
# ---------------------------------------------------------------------------------------


def _sp(z, beta):
    return jax.nn.softplus(beta * z) / beta


def _normal(seed, shape, scale=1.0):
    return jnp.asarray(scale * np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _mlp_params(d=6, h=16, c=3):
    return [(_normal(0, (d, h), d**-0.5), _normal(1, (h,), 0.1)),
            (_normal(2, (h, h), h**-0.5), _normal(3, (h,), 0.1)),
            (_normal(4, (h, c), h**-0.5), _normal(5, (c,), 0.1))]


RELUS = {
    "jax.nn.relu": jax.nn.relu,
    "flax": nn.relu,
    "maximum(z, 0)": lambda z: jnp.maximum(z, 0.0),
    "maximum(0, z)": lambda z: jnp.maximum(0, z),
    "maximum(z, zeros_like)": lambda z: jnp.maximum(z, jnp.zeros_like(z)),
    "jit(relu)": jax.jit(jax.nn.relu),
}


def _mlp(params, x, act):
    (w1, b1), (w2, b2), (w3, b3) = params
    h = act(x @ w1 + b1)
    h = jax.jit(lambda u: act(u @ w2 + b2))(h)  # a nested jit
    return h @ w3 + b3


def _saliency_norm(f):
    """``x -> ||d f(x)[:, 0] / dx||^2``: its gradient is a second derivative of ``f``."""
    return lambda x: (jax.grad(lambda z: f(z)[:, 0].sum())(x) ** 2).sum()


def test_softplus_relu_matches_hand_written_softplus():
    params, beta = _mlp_params(), 3.0
    x = _normal(6, (5, 6))
    hand = functools.partial(_mlp, params, act=lambda z: _sp(z, beta))
    gy = lambda fun: jax.grad(lambda z: fun(z)[:, 0].sum())

    @jax.jit
    def values_and_grads(x):
        out = {}
        for name, relu in RELUS.items():
            f = functools.partial(_mlp, params, act=relu)
            g = softplus_relu(f, beta)
            out[name] = (f(x), g(x), gy(g)(x))
        return out, (hand(x), gy(hand)(x))

    out, (value, grad) = values_and_grads(x)
    for name, (plain, smoothed, smoothed_grad) in out.items():
        np.testing.assert_allclose(smoothed, value, rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(smoothed_grad, grad, rtol=1e-5, atol=1e-6, err_msg=name)
        assert np.abs(np.asarray(smoothed - plain)).max() > 1e-2, name  # ReLUs replaced


def test_softplus_relu_second_order_under_jit_and_vmap():
    params, beta = _mlp_params(), 3.0
    x = _normal(6, (5, 6))
    f = functools.partial(_mlp, params, act=jax.nn.relu)
    hand = functools.partial(_mlp, params, act=lambda z: _sp(z, beta))
    g = softplus_relu(f, beta)

    @jax.jit
    def run(x):
        second = [jax.grad(_saliency_norm(fun))(x) for fun in (f, g, hand)]
        per_row = jax.vmap(jax.grad(lambda z: g(z[None])[0, 1]))(x)
        return second, per_row, jax.grad(lambda z: hand(z)[:, 1].sum())(x)

    (relu_2nd, smooth_2nd, hand_2nd), per_row, expected = run(x)
    # the gradient of ||saliency||^2: zero for the ReLU net, the softplus net's for g
    assert np.abs(np.asarray(relu_2nd)).max() == 0
    assert np.abs(np.asarray(hand_2nd)).max() > 1e-3
    np.testing.assert_allclose(smooth_2nd, hand_2nd, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(per_row, expected, rtol=1e-5, atol=1e-6)


def test_softplus_relu_converges_on_a_cnn():
    model = zoo.unconstrained_cnn(channels=(2, 4), dense=(8,))
    params = jax.jit(model.init)(jax.random.key(0, impl="rbg"), jnp.zeros((1, 12, 12, 1)))
    fn = lambda z: model.apply(params, z)
    x = jnp.asarray(np.random.default_rng(1).uniform(size=(2, 12, 12, 1)), jnp.float32)
    betas = (1.0, 30.0, 1e4)
    z = jnp.linspace(-5, 5, 101)
    outs, pointwise = jax.jit(lambda x, z: (
        [softplus_relu(fn, b)(x) - fn(x) for b in betas],
        [softplus_relu(jax.nn.relu, b)(z) - jax.nn.relu(z) for b in betas]))(x, z)
    errors = [float(jnp.abs(d).max()) for d in outs]
    assert all(a > 3 * b for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < 1e-3, errors
    # the ReLU's pointwise bound: 0 <= softplus_beta - relu <= log(2) / beta
    for beta, d in zip(betas, pointwise, strict=True):
        d = np.asarray(d)
        assert d.min() >= -1e-6 and d.max() <= np.log(2) / beta + 1e-6


def test_functions_without_relu_are_unchanged():
    w = _normal(0, (4, 3))
    i = jnp.arange(-3, 3)

    def f(x):
        pooled = lx.nn.max_pool(x.reshape(1, 2, 2, 1), (2, 2), (2, 2)).sum()
        return (jnp.tanh(x) @ w + jax.nn.softplus(x).sum() + jnp.maximum(x, 0.5).sum()
                + jnp.minimum(x, 0.0).sum() + jax.nn.logsumexp(x) + pooled
                + jnp.maximum(i, 0).sum() + jnp.maximum(x, x[::-1]).sum())

    x = jnp.array([-1.0, 0.3, 2.0, -0.2])
    g = softplus_relu(f, 2.0)
    # the very same program, so the same values and derivatives
    assert str(jax.make_jaxpr(g)(x)) == str(jax.make_jaxpr(f)(x))
    assert str(jax.make_jaxpr(jax.grad(lambda z: g(z).sum()))(x)) == str(
        jax.make_jaxpr(jax.grad(lambda z: f(z).sum()))(x))
    np.testing.assert_array_equal(jax.jit(g)(x), jax.jit(f)(x))


def test_control_flow_and_custom_derivatives():
    beta = 2.0

    @jax.custom_vjp
    def relu_vjp(z):
        return jax.nn.relu(z)

    relu_vjp.defvjp(lambda z: (relu_vjp(z), z), lambda z, ct: (ct * (z > 0),))

    def build(act, act_vjp, loop):
        def f(x):
            s, _ = jax.lax.scan(lambda c, a: (act(c * 0.9 + a), None), x[0], x)
            c = jax.lax.cond(s.sum() > -1e9, act, lambda z: z, s - 0.3)
            if loop:  # while_loop: not reverse-differentiable, checked in forward mode
                c = jax.lax.while_loop(lambda v: v[1] < 2,
                                       lambda v: (act(v[0] - 0.1), v[1] + 1), (c, 0))[0]
            return jax.checkpoint(act)(c - 0.2).sum() + act_vjp(x[1] - 0.5).sum()

        return f

    x = _normal(3, (3, 5))
    hand_act = lambda z: _sp(z, beta)

    @jax.jit
    def run(x):
        out = []
        for loop in (True, False):
            g = softplus_relu(build(jax.nn.relu, relu_vjp, loop), beta)
            hand = build(hand_act, hand_act, loop)
            d = jax.grad if not loop else jax.jacfwd
            out.append((g(x), hand(x), d(g)(x), d(hand)(x)))
        return out

    for value, expected, grad, expected_grad in run(x):
        np.testing.assert_allclose(value, expected, rtol=1e-5)
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-7)


def test_parameters_traced_under_an_outer_jit():
    params, beta = _mlp_params(), 4.0
    x = _normal(6, (5, 6))

    @jax.jit
    def smoothed(p, z):
        return softplus_relu(lambda u: _mlp(p, u, jax.nn.relu), beta)(z), _mlp(
            p, z, lambda z: _sp(z, beta))

    got, expected = smoothed(params, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_max_min_smooths_groupsort():
    beta = 5.0
    gs = lambda z: lx.nn.GroupSort(2).apply({}, z)
    x = _normal(0, (3, 8))
    assert str(jax.make_jaxpr(softplus_relu(gs, beta))(x)) == str(jax.make_jaxpr(gs)(x))
    y, y_sharp = jax.jit(lambda x: (softplus_relu(gs, beta, max_min=True)(x),
                                    softplus_relu(gs, 1e4, max_min=True)(x)))(x)
    a, b = x[:, 0::2], x[:, 1::2]
    np.testing.assert_allclose(y[:, 0::2], a - _sp(a - b, beta), rtol=1e-5, atol=1e-6)  # min
    np.testing.assert_allclose(y[:, 1::2], b + _sp(a - b, beta), rtol=1e-5, atol=1e-6)  # max
    np.testing.assert_allclose(y.sum(-1), x.sum(-1), rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(y_sharp - gs(x)).max()) < 1e-3


def test_softplus_relu_errors():
    with pytest.raises(ValueError, match="beta"):
        softplus_relu(jax.nn.relu, 0.0)
    with pytest.raises(ValueError, match="beta"):
        softplus_relu(jax.nn.relu, float("inf"))
    with pytest.raises(TypeError, match="fn must be callable"):
        softplus_relu(3, 1.0)


# ---------------------------------------------------------------------------------------
# attacks on a ReLU CNN trained on real MNIST
# ---------------------------------------------------------------------------------------

N = 16
EPS = 0.05
STEPS = 20


@functools.cache
def _mnist_cnn():
    """conv8-conv16-dense32 ReLU CNN (with max-pooling), 150 Adam steps of 64 on 2000 MNIST
    training images (about 3 s; 93% test accuracy), and the first N test images."""
    images, labels = data.load_split("mnist", "train[:2000]")
    model = zoo.unconstrained_cnn(channels=(8, 16), dense=(32,))
    params = fit_cross_entropy(model, data.preprocess(images), labels, steps=150, batch_size=64,
                               lr=3e-3, key=jax.random.key(0, impl="rbg"))
    test_images, test_labels = data.load_split("mnist", "test[:64]")
    fn = jax.jit(functools.partial(model.apply, params))
    x = jnp.asarray(data.preprocess(test_images))
    assert float(jnp.mean(jnp.argmax(fn(x), 1) == jnp.asarray(test_labels))) >= 0.85
    return fn, x[:N]


@pytest.fixture(scope="module")
def cnn():
    require("mnist")
    fn, x = _mnist_cnn()
    return fn, x, jnp.argmax(fn(x), 1)


def _random_sign_baseline(fn, x, t, eps, k):
    """Similarity after a random sign perturbation of the same size (what noise alone does),
    measured as attack_explanation does (so the measures' compilations are shared)."""
    noise = np.sign(np.random.default_rng(7).standard_normal(x.shape)).astype(np.float32)
    z = jnp.clip(x + eps * noise, 0, 1)
    h0, h = lx.explain.saliency(fn, x, t), lx.explain.saliency(fn, z, t)
    m0, m = A._pixel_map(h0), A._pixel_map(h)
    return (similarity.top_k_intersection(m0, m, k), similarity.spearman(m0, m),
            similarity.center_of_mass_shift(h, h0))


def test_topk_attack_changes_saliency_and_keeps_prediction(cnn):
    fn, x, t = cnn
    r = attack_explanation(fn, x, t, eps=EPS, steps=STEPS)
    assert r.x_adv.shape == x.shape and r.prediction_kept.shape == (N,)
    assert bool(r.prediction_kept.all())
    np.testing.assert_array_equal(jnp.argmax(fn(r.x_adv), 1), t)
    assert float(jnp.abs(r.x_adv - x).max()) <= EPS + 1e-6
    assert float(r.x_adv.min()) >= 0 and float(r.x_adv.max()) <= 1
    # the explanations are the original (unsmoothed) model's saliency maps
    np.testing.assert_allclose(r.explanation, lx.explain.saliency(fn, r.x_adv, t), atol=1e-6)
    np.testing.assert_allclose(r.original_explanation, lx.explain.saliency(fn, x, t), atol=1e-6)
    # measured: top-k intersection 0.38 (k = 79 of 784 pixels), Spearman 0.31, at most 0.67;
    # random sign noise of the same size: 0.51 and 0.40 (this small ReLU net's saliency maps
    # are fragile to noise already)
    inter, rho = float(r.top_k_intersection.mean()), float(r.spearman.mean())
    base_inter, base_rho, _ = (float(v.mean()) for v in _random_sign_baseline(fn, x, t, EPS, 79))
    assert inter < 0.45, inter
    assert inter < base_inter - 0.08, (inter, base_inter)
    assert rho < base_rho - 0.03, (rho, base_rho)
    assert float(r.top_k_intersection.max()) < 0.9  # every example lost top-k pixels


def test_center_of_mass_attack(cnn):
    fn, x, t = cnn
    r = attack_explanation(fn, x, t, eps=EPS, steps=STEPS, objective="center_of_mass")
    assert bool(r.prediction_kept.all())
    shift = float(r.center_of_mass_shift.mean())
    _, _, base = _random_sign_baseline(fn, x, t, EPS, 79)
    # measured: 1.8 pixels, random sign noise 0.78
    assert shift > 1.2 and shift > 2 * float(base.mean()), (shift, float(base.mean()))


# ---------------------------------------------------------------------------------------
# small model: independence, options and validation
# ---------------------------------------------------------------------------------------


def _tiny():
    params = _mlp_params(d=64, c=4)
    fn = lambda z: _mlp(params, z.reshape(z.shape[0], -1), jax.nn.relu)
    x = jnp.asarray(np.random.default_rng(2).uniform(size=(3, 8, 8, 1)), jnp.float32)
    return fn, x, jnp.argmax(fn(x), 1)


def test_examples_are_attacked_independently_and_eps_zero():
    fn, x, t = _tiny()
    batch = attack_explanation(fn, x, t, eps=0.1, steps=5, k=6)
    assert float(batch.top_k_intersection.mean()) < 1  # it did something
    # one at a time (the attack itself, without the similarity measures' compilation)
    kw = dict(objective="topk", steps=5, norm="linf", k=6, beta=10.0, max_min=False,
              clip=(0.0, 1.0), gamma=0.0, random_start=False)
    for i in range(3):
        one = A._attack(fn, A._SALIENCY, x[i:i + 1], t[i:i + 1], None, None,
                        jnp.float32(0.1), jnp.float32(2.5 * 0.1 / 5), True, **kw)[0]
        np.testing.assert_allclose(one[0], batch.x_adv[i], atol=1e-6)
    # with other companions, in another order
    others = jnp.asarray(np.random.default_rng(9).uniform(size=x.shape), jnp.float32)
    mixed = jnp.stack([others[0], x[2], x[0]])
    t_mixed = jnp.stack([jnp.argmax(fn(others[:1]), 1)[0], t[2], t[0]])
    again = attack_explanation(fn, mixed, t_mixed, eps=0.1, steps=5, k=6)
    np.testing.assert_allclose(again.x_adv[1:], batch.x_adv[jnp.array([2, 0])], atol=1e-6)
    np.testing.assert_allclose(again.top_k_intersection[1:],
                               batch.top_k_intersection[jnp.array([2, 0])])
    zero = attack_explanation(fn, x, t, eps=0.0, steps=5, k=6)
    np.testing.assert_array_equal(zero.x_adv, x)
    np.testing.assert_allclose(zero.top_k_intersection, 1.0)
    np.testing.assert_allclose(zero.spearman, 1.0, atol=1e-6)


def test_target_map_attack():
    fn, x, t = _tiny()
    target_map = jnp.zeros((3, 8, 8)).at[:, :3, :3].set(1.0)  # a corner square
    r = attack_explanation(fn, x, t, eps=0.3, steps=10, objective="target_map",
                           target_map=target_map, k=6)
    assert bool(r.prediction_kept.all())
    mt = A._unit_sum(target_map.reshape(3, -1))
    before = A._mse(A._pixel_map(r.original_explanation), mt)
    after = A._mse(A._pixel_map(r.explanation), mt)
    # measured: the squared distance to the target drops by 10%, 9%, 18% (this MLP's saliency
    # maps are mixtures of its 16 first-layer filters: they cannot take any shape)
    assert bool(jnp.all(after < 0.95 * before)) and float(after.mean()) < 0.92 * float(
        before.mean())
    # the explanation is evaluated on the original model
    np.testing.assert_allclose(r.explanation, lx.explain.saliency(fn, r.x_adv, t), atol=1e-6)


def test_l2_ball_random_start_and_custom_explanation():
    fn, x, t = _tiny()
    r = attack_explanation(fn, x, t, eps=0.5, steps=5, norm="l2", k=6,
                           explain=lx.explain.gradient_x_input,
                           key=jax.random.key(0, impl="rbg"))
    d = jnp.sqrt(((r.x_adv - x) ** 2).sum((1, 2, 3)))
    assert float(d.max()) <= 0.5 + 1e-5 and float(d.min()) > 0
    assert bool(r.prediction_kept.all())
    np.testing.assert_allclose(r.explanation, lx.explain.gradient_x_input(fn, r.x_adv, t),
                               atol=1e-6)


def test_bad_inputs():
    fn, x, t = _tiny()
    attack = functools.partial(attack_explanation, fn, x, t)
    with pytest.raises(ValueError, match="objective"):
        attack(eps=0.1, objective="topK")
    with pytest.raises(ValueError, match="needs a target_map"):
        attack(eps=0.1, objective="target_map")
    with pytest.raises(ValueError, match=r"target_map must have the shape"):
        attack(eps=0.1, objective="target_map", target_map=jnp.ones((3, 7, 8)))
    with pytest.raises(ValueError, match="only used by objective='target_map'"):
        attack(eps=0.1, target_map=jnp.ones((3, 8, 8)))
    with pytest.raises(ValueError, match="eps"):
        attack(eps=-0.1)
    with pytest.raises(ValueError, match="steps"):
        attack(eps=0.1, steps=0)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 64\]"):
        attack(eps=0.1, k=0)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 64\]"):
        attack(eps=0.1, k=65)
    with pytest.raises(ValueError, match="norm"):
        attack(eps=0.1, norm="l1")
    with pytest.raises(ValueError, match="explain"):
        attack(eps=0.1, explain="gradcam")
    with pytest.raises(ValueError, match="explain"):
        attack(eps=0.1, explain=lambda f, z, t: z[..., 0])
    with pytest.raises(ValueError, match="beta"):
        attack(eps=0.1, beta=0.0)
    with pytest.raises(ValueError, match="data range"):
        attack_explanation(fn, x + 1.5, t, eps=0.1)
    with pytest.raises(ValueError, match="target must lie"):
        attack_explanation(fn, x, t + 4, eps=0.1)
