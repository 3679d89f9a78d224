"""Training objectives: each regulariser equals a hand computation on a model whose input
gradient and Hessian are known in closed form (a linear and a quadratic model), composition,
keys, schedules, and one-line errors naming the bad key."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lipxai as lx
from lipxai.train import objectives
from lipxai.train.objectives import Context, Term, ramp

B, D, C = 5, 6, 3
RNG = np.random.default_rng(0)
W = jnp.asarray(RNG.normal(size=(C, D)), jnp.float32)
BIAS = jnp.asarray(RNG.normal(size=(C,)), jnp.float32)
A = RNG.normal(size=(C, D, D))
A = jnp.asarray(A + A.transpose(0, 2, 1), jnp.float32)   # symmetric: the Hessians of f_c
X = jnp.asarray(RNG.uniform(0.05, 0.95, size=(B, D)), jnp.float32)
Y = jnp.asarray([0, 2, 1, 1, 0], jnp.int32)
KEY = jax.random.PRNGKey(3)


def linear(variables, x):
    """f(x) = W x + b: input gradients are rows of W, the Hessian is 0."""
    return x @ variables["params"]["w"].T + variables["params"]["b"]


def quadratic(variables, x):
    """f_c(x) = x^T A_c x / 2 + w_c^T x: the gradient of f_c is A_c x + w_c, its Hessian A_c."""
    p = variables["params"]
    return 0.5 * jnp.einsum("bi,cij,bj->bc", x, p["a"], x) + x @ p["w"].T


VARIABLES = {"params": {"w": W, "b": BIAS, "a": A}}


def context(apply, key=KEY, domain=(0.0, 1.0)):
    logits = apply(VARIABLES, X)
    return Context(apply=apply, variables=VARIABLES, x=X, y=Y, key=key, progress=jnp.float32(0.5),
                   logits=logits, task_loss=objectives.cross_entropy, domain=domain)


def test_input_gradient_l2_is_the_mean_squared_norm_of_each_example_loss_gradient():
    value, aux = objectives.input_gradient_l2(lam=0.7).fn(context(linear))
    p = jax.nn.softmax(X @ W.T + BIAS)
    grads = (p - jax.nn.one_hot(Y, C)) @ W   # grad_x CE = W^T (softmax - e_y), per example
    expected = np.mean(np.sum(np.asarray(grads) ** 2, axis=1))
    np.testing.assert_allclose(aux["grad_sq"], expected, rtol=1e-5)
    np.testing.assert_allclose(value, 0.7 * expected, rtol=1e-5)


def test_hessian_norm_is_the_squared_norm_of_a_gaussian_hessian_vector_product():
    v = jax.random.normal(KEY, (2, B, D))
    value, aux = objectives.hessian_norm(lam=0.5, samples=2).fn(context(quadratic))
    hv = jnp.einsum("bij,sbj->sbi", A[Y], v)   # H_b v = A_{y_b} v
    expected = np.mean(np.sum(np.asarray(hv) ** 2, axis=-1))
    np.testing.assert_allclose(aux["hvp_sq"], expected, rtol=1e-4)
    np.testing.assert_allclose(value, 0.5 * expected, rtol=1e-4)
    zero, _ = objectives.hessian_norm(lam=1.0).fn(context(linear))   # a linear logit is flat
    assert float(zero) == 0.0


def test_hessian_norm_of_the_loss_uses_the_softmax_curvature():
    v = jax.random.normal(KEY, (1, B, D))[0]
    value, _ = objectives.hessian_norm(lam=1.0, of="loss").fn(context(linear))
    p = np.asarray(jax.nn.softmax(X @ W.T + BIAS), np.float64)
    w = np.asarray(W, np.float64)
    sq = []
    for b in range(B):   # Hessian of CE(Wx + b, y) in x: W^T (diag p - p p^T) W
        h = w.T @ (np.diag(p[b]) - np.outer(p[b], p[b])) @ w
        sq.append(np.sum((h @ np.asarray(v[b])) ** 2))
    np.testing.assert_allclose(value, np.mean(sq), rtol=1e-4)


def test_gradient_smoothness_is_the_gradient_change_to_a_clipped_uniform_point():
    eps = 0.1
    delta = jax.random.uniform(KEY, X.shape, X.dtype, -eps, eps)
    moved = jnp.clip(X + delta, 0.0, 1.0)
    value, aux = objectives.gradient_smoothness(lam=2.0, eps=eps).fn(context(quadratic))
    diff = jnp.einsum("bij,bj->bi", A[Y], X - moved)   # grad f_y(x) - grad f_y(x') = A_y (x - x')
    expected = np.mean(np.sum(np.asarray(diff) ** 2, axis=1))
    np.testing.assert_allclose(aux["grad_diff_sq"], expected, rtol=1e-4)
    np.testing.assert_allclose(value, 2.0 * expected, rtol=1e-4)
    # the domain clips the perturbed point (here most of the box lies outside [0.5, 1])
    clipped, _ = objectives.gradient_smoothness(lam=1.0, eps=eps).fn(context(quadratic, domain=(0.5, 1.0)))
    diff = jnp.einsum("bij,bj->bi", A[Y], X - jnp.clip(X + delta, 0.5, 1.0))
    np.testing.assert_allclose(clipped, np.mean(np.sum(np.asarray(diff) ** 2, axis=1)), rtol=1e-4)
    flat, _ = objectives.gradient_smoothness(lam=1.0, eps=eps).fn(context(linear))
    assert float(flat) == 0.0


def test_margin_eikonal_is_the_margin_gradient_norm_penalty_at_the_predicted_class():
    value, aux = objectives.margin_eikonal(weight=3.0, target=0.5).fn(context(linear))
    predicted = np.argmax(np.asarray(X @ W.T + BIAS), 1)
    norms = []
    for b, c in enumerate(predicted):
        runner_up = max((j for j in range(C) if j != c), key=lambda j: float((X @ W.T + BIAS)[b, j]))
        norms.append(np.linalg.norm(np.asarray(W[c] - W[runner_up])))
    expected = np.mean((np.asarray(norms) - 0.5) ** 2)
    np.testing.assert_allclose(aux["penalty"], expected, rtol=1e-5)
    np.testing.assert_allclose(value, 3.0 * expected, rtol=1e-5)


def test_the_objective_sums_the_weighted_task_and_terms_and_names_their_aux():
    obj = lx.train.objective("cross_entropy", [("input_gradient_l2", dict(lam=0.3)),
                                               objectives.hessian_norm(lam=0.2)], task_weight=2.0)
    loss, aux = obj(quadratic, VARIABLES, X, Y, key=KEY)
    ce = optax.softmax_cross_entropy_with_integer_labels(quadratic(VARIABLES, X), Y).mean()
    ctx = context(quadratic)
    igl, _ = objectives.input_gradient_l2(lam=0.3).fn(ctx)
    hes, _ = objectives.hessian_norm(lam=0.2).fn(
        Context(**{**ctx.__dict__, "key": jax.random.fold_in(KEY, 1)}))
    np.testing.assert_allclose(loss, 2.0 * ce + igl + hes, rtol=1e-5)
    assert set(aux) == {"task", "input_gradient_l2", "input_gradient_l2/grad_sq", "hessian_norm",
                        "hessian_norm/hvp_sq"}
    np.testing.assert_allclose(aux["task"], ce, rtol=1e-6)
    np.testing.assert_allclose(aux["hessian_norm"], hes, rtol=1e-5)
    np.testing.assert_allclose(aux["hessian_norm"], 0.2 * aux["hessian_norm/hvp_sq"], rtol=1e-6)


def test_named_and_callable_tasks_and_precomputed_logits():
    logits = quadratic(VARIABLES, X)
    hkr, _ = lx.train.objective("multiclass_hkr", task_kwargs=dict(alpha=0.5, min_margin=0.3))(
        quadratic, VARIABLES, X, Y)
    np.testing.assert_allclose(hkr, lx.losses.multiclass_hkr(logits, Y, alpha=0.5, min_margin=0.3), rtol=1e-6)
    mine, aux = lx.train.objective(lambda z, y: jnp.sum(z))(quadratic, VARIABLES, X, Y)
    np.testing.assert_allclose(mine, jnp.sum(logits), rtol=1e-6)
    given, _ = lx.train.objective()(quadratic, VARIABLES, X, Y, logits=jnp.zeros((B, C)))
    np.testing.assert_allclose(given, np.log(C), rtol=1e-6)   # the given logits, not the model's


def test_each_term_gets_its_own_key_and_the_progress():
    def probe(name):
        return Term(name, lambda ctx: (jnp.float32(0), {"u": jax.random.uniform(ctx.key),
                                                        "progress": ctx.progress}), needs_key=True)

    obj = lx.train.objective(terms=[probe("a"), probe("b")])
    _, aux = jax.jit(lambda key, progress: obj(linear, VARIABLES, X, Y, key=key, progress=progress))(KEY, 0.25)
    for i, name in enumerate("ab"):
        np.testing.assert_array_equal(aux[f"{name}/u"], jax.random.uniform(jax.random.fold_in(KEY, i)))
        np.testing.assert_allclose(aux[f"{name}/progress"], 0.25)
    with pytest.raises(ValueError, match="term b needs a key"):
        lx.train.objective(terms=[objectives.input_gradient_l2(lam=1.0), probe("b")])(linear, VARIABLES, X, Y)


def test_ramp_reaches_its_end_value():
    np.testing.assert_allclose([ramp(p, 0.4) for p in (0.0, 0.2, 0.4, 0.9, 1.0)], [0, 0.5, 1, 1, 1])
    assert float(ramp(0.0, 0.0)) == 1.0


@pytest.mark.parametrize("make, message", [
    (lambda: lx.train.objective(terms=[("nope", {})]), "unknown objective term 'nope'; known terms: certified_explanation, gradient_smoothness"),
    (lambda: lx.train.objective("nope"), "unknown task 'nope'; known tasks: cross_entropy"),
    (lambda: lx.train.objective("hkr", task_kwargs=dict(beta=1)), "task hkr has no argument 'beta'"),
    (lambda: lx.train.objective(terms=[("hessian_norm", dict(lam=-1.0))]), "lam must be a finite number >= 0"),
    (lambda: lx.train.objective(terms=[("hessian_norm", dict(lam=1.0, samples=0))]), "samples must be an integer >= 1"),
    (lambda: lx.train.objective(terms=[("hessian_norm", dict(lam=1.0, of="x"))]), "of must be one of"),
    (lambda: lx.train.objective(terms=[("gradient_smoothness", dict(lam=1.0, eps=float("nan")))]), "eps must be"),
    (lambda: lx.train.objective(terms=[("margin_eikonal", dict(weight=1.0, target=0.0))]), "target must be"),
    (lambda: lx.train.objective(terms=[("input_gradient_l2", dict(lam=1.0, eps=1.0))]),
     "term input_gradient_l2 has no hyperparameter 'eps'; known: lam"),
    (lambda: lx.train.objective(terms=[("input_gradient_l2", {})]), "needs the hyperparameter 'lam'"),
    (lambda: lx.train.objective(terms=[("input_gradient_l2", dict(lam=1.0))] * 2), "distinct names"),
    (lambda: lx.train.objective(task_weight=-1.0), "task_weight must be"),
    (lambda: lx.train.objective(domain=(1.0, 0.0)), "domain must be a pair"),
])
def test_bad_input_is_one_line_naming_the_key(make, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        make()
    assert "\n" not in str(err.value)


def test_a_users_own_optax_loop_with_a_plain_flax_model():
    model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(C)])
    params = model.init(jax.random.PRNGKey(0), X)["params"]
    obj = lx.train.objective(terms=[("gradient_smoothness", dict(lam=0.1, eps=0.05))], domain=(0.0, 1.0))
    optimizer = optax.adam(0.05)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, key):
        (loss, aux), grads = jax.value_and_grad(
            lambda p: obj(model.apply, {"params": p}, X, Y, key=key), has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for t in range(20):
        params, opt_state, loss = step(params, opt_state, jax.random.fold_in(KEY, t))
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]


def test_double_backpropagation_through_l2_norm_pooling_of_zero_windows_is_finite():
    """An all-zero window (MNIST's background) once made the second derivative NaN."""
    pool = lx.nn.L2NormPool(2)
    x = jnp.zeros((1, 4, 4, 1)).at[0, :2, :2, 0].set(jnp.asarray([[1.0, 2.0], [3.0, 4.0]]))

    def gradient_norm(scale):
        return jnp.sum(jax.grad(lambda z: jnp.sum(pool.apply({}, scale * z)))(x) ** 2)

    # the gradient is scale * (unit vector in the one non-zero window, 0 elsewhere): its squared
    # norm is scale^2, whose derivative at 2 is 4
    np.testing.assert_allclose(jax.grad(gradient_norm)(2.0), 4.0, rtol=1e-6)
