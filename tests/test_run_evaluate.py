"""lipxai.apps.evaluate: the metric table behind ``lipxai evaluate`` and the quickstart report."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lipxai import cli, metrics
from lipxai.apps import evaluate as evaluate_app
from lipxai.apps import names, report

METRICS = ("deletion", "sparseness", "max_sensitivity")


def test_names_agree_with_the_command():
    assert tuple(evaluate_app.METRICS) == names.EVALUATE_METRICS
    assert set(names.DEFAULT_EVALUATE_METRICS) <= set(names.EVALUATE_METRICS)
    assert set(names.DEFAULT_EVALUATE_METHODS) <= set(names.ATTRIBUTION_METHODS)
    assert "counterfactual" not in names.ATTRIBUTION_METHODS
    assert names.parse_names("ig, saliency", names.ATTRIBUTION_METHODS, "--methods") == (
        "ig", "saliency")
    for bad in ("", "deletion,auc", ","):
        with pytest.raises(ValueError, match="--metrics takes a comma-separated list"):
            names.parse_names(bad, evaluate_app.METRICS, "--metrics")


def _mlp(params, z):
    w1, w2 = params
    return jnp.tanh(z.reshape(z.shape[0], -1) @ w1) @ w2


@pytest.fixture(scope="module")
def model():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    params = (jax.random.normal(k1, (64, 16)) / 8, jax.random.normal(k2, (16, 4)) / 4)
    fn = jax.tree_util.Partial(_mlp, params)
    x = jax.random.uniform(k3, (5, 8, 8, 1))
    return fn, x


@pytest.fixture(scope="module")
def evaluated(model):
    fn, x = model
    key = jax.random.PRNGKey(3)
    run = lambda batch: evaluate_app.score_attributions(fn, x, ("saliency",), METRICS,
                                                        key=key, samples=2, batch=batch)
    return run(3), run(5)


def test_scores_are_the_metrics_of_the_predicted_class_and_do_not_depend_on_the_batch(model, evaluated):
    fn, x = model
    padded, whole = evaluated
    target = jnp.argmax(fn(x), axis=1)
    a = jax.jit(jax.vmap(jax.grad(lambda xi, t: fn(xi[None])[0, t])))(x, target)
    np.testing.assert_allclose(padded["scores"]["saliency"]["sparseness"], metrics.sparseness(a), rtol=1e-5)
    for name in METRICS:
        assert padded["scores"]["saliency"][name].shape == (5,)
        np.testing.assert_allclose(padded["scores"]["saliency"][name], whole["scores"]["saliency"][name],
                                   rtol=1e-5, atol=1e-6, err_msg=name)
    # the mean deletion curve starts at the mean probability of the predicted class
    p = jax.nn.softmax(fn(x))[jnp.arange(5), target]
    curve = padded["curves"]["deletion"]["saliency"]
    assert curve.shape == (29,)
    np.testing.assert_allclose(curve[0], p.mean(), rtol=1e-5)


def test_summary_table_and_files(evaluated, tmp_path):
    scores = evaluated[0]["scores"]
    scores["saliency"]["max_sensitivity"][0] = np.nan
    summary = evaluate_app.summarise(scores)
    s = summary["saliency"]["max_sensitivity"]
    finite = scores["saliency"]["max_sensitivity"][1:]
    assert s["nan"] == 1 and s["mean"] == pytest.approx(finite.mean())
    assert s["sem"] == pytest.approx(finite.std(ddof=1) / 2)
    result = dict(n=5, split="test", samples=2,
                  metrics={k: dict(group=evaluate_app.METRICS[k].group,
                                   better=evaluate_app.METRICS[k].better) for k in METRICS},
                  results=summary,
                  curves={"deletion": {m: c.tolist() for m, c in evaluated[0]["curves"]["deletion"].items()}},
                  scores=scores)
    table = report.metrics_table(result)
    assert table.splitlines()[0] == "| method | deletion ↓ | sparseness ↑ | max_sensitivity ↓ |"
    assert "(1 nan)" in table.splitlines()[2]
    paths = report.write_evaluation(result, str(tmp_path))
    assert set(paths) == {"json", "md", "bars", "curves"}
    saved = json.loads((tmp_path / "evaluate.json").read_text())
    assert "scores" not in saved and saved["results"]["saliency"]["max_sensitivity"]["nan"] == 1
    assert (tmp_path / "evaluate_curves.png").stat().st_size > 1000


def test_command_rejects_bad_names_before_loading(tmp_path, capsys):
    assert cli.main(["evaluate", str(tmp_path), "--metrics", "auc"]) == 2
    assert "--metrics takes a comma-separated list" in capsys.readouterr().err
    assert cli.main(["evaluate", str(tmp_path), "--methods", "counterfactual"]) == 2
    assert cli.main(["evaluate", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
