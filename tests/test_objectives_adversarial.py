"""The adversarial terms (lipxai.train.objectives.adversarial): PGD stays in its ball and its
domain and reaches the closed-form optimum of a linear objective; SCAAT's perturbation stays in
its (adaptive) mask and budget; saliency guided training replaces exactly the lowest-saliency
features; every value equals a hand computation; gradients do not flow through the attack."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lipxai.train.objectives import adversarial as adv
from lipxai.train.objectives.base import Context

B, D, C, H = 6, 12, 3, 16
DOMAIN = (0.0, 1.0)


def linear(v, x):
    return x.reshape(x.shape[0], -1) @ v["params"]["w"] + v["params"]["b"]


def mlp(v, x):
    p = v["params"]
    return jnp.tanh(x.reshape(x.shape[0], -1) @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


def linear_vars(seed=0, classes=C):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return {"params": {"w": jax.random.normal(k1, (D, classes)),
                       "b": 0.1 * jax.random.normal(k2, (classes,))}}


def mlp_vars(seed=0):
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    return {"params": {"w1": jax.random.normal(k[0], (D, H)) / np.sqrt(D),
                       "b1": 0.1 * jax.random.normal(k[1], (H,)),
                       "w2": jax.random.normal(k[2], (H, C)) / np.sqrt(H),
                       "b2": 0.1 * jax.random.normal(k[3], (C,))}}


def batch(seed=1, low=0.0, high=1.0, classes=C):
    kx, ky = jax.random.split(jax.random.PRNGKey(seed))
    x = jax.random.uniform(kx, (B, D), jnp.float32, low, high)
    return x, jax.random.randint(ky, (B,), 0, classes)


def task_loss(logits, y):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def context(apply, variables, x, y, key=None, domain=DOMAIN):
    return Context(apply=apply, variables=variables, x=x, y=y, key=key,
                   progress=jnp.float32(0.5), logits=apply(variables, x), task_loss=task_loss,
                   domain=domain)


def evaluate(term, apply, variables, x, y, key=None, domain=DOMAIN):
    """The term's value and aux, jitted as a train step would."""
    run = jax.jit(lambda v, x, y, k: term.fn(context(apply, v, x, y, k, domain)))
    return run(variables, x, y, key)


def np_kl(p_logits, q_logits):
    p_logits, q_logits = np.asarray(p_logits, np.float64), np.asarray(q_logits, np.float64)
    lp = p_logits - np.log(np.exp(p_logits).sum(-1, keepdims=True))
    lq = q_logits - np.log(np.exp(q_logits).sum(-1, keepdims=True))
    return (np.exp(lp) * (lp - lq)).sum(-1)


def np_ce(logits, y):
    logits = np.asarray(logits, np.float64)
    lse = np.log(np.exp(logits).sum(-1))
    return np.mean(lse - logits[np.arange(len(y)), np.asarray(y)])


def np_linear(v, x):
    p = v["params"]
    return np.asarray(x, np.float64) @ np.asarray(p["w"], np.float64) + np.asarray(p["b"])


def hand_saliency(apply, v, x, y):
    """|d f_y / d x| one example at a time (independent of lipxai.explain)."""
    one = lambda xi, yi: apply(v, xi[None])[0, yi]
    return np.abs(np.asarray(jax.jit(jax.vmap(jax.grad(one)))(x, y)))


def hand_gini(s):
    """The Gini index with Quantus' normalisation and 1e-7 offset, in float64."""
    a = np.sort(s / s.max(axis=1, keepdims=True) + 1e-7, axis=1)
    n = a.shape[1]
    i = np.arange(1, n + 1)
    return ((2 * i - n - 1) * a).sum(1) / (n * a.sum(1))


def hand_lowest(s, n):
    mask = np.zeros(s.shape, bool)
    for b in range(s.shape[0]):
        mask[b, np.argsort(s[b], kind="stable")[: int(n[b])]] = True
    return mask


def per_example_ce(y):
    return lambda logits: optax.softmax_cross_entropy_with_integer_labels(logits, y)


