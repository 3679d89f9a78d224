"""lipxai.apps.explain: the method table, the run's (exported) model function and the figure."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lipxai.apps import explain as explain_app
from lipxai.apps import names, report
from lipxai.nn import zoo
from lipxai.train.rundir import Run


def test_method_lists_agree():
    assert tuple(explain_app.DESCRIPTIONS) == names.EXPLAIN_METHODS
    assert set(names.DEFAULT_EXPLAIN) <= set(names.EXPLAIN_METHODS)
    assert names.parse_names(" ig, saliency ", names.EXPLAIN_METHODS, "--method") == ("ig", "saliency")
    for bad in ("", "ig,shap", ","):
        with pytest.raises(ValueError, match="comma-separated list"):
            names.parse_names(bad, names.EXPLAIN_METHODS, "--method")


def _run(normalize=()):
    import ml_collections

    model = zoo.cnn(channels=(4, 8), dense=(16,))
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))
    config = ml_collections.ConfigDict({"data": {"name": "mnist", "normalize": normalize}})
    return Run(workdir="", config=config, model=model, variables=variables, step=0)


@pytest.mark.parametrize("normalize", [(), ((0.13,), (0.31,))])
def test_run_apply_is_the_models_apply(normalize):
    """``run.apply`` runs the exported model (exported once): the values and input gradients
    of the trained model with its reparametrised variables."""
    run = _run(normalize)
    x = jax.random.uniform(jax.random.PRNGKey(1), (3, 28, 28, 1))
    model = lambda z: run.apply_variables(run.variables, z)
    np.testing.assert_allclose(jax.jit(run.apply)(x), model(x), atol=1e-5)  # exported under jit
    np.testing.assert_allclose(run.apply(x), model(x), atol=1e-5)
    grad = lambda f: jax.grad(lambda z: f(z)[:, 0].sum())(x)
    np.testing.assert_allclose(grad(jax.jit(run.apply)), grad(model), atol=1e-5)
    assert run.export() is run.export()
    assert explain_app.last_spatial_layer(run.apply, x) == "layers_5"


def test_plot_explanations_handles_nan_and_counterfactuals(tmp_path):
    rng = np.random.default_rng(0)
    n = 3
    result = dict(images=rng.uniform(size=(n, 28, 28, 1)), labels=np.array([1, 2, 3]),
                  predictions=np.array([1, 2, 4]), margins=np.array([0.5, 1.0, -0.2]),
                  maps={"saliency": rng.normal(size=(n, 28, 28, 1)),
                        "big": np.full((n, 28, 28, 1), np.nan),
                        "counterfactual": rng.uniform(size=(n, 28, 28, 1))},
                  classes={"counterfactual": np.array([7, 0, 1])})
    path = tmp_path / "grid.png"
    report.plot_explanations(str(path), result)
    assert path.stat().st_size > 1000
