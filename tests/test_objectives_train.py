"""Objectives in training: ``make_train_step`` gives what the step did before objectives (a
hand-written copy of it below), the objective step's progress and keys, the Wicker models,
the ``objective`` config section and ``configs/explanation_training.py`` through ``lipxai train``."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lipxai as lx
from lipxai import cli, losses
from lipxai.nn import zoo
from lipxai.train import build, config as config_lib
from lipxai.train.config import ConfigError
from lipxai.train.objectives import Term
from lipxai.train.state import init_state
from lipxai.train.step import make_objective_step, make_train_step

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILY = os.path.join(REPO, "configs", "explanation_training.py")
X = jax.random.uniform(jax.random.PRNGKey(1), (4, 8, 8, 1))
Y = jnp.asarray([0, 1, 2, 1], jnp.int32)


def step_before_objectives(model, loss_fn, optimizer, eikonal_weight):
    """The train step as it was written before objectives (the reference of the compat test)."""

    def step(state, x, y):
        mutable = list(state.collections)

        def objective(params):
            variables = {"params": params, **state.collections}
            logits, updated = model.apply(variables, x, mutable=mutable)
            loss = loss_fn(logits, y)
            if eikonal_weight:
                predicted = jax.lax.stop_gradient(jnp.argmax(logits, -1))

                def apply(inputs):
                    return model.apply(variables, inputs, mutable=mutable)[0]

                loss = loss + eikonal_weight * losses.margin_eikonal(apply, x, predicted)
            return loss, (logits, updated)

        (loss, (logits, updated)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                                  opt_state=opt_state, collections={**state.collections, **updated})
        return new_state, {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == y)}

    return jax.jit(step)


@pytest.mark.parametrize("model", [
    zoo.cnn(3, (4, 8), (16,), downsample="patch"),     # the quickstart's architecture, tiny
    zoo.mlp(3, (16,), method="spectral"),              # a power-iteration collection
])
@pytest.mark.parametrize("eikonal_weight", [0.0, 5.0])
def test_make_train_step_is_the_step_before_objectives(model, eikonal_weight):
    loss_fn = lambda logits, y: losses.soft_hkr(logits, y, alpha=0.98, min_margin=0.5)  # noqa: E731
    optimizer = optax.adam(1e-2)
    new = make_train_step(model, loss_fn, optimizer, eikonal_weight=eikonal_weight)
    old = step_before_objectives(model, loss_fn, optimizer, eikonal_weight)
    a = b = init_state(model, optimizer, jax.random.PRNGKey(0), X[:1])
    for _ in range(2):
        a, metrics_a = old(a, X, Y)
        b, metrics_b = new(b, X, Y)
        assert set(metrics_b) == {"loss", "accuracy"}
        np.testing.assert_allclose(metrics_b["loss"], metrics_a["loss"], rtol=1e-6)
    for u, v in zip(jax.tree_util.tree_leaves((a.params, a.collections)),
                    jax.tree_util.tree_leaves((b.params, b.collections)), strict=True):
        np.testing.assert_allclose(v, u, rtol=1e-5, atol=1e-7)


def test_the_objective_step_passes_progress_a_key_per_step_and_the_aux():
    probe = Term("probe", lambda ctx: (jnp.float32(0), {"u": jax.random.uniform(ctx.key),
                                                        "progress": ctx.progress}), needs_key=True)
    model = zoo.unconstrained_mlp(3, (8,))
    optimizer = optax.sgd(0.1)
    step = make_objective_step(model, lx.train.objective(terms=[probe]), optimizer, num_steps=4, seed=7)
    state = init_state(model, optimizer, jax.random.PRNGKey(0), X[:1])
    for t in range(4):
        state, metrics = step(state, X, Y)
        expected = jax.random.uniform(jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(7), t), 0))
        np.testing.assert_array_equal(metrics["probe/u"], expected)
        np.testing.assert_allclose(metrics["probe/progress"], t / 4)
        assert {"loss", "accuracy", "task", "probe"} <= set(metrics)
    np.testing.assert_allclose(metrics["loss"], metrics["task"], rtol=1e-6)


def test_wickers_models_have_their_layers():
    x = jnp.zeros((2, 28, 28, 1))
    for model, shapes in [
        (zoo.unconstrained_mlp(), [(784, 128), (128,), (128, 10), (10,)]),
        (zoo.unconstrained_cnn(10, (16, 32), (100,), kernel_sizes=(4, 4), strides=(2, 1), padding="VALID",
                               pool=False),   # 28 -> 13 -> 10: 10 * 10 * 32 = 3200 features
         [(4, 4, 1, 16), (16,), (4, 4, 16, 32), (32,), (3200, 100), (100,), (100, 10), (10,)]),
    ]:
        params = model.init(jax.random.PRNGKey(0), x)["params"]
        assert model.apply({"params": params}, x).shape == (2, 10)
        assert sorted(p.shape for p in jax.tree_util.tree_leaves(params)) == sorted(shapes)
    with pytest.raises(ValueError, match="one entry per channel"):
        zoo.unconstrained_cnn(channels=(4, 8), kernel_sizes=(3,))


def family(arg, *overrides):
    return config_lib.apply_overrides(config_lib.load_config(f"{FAMILY}:{arg}"), list(overrides))


@pytest.mark.parametrize("arg", ["standard/mnist/cnn", "input_gradient_l2/fashion_mnist/fcn",
                                 "hessian_norm/mnist/lipschitz_cnn", "gradient_smoothness/mnist/cnn",
                                 "certified_explanation/mnist/fcn", "pgd_adversarial/fashion_mnist/cnn",
                                 "trades/mnist/lipschitz_cnn", "scaat/mnist/cnn",
                                 "saliency_guided/fashion_mnist/fcn"])
def test_the_config_family_validates_and_builds_its_objective(arg):
    cfg = family(arg)
    lx.train.validate_config(cfg)
    method, dataset, model = arg.split("/")
    assert cfg.data.name == dataset
    assert list(cfg.objective.terms) == ([] if method == "standard" else [method])
    assert cfg.loss.name == ("soft_hkr" if model == "lipschitz_cnn" else "cross_entropy")
    build.build_model(cfg.model)


@pytest.mark.parametrize("arg, overrides, message", [
    ("hessian_norm/mnist/cnn", ["--config.objective.terms.hessian_norm.lam=-2.0"],
     "objective.terms.hessian_norm.lam must be a finite number >= 0, got -2.0"),
    ("gradient_smoothness/mnist/fcn", ["--config.objective.terms.gradient_smoothness.eps=-0.1"],
     "objective.terms.gradient_smoothness.eps must be"),
    ("scaat/mnist/cnn", ["--config.objective.terms.scaat.q=1.5"], "objective.terms.scaat.q must"),
    ("pgd_adversarial/mnist/cnn", ["--config.objective.terms.pgd_adversarial.steps=0"],
     "objective.terms.pgd_adversarial.steps must be an integer >= 1"),
    ("certified_explanation/mnist/fcn", ["--config.objective.terms.certified_explanation.alpha=-1.0"],
     "objective.terms.certified_explanation.alpha must be"),
    ("standard/mnist/fcn", ["--config.objective.task_weight=-1.0"], "objective.task_weight must be"),
    ("standard/mnist/fcn", ["--config.objective.domain=(1.0, 0.0)"], "objective.domain must be"),
    ("standard/mnist/fcn", ["--config.loss.name=xent"], "loss.name must be one of"),
])
def test_bad_objective_values_are_one_config_error_naming_the_dotted_key(arg, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        lx.train.validate_config(family(arg, *overrides))


def test_unknown_terms_methods_and_hyperparameters_are_config_errors():
    cfg = family("standard/mnist/fcn")
    cfg.objective.terms.nope = dict(lam=1.0)
    with pytest.raises(ConfigError, match="objective.terms: unknown objective term 'nope'; known terms: "
                                          "certified_explanation, gradient_smoothness, hessian_norm, input_gradient_l2, "
                                          "margin_eikonal, pgd_adversarial, saliency_guided, scaat, trades"):
        lx.train.validate_config(cfg)
    cfg = family("input_gradient_l2/mnist/fcn")
    cfg.objective.terms.input_gradient_l2.eps = 0.1
    with pytest.raises(ConfigError, match="objective.terms.input_gradient_l2: term input_gradient_l2 has no "
                                          "hyperparameter 'eps'"):
        lx.train.validate_config(cfg)
    with pytest.raises(ConfigError, match="unknown method 'pgd'; known: standard, input_gradient_l2"):
        config_lib.load_config(f"{FAMILY}:pgd/mnist/cnn")
    with pytest.raises(ConfigError, match="METHOD/DATASET/MODEL"):
        config_lib.load_config(f"{FAMILY}:standard/mnist")
    with pytest.raises(ConfigError, match="config file not found: nowhere.py"):
        config_lib.load_config("nowhere.py:standard/mnist/cnn")


def test_terms_are_made_in_name_order_and_configs_without_objective_are_unchanged():
    cfg = family("standard/mnist/fcn")
    cfg.objective.terms = dict(input_gradient_l2=dict(lam=1.0), gradient_smoothness=dict(lam=1.0, eps=0.1))
    model = zoo.unconstrained_mlp(3, (8,))
    variables = model.init(jax.random.PRNGKey(0), X)
    key = jax.random.PRNGKey(5)
    loss, aux = build.build_objective(cfg)(model.apply, variables, X, Y, key=key)
    expected, _ = lx.train.objective(terms=[("gradient_smoothness", dict(lam=1.0, eps=0.1)),
                                            ("input_gradient_l2", dict(lam=1.0))],
                                     domain=(0.0, 1.0))(model.apply, variables, X, Y, key=key)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    plain = config_lib.load_config(os.path.join(REPO, "configs", "mnist_lip.py"))
    assert "objective" not in plain
    lx.train.validate_config(plain)
    objective = build.build_objective(plain)
    logits = jax.random.normal(jax.random.PRNGKey(2), (4, 10))
    loss, aux = objective(None, None, X, Y, logits=logits)
    np.testing.assert_allclose(loss, losses.soft_hkr(logits, Y, alpha=0.98, min_margin=2.2), rtol=1e-6)
    assert set(aux) == {"task"}


TINY = ["--config.train.num_steps=2", "--config.train.batch_size=8", "--config.train.eval_examples=16",
        "--config.train.log_every=1", "--config.train.checkpoint_every=2", "--config.train.eval_every=2"]


@pytest.mark.dataset("mnist")
@pytest.mark.parametrize("arg, extra", [
    ("standard/mnist/fcn", []),
    ("input_gradient_l2/mnist/cnn", []),
    ("hessian_norm/mnist/fcn", []),
    ("gradient_smoothness/mnist/cnn", []),
    ("certified_explanation/mnist/cnn", []),
    ("pgd_adversarial/mnist/fcn", []),
    ("trades/mnist/fcn", []),
    ("scaat/mnist/cnn", []),
    ("saliency_guided/mnist/fcn", []),
    ("input_gradient_l2/mnist/lipschitz_cnn", ["--config.model.channels=(4, 8)", "--config.model.dense=(16,)"]),
])
def test_lipxai_train_runs_each_method_config(tmp_path, capsys, arg, extra):
    workdir = tmp_path / "run"
    status = cli.main(["train", "--config", f"{FAMILY}:{arg}", "--workdir", str(workdir), *TINY, *extra])
    assert status == 0, capsys.readouterr().err
    saved = config_lib.load_json(os.path.join(workdir, "config.json"))
    assert dict(saved.objective.terms) == dict(family(arg).objective.terms)
    with open(workdir / "metrics.jsonl") as f:
        train = [r for r in map(json.loads, f) if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2]
    method = arg.split("/")[0]
    for record in train:
        assert np.isfinite(record["loss"]) and np.isfinite(record["task"])
        if method != "standard":
            assert record[method] >= 0
            np.testing.assert_allclose(record["loss"], record["task"] + record[method], rtol=1e-5)


@pytest.mark.parametrize("terms", [
    [("certified_explanation", dict(alpha=0.5, eps=0.05, gamma=0.01, kappa=0.5))],
    [("input_gradient_l2", dict(lam=2.0))],
])
def test_the_objective_step_is_the_same_with_and_without_its_cpu_convolution_rewrite(terms, monkeypatch):
    """On CPU the step's loss and gradient run through ``xla_cpu.for_train_steps``; a "gpu"
    backend (monkeypatched) compiles the step as written.  Same losses and parameters."""
    model = zoo.unconstrained_cnn(3, (4, 8), (16,), kernel_sizes=(2, 2), strides=(2, 1), padding="VALID",
                                  pool=False)   # Wicker's CNN, tiny: 8 -> 4 -> 3
    optimizer = optax.sgd(0.1)
    init = init_state(model, optimizer, jax.random.PRNGKey(0), X[:1])
    runs = {}
    for backend in ("cpu", "gpu"):
        monkeypatch.setattr(jax, "default_backend", lambda backend=backend: backend)
        step = make_objective_step(model, lx.train.objective(terms=terms), optimizer, num_steps=3)
        jaxpr = str(jax.make_jaxpr(step)(init, X, Y))
        state, losses_ = jax.tree_util.tree_map(jnp.copy, init), []
        for _ in range(3):
            state, metrics = step(state, X, Y)
            losses_.append(metrics["loss"])
        runs[backend] = jaxpr, losses_, state.params
    (cpu_jaxpr, cpu_losses, cpu_params), (gpu_jaxpr, gpu_losses, gpu_params) = runs["cpu"], runs["gpu"]
    assert cpu_jaxpr.count("rev[") > gpu_jaxpr.count("rev[")  # the small-kernel form is used
    np.testing.assert_allclose(cpu_losses, gpu_losses, rtol=1e-5)
    for u, v in zip(jax.tree_util.tree_leaves(cpu_params), jax.tree_util.tree_leaves(gpu_params), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)