# ---------------------------------------------------------------------------------------
# PGD
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_stays_in_ball_and_domain_and_increases_the_objective(norm):
    v, (x, y) = mlp_vars(), batch()
    eps = jnp.array([0.05, 0.1, 0.2, 0.3, 0.0, 0.15]) * (1.0 if norm == "linf" else 3.0)
    model = lambda z: mlp(v, z)
    objective = per_example_ce(y)
    start = adv.ball_sample(jax.random.PRNGKey(3), x, eps, norm)
    x_adv = jax.jit(lambda x, d0: adv.pgd(model, x, objective, eps=eps, steps=10, norm=norm,
                                          delta0=d0, domain=DOMAIN))(x, start)
    delta = np.asarray(x_adv - x)
    size = np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    assert np.all(size <= np.asarray(eps) + 1e-6)
    assert np.all((np.asarray(x_adv) >= 0.0) & (np.asarray(x_adv) <= 1.0))
    gain = np.asarray(objective(model(x_adv)) - objective(model(x)))
    moved = np.asarray(eps) > 0
    assert np.all(gain[moved] > 0) and np.all(delta[~moved] == 0)


def test_ball_sample_is_inside_the_ball_and_fills_it():
    x = jnp.zeros((200, D))
    s = np.asarray(adv.ball_sample(jax.random.PRNGKey(0), x, 0.5, "linf"))
    assert np.abs(s).max() <= 0.5 and np.abs(s).max() > 0.49
    r = np.linalg.norm(np.asarray(adv.ball_sample(jax.random.PRNGKey(1), x, 0.5, "l2")), axis=1)
    # uniform in a 12-ball: P(r <= 0.5 t) = t^12, so the radii crowd near the sphere
    assert r.max() <= 0.5 + 1e-6 and np.median(r) > 0.5 * 0.5 ** (1 / 12) - 0.03


def test_pgd_linf_on_a_linear_objective_is_the_sign_solution():
    """max over the clipped box of a linear function: x + eps sign(g), clipped to the domain,
    reached from any start in the ball (the iterate moves 2.5 eps along a constant sign)."""
    v, (x, y) = linear_vars(), batch()
    other = (y + 1) % C
    w = np.asarray(v["params"]["w"])
    objective = lambda lg: (jnp.take_along_axis(lg, other[:, None], 1)
                            - jnp.take_along_axis(lg, y[:, None], 1))[:, 0]
    start = adv.ball_sample(jax.random.PRNGKey(5), x, 0.2, "linf")
    x_adv = jax.jit(lambda x, d0: adv.pgd(lambda z: linear(v, z), x, objective, eps=0.2,
                                          steps=4, delta0=d0, domain=DOMAIN))(x, start)
    g = (w[:, np.asarray(other)] - w[:, np.asarray(y)]).T
    expected = np.clip(np.asarray(x) + 0.2 * np.sign(g), 0.0, 1.0)
    np.testing.assert_allclose(np.asarray(x_adv), expected, atol=1e-6)


def test_pgd_l2_on_a_linear_objective_is_the_normalised_gradient_step():
    v, (x, y) = linear_vars(), batch()
    w = np.asarray(v["params"]["w"])
    objective = lambda lg: jnp.take_along_axis(lg, y[:, None], 1)[:, 0]
    x_adv = jax.jit(lambda x: adv.pgd(lambda z: linear(v, z), x, objective, eps=0.5, steps=3,
                                      norm="l2"))(x)
    g = w[:, np.asarray(y)].T
    expected = np.asarray(x) + 0.5 * g / np.linalg.norm(g, axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(x_adv), expected, atol=1e-5)


def test_pgd_changes_only_the_masked_features():
    """On image-shaped inputs [B, H, W, C]: the L2 ball is over each whole example."""
    v, (x, y) = mlp_vars(), batch()
    x = x.reshape(B, 2, 3, 2)
    mask = jax.random.bernoulli(jax.random.PRNGKey(2), 0.5, x.shape)
    start = adv.ball_sample(jax.random.PRNGKey(4), x, 0.2, "l2")
    x_adv = jax.jit(lambda x, d0: adv.pgd(lambda z: mlp(v, z), x, per_example_ce(y), eps=0.2,
                                          steps=5, norm="l2", delta0=d0, mask=mask))(x, start)
    delta, mask = np.asarray(x_adv - x), np.asarray(mask)
    assert np.all(delta[~mask] == 0) and np.count_nonzero(delta[mask]) == mask.sum()
    size = np.linalg.norm(delta.reshape(B, -1), axis=1)
    assert np.all(size <= 0.2 + 1e-6) and np.all(size > 0.19)


