"""lipxai.run_explain: the method table, the exported model function and the figure."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lipxai import cli, run_explain
from lipxai.run import Run
from lipxai.nn import zoo


def test_method_lists_agree():
    assert tuple(run_explain.METHODS) == cli.EXPLAIN_METHODS
    assert set(cli.DEFAULT_EXPLAIN) <= set(cli.EXPLAIN_METHODS)
    assert run_explain.parse_methods(" ig, saliency ") == ("ig", "saliency")
    for bad in ("", "ig,shap", ","):
        with pytest.raises(ValueError, match="comma-separated list"):
            run_explain.parse_methods(bad)


def _run(normalize=()):
    import ml_collections

    model = zoo.cnn(channels=(4, 8), dense=(16,))
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))
    config = ml_collections.ConfigDict({"data": {"name": "mnist", "normalize": normalize}})
    return Run(workdir="", config=config, model=model, variables=variables, step=0)


@pytest.mark.parametrize("normalize", [(), ((0.13,), (0.31,))])
def test_exported_apply_is_run_apply(normalize):
    run = _run(normalize)
    x = jax.random.uniform(jax.random.PRNGKey(1), (3, 28, 28, 1))
    np.testing.assert_allclose(run_explain.exported_apply(run)(x), run.apply(x), atol=1e-5)
    assert run_explain.last_spatial_layer(run_explain.exported_apply(run), x) == "layers_5"


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
    run_explain.plot_explanations(str(path), result)
    assert path.stat().st_size > 1000
