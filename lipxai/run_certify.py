"""Certify a trained run: clean and certified accuracy with the model's own Lipschitz bounds."""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from lipxai import certify, data
from lipxai.train.evaluate import accuracy_report, predict_logits


def certify_run(run, *, eps=(0.5, 1.0, 1.58), split: str = "test", n: int | None = None,
                lower_bound_examples: int = 16, seed: int = 0) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """Certificates of ``run`` on ``split`` (first ``n`` examples); returns ``(result, images, labels, logits)``.

    The radius uses the guaranteed upper bound of the model's Lipschitz constant
    (:func:`lipxai.certify.lipschitz_upper_bound`, times the normalisation's
    ``1/std``), so every certified example is certified for the function
    ``run.apply`` on [0, 1] images, not only for the nominal constant 1. The
    attained lower bound is reported beside it.
    """
    images, labels = data.load_split(run.config.data.name, split, data_dir=run.config.data.data_dir or None)
    if n is not None:
        images, labels = images[:n], labels[:n]
    logits = predict_logits(jax.jit(run.apply_variables), run.variables, images)
    upper = float(certify.lipschitz_upper_bound(run.model, run.variables, (1, *images.shape[1:])))
    upper *= run.input_lipschitz_factor
    x = data.preprocess(images[:lower_bound_examples])
    lower = float(certify.lipschitz_lower_bound(run.apply, x, key=jax.random.PRNGKey(seed), steps=10))
    result = accuracy_report(logits, labels, eps, lipschitz=upper)
    result.update(lipschitz_upper=upper, lipschitz_lower=lower, split=split, step=run.step)
    return result, images, labels, logits


def write_certify_json(result: dict, workdir: str) -> str:
    path = os.path.join(workdir, "certify.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    return path


def format_table(result: dict) -> str:
    """A plain-text table of the certificates."""
    rows = [("clean accuracy", f"{result['clean_accuracy']:.4f}")]
    rows += [(f"certified accuracy @ L2 eps={e}", f"{v:.4f}") for e, v in result["certified_accuracy"].items()]
    rows += [("Lipschitz upper bound", f"{result['lipschitz_upper']:.6f}"),
             ("Lipschitz lower bound (attained)", f"{result['lipschitz_lower']:.6f}"),
             ("examples", str(result["n"]))]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