def test_pgd_adversarial_on_a_two_class_linear_model_is_the_closed_form_loss():
    """Two classes: the cross-entropy is increasing in (f_other - f_y), linear in x, so the
    L∞ PGD optimum is the sign solution and the term is weight * CE there."""
    v, (x, y) = linear_vars(classes=2), batch(classes=2)
    term = adv.pgd_adversarial(0.7, eps=0.1, steps=5)
    value, aux = evaluate(term, linear, v, x, y, jax.random.PRNGKey(9))
    w = np.asarray(v["params"]["w"])
    g = (w[:, 1 - np.asarray(y)] - w[:, np.asarray(y)]).T
    x_adv = np.clip(np.asarray(x, np.float64) + 0.1 * np.sign(g), 0.0, 1.0)
    ce = np_ce(np_linear(v, x_adv), y)
    np.testing.assert_allclose(float(value), 0.7 * ce, rtol=1e-5)
    np.testing.assert_allclose(float(aux["adv_loss"]), ce, rtol=1e-5)
    assert value.dtype == jnp.float32
    # no random start, no key: the same optimum
    value_det, _ = evaluate(adv.pgd_adversarial(0.7, eps=0.1, steps=5, random_start=False),
                            linear, v, x, y)
    np.testing.assert_allclose(float(value_det), 0.7 * ce, rtol=1e-5)


# ---------------------------------------------------------------------------------------
# TRADES
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_trades_equals_its_formula_at_its_adversarial_example(norm):
    v, (x, y) = mlp_vars(), batch()
    key = jax.random.PRNGKey(11)
    value, aux = evaluate(adv.trades(2.5, 0.1, 5, norm=norm), mlp, v, x, y, key)
    x_adv = jax.jit(lambda x: adv.trades_example(lambda z: mlp(v, z), x, mlp(v, x), key,
                                                 eps=0.1, steps=5, norm=norm, domain=DOMAIN))(x)
    kl = np_kl(mlp(v, x), mlp(v, x_adv))
    np.testing.assert_allclose(float(value), 2.5 * kl.mean(), rtol=1e-4)
    np.testing.assert_allclose(float(aux["kl"]), kl.mean(), rtol=1e-4)
    assert np.all(kl > 0)


def test_trades_attack_on_a_two_class_linear_model_ends_on_a_vertex_and_beats_sampling():
    """For two classes the KL is convex in the logit difference, itself linear in x: the ascent
    ends at x ± eps sign(w_1 - w_0), and no point of the ball has a larger KL than the best
    vertex."""
    v, (x, _) = linear_vars(classes=2), batch(low=0.3, high=0.7, classes=2)
    model = lambda z: linear(v, z)
    x_adv = jax.jit(lambda x: adv.trades_example(model, x, model(x), jax.random.PRNGKey(1),
                                                 eps=0.1, steps=6))(x)
    w = np.asarray(v["params"]["w"])
    corner = 0.1 * np.sign(w[:, 1] - w[:, 0])
    delta = np.asarray(x_adv - x)
    on_vertex = np.isclose(delta, corner, atol=1e-6).all(1) | np.isclose(delta, -corner,
                                                                           atol=1e-6).all(1)
    assert on_vertex.all()
    clean = np_linear(v, x)
    best = np.maximum(np_kl(clean, np_linear(v, x + corner)), np_kl(clean, np_linear(v, x - corner)))
    samples = adv.ball_sample(jax.random.PRNGKey(2), jnp.zeros((500, D)), 0.1, "linf")
    for b in range(B):
        kl = np_kl(np.repeat(np_linear(v, x[b:b + 1]), 500, 0), np_linear(v, x[b] + samples))
        assert kl.max() <= best[b] + 1e-9


# ---------------------------------------------------------------------------------------
# SCAAT
# ---------------------------------------------------------------------------------------


def hand_scaat_mask(apply, v, x, y, q, q_max, eps, norm, adaptive):
    s = hand_saliency(apply, v, x, y)
    q_b = q + (q_max - q) * hand_gini(s) if adaptive == "sparseness" else np.full(B, q)
    eps_b = eps * np.sqrt(q / q_b) if adaptive == "sparseness" and norm == "linf" else \
        np.full(B, eps)
    return hand_lowest(s, np.floor(q_b * D)), eps_b


@pytest.mark.parametrize("norm,adaptive", [("linf", "sparseness"), ("l2", "sparseness"),
                                           ("linf", "none")])
def test_scaat_perturbs_only_low_saliency_features_within_the_budget(norm, adaptive):
    v, (x, y) = mlp_vars(), batch()
    eps = 0.2 if norm == "linf" else 0.5
    mask, eps_b = hand_scaat_mask(mlp, v, x, y, 0.4, 0.9, eps, norm, adaptive)
    x_adv, got_mask, got_eps = jax.jit(lambda x: adv.scaat_example(
        lambda z: mlp(v, z), x, y, mlp(v, x), jax.random.PRNGKey(7), eps=eps, steps=5, q=0.4,
        q_max=0.9, norm=norm, adaptive=adaptive, domain=DOMAIN))(x)
    np.testing.assert_array_equal(np.asarray(got_mask), mask)
    np.testing.assert_allclose(np.asarray(got_eps), eps_b, rtol=1e-5)
    if adaptive == "sparseness":
        assert len(set(mask.sum(1))) > 1   # the adaptive rule really differs between examples
    delta = np.asarray(x_adv - x)
    assert np.all(delta[~mask] == 0)
    assert np.count_nonzero(delta[mask]) > 0.9 * mask.sum()
    size = np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    assert np.all(size <= eps_b + 1e-6)
    assert np.all((np.asarray(x_adv) >= 0) & (np.asarray(x_adv) <= 1))


def test_scaat_value_and_aux_equal_a_hand_computation():
    v, (x, y) = mlp_vars(), batch()
    key = jax.random.PRNGKey(3)
    term = adv.scaat(1.5, 0.1, 4, q=0.5, ce_weight=0.3)
    value, aux = evaluate(term, mlp, v, x, y, key)
    x_adv, _, _ = jax.jit(lambda x: adv.scaat_example(lambda z: mlp(v, z), x, y, mlp(v, x), key,
                                                      eps=0.1, steps=4, q=0.5,
                                                      domain=DOMAIN))(x)
    kl, ce = np_kl(mlp(v, x), mlp(v, x_adv)).mean(), np_ce(mlp(v, x_adv), y)
    np.testing.assert_allclose(float(value), 1.5 * kl + 0.3 * ce, rtol=1e-4)
    np.testing.assert_allclose(float(aux["kl"]), kl, rtol=1e-4)
    np.testing.assert_allclose(float(aux["adv_ce"]), ce, rtol=1e-5)
    hand_mask, hand_eps = hand_scaat_mask(mlp, v, x, y, 0.5, 0.9, 0.1, "linf", "sparseness")
    np.testing.assert_allclose(float(aux["masked_fraction"]), hand_mask.mean(), rtol=1e-6)
    np.testing.assert_allclose(float(aux["budget"]), hand_eps.mean(), rtol=1e-5)


# ---------------------------------------------------------------------------------------
# saliency guided training
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fill,domain", [("uniform", DOMAIN), ("low", DOMAIN),
                                         ("uniform", None)])
def test_saliency_masking_replaces_exactly_the_lowest_saliency_features(fill, domain):
    v, (x, y) = linear_vars(), batch(low=0.2, high=0.7)
    x_masked, mask = jax.jit(lambda x: adv.saliency_masking(
        lambda z: linear(v, z), x, y, jax.random.PRNGKey(0), k_fraction=0.25, fill=fill,
        domain=domain))(x)
    s = np.abs(np.asarray(v["params"]["w"])[:, np.asarray(y)].T)   # |d f_y / dx| = |w_y|
    expected = hand_lowest(s, np.full(B, 3))
    np.testing.assert_array_equal(np.asarray(mask), expected)
    x, x_masked = np.asarray(x), np.asarray(x_masked)
    np.testing.assert_array_equal(x_masked[~expected], x[~expected])
    low, high = (x.min(), x.max()) if domain is None else domain
    replaced = x_masked[expected]
    if fill == "low":
        assert np.all(replaced == low)
    else:
        assert np.all((replaced >= low) & (replaced <= high)) and np.all(replaced !=
                                                                         x[expected])


def test_saliency_guided_value_equals_a_hand_computation():
    v, (x, y) = linear_vars(), batch()
    key = jax.random.PRNGKey(4)
    value, aux = evaluate(adv.saliency_guided(0.8, k_fraction=0.5), linear, v, x, y, key)
    x_masked, _ = jax.jit(lambda x: adv.saliency_masking(lambda z: linear(v, z), x, y, key,
                                                         k_fraction=0.5, domain=DOMAIN))(x)
    kl = np_kl(np_linear(v, x), np_linear(v, x_masked)).mean()
    np.testing.assert_allclose(float(value), 0.8 * kl, rtol=1e-4)
    np.testing.assert_allclose(float(aux["kl"]), kl, rtol=1e-4)
    again, _ = evaluate(adv.saliency_guided(0.8, k_fraction=0.5), linear, v, x, y, key)
    assert float(again) == float(value)


# ---------------------------------------------------------------------------------------
# gradients, keys, hyperparameters
# ---------------------------------------------------------------------------------------


def fixed_point_loss(name, apply, x, y, key):
    """The term's loss as a function of the parameters at an adversarial input computed once
    at the given parameters (held fixed): what the gradient must be."""
    def loss(v, v0):
        model0 = lambda z: apply(v0, z)
        logits = apply(v, x)
        if name == "pgd_adversarial":
            start = adv.ball_sample(key, x, 0.3, "l2")
            x_adv = adv.pgd(model0, x, lambda lg: task_loss(lg, y), eps=0.3, steps=3,
                            norm="l2", delta0=start, domain=DOMAIN)
            return 0.5 * task_loss(apply(v, x_adv), y)
        if name == "trades":
            x_adv = adv.trades_example(model0, x, apply(v0, x), key, eps=0.3, steps=3,
                                       norm="l2", domain=DOMAIN)
            return 2.0 * jnp.mean(adv.kl_divergence(logits, apply(v, x_adv)))
        if name == "scaat":
            x_adv, _, _ = adv.scaat_example(model0, x, y, apply(v0, x), key, eps=0.3, steps=3,
                                            norm="l2", domain=DOMAIN)
            return 1.0 * jnp.mean(adv.kl_divergence(logits, apply(v, x_adv)))
        x_masked, _ = adv.saliency_masking(model0, x, y, key, domain=DOMAIN)
        return 0.7 * jnp.mean(adv.kl_divergence(logits, apply(v, x_masked)))
    return loss


#: L2 attacks: their steps g / ||g|| depend smoothly on the parameters, so a gradient leaking
#: through the attack would show (an L∞ attack's sign steps have a zero derivative anyway).
TERMS = {"pgd_adversarial": lambda: adv.pgd_adversarial(0.5, eps=0.3, steps=3, norm="l2"),
         "trades": lambda: adv.trades(2.0, 0.3, 3, norm="l2"),
         "scaat": lambda: adv.scaat(1.0, 0.3, 3, norm="l2"),
         "saliency_guided": lambda: adv.saliency_guided(0.7)}


@pytest.mark.parametrize("name", sorted(TERMS))
def test_gradient_is_the_gradient_at_a_fixed_adversarial_input(name):
    v, (x, y) = mlp_vars(), batch()
    key = jax.random.PRNGKey(6)
    term = TERMS[name]()
    assert term.name == name
    grad = jax.jit(jax.grad(lambda v: term.fn(context(mlp, v, x, y, key))[0]))(v)
    loss = fixed_point_loss(name, mlp, x, y, key)
    expected = jax.jit(jax.grad(loss))(v, v)
    for g, e in zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(expected),
                    strict=True):
        assert np.all(np.isfinite(np.asarray(g)))
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-4, atol=1e-6)
    assert any(np.abs(np.asarray(g)).max() > 0 for g in jax.tree_util.tree_leaves(grad))


@pytest.mark.parametrize("term,needs", [
    (adv.pgd_adversarial(eps=0.1, steps=2), True),
    (adv.pgd_adversarial(eps=0.1, steps=2, random_start=False), False),
    (adv.trades(1.0, 0.1, 2), True),
    (adv.scaat(1.0, 0.1, 2), True),
    (adv.saliency_guided(1.0), True),
    (adv.saliency_guided(1.0, fill="low"), False),
])
def test_needs_key_is_declared_and_enforced(term, needs):
    assert term.needs_key is needs
    v, (x, y) = linear_vars(), batch()
    if needs:
        with pytest.raises(ValueError, match="key"):
            term.fn(context(linear, v, x, y, key=None))
    else:
        value, _ = term.fn(context(linear, v, x, y, key=None))
        assert np.isfinite(float(value))


@pytest.mark.parametrize("factory,kwargs,name", [
    (adv.pgd_adversarial, dict(eps=-0.1, steps=2), "eps"),
    (adv.pgd_adversarial, dict(eps=float("nan"), steps=2), "eps"),
    (adv.pgd_adversarial, dict(weight=-1.0, eps=0.1, steps=2), "weight"),
    (adv.pgd_adversarial, dict(eps=0.1, steps=0), "steps"),
    (adv.pgd_adversarial, dict(eps=0.1, steps=2, norm="l1"), "norm"),
    (adv.pgd_adversarial, dict(eps=0.1, steps=2, step_size=0.0), "step_size"),
    (adv.pgd_adversarial, dict(eps=0.1, steps=2, random_start="yes"), "random_start"),
    (adv.trades, dict(beta=float("inf"), eps=0.1, steps=2), "beta"),
    (adv.trades, dict(beta=1.0, eps=0.1, steps=1.5), "steps"),
    (adv.scaat, dict(lam=-1.0, eps=0.1, steps=2), "lam"),
    (adv.scaat, dict(lam=1.0, eps=0.1, steps=2, q=1.0), "q"),
    (adv.scaat, dict(lam=1.0, eps=0.1, steps=2, q=0.0), "q"),
    (adv.scaat, dict(lam=1.0, eps=0.1, steps=2, q=0.6, q_max=0.5), "q_max"),
    (adv.scaat, dict(lam=1.0, eps=0.1, steps=2, ce_weight=-0.1), "ce_weight"),
    (adv.scaat, dict(lam=1.0, eps=0.1, steps=2, adaptive="margin"), "adaptive"),
    (adv.scaat, dict(lam=1.0, eps=0.1, steps=2, norm="l0"), "norm"),
    (adv.saliency_guided, dict(lam=float("nan")), "lam"),
    (adv.saliency_guided, dict(lam=1.0, k_fraction=1.5), "k_fraction"),
    (adv.saliency_guided, dict(lam=1.0, fill="zeros"), "fill"),
])
def test_bad_hyperparameters_raise_naming_the_argument(factory, kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name} "):
        factory(**kwargs)


def test_pgd_rejects_bad_arguments_naming_them():
    x = jnp.zeros((B, D))
    model, objective = (lambda z: z[:, :C]), (lambda lg: lg[:, 0])
    for kwargs, name in [(dict(eps=-1.0, steps=2), "eps"), (dict(eps=0.1, steps=0), "steps"),
                         (dict(eps=0.1, steps=2, norm="l1"), "norm"),
                         (dict(eps=0.1, steps=2, mask=jnp.ones((B, D + 1), bool)), "mask"),
                         (dict(eps=0.1, steps=2, delta0=jnp.zeros((B,))), "delta0")]:
        with pytest.raises(ValueError, match=rf"^{name} "):
            adv.pgd(model, x, objective, **kwargs)
