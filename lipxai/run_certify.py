"""Certify a trained run: clean and certified accuracy with the model's own Lipschitz bounds."""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from lipxai import certify, data
from lipxai._core.checks import one_of, positive_int
from lipxai.train.evaluate import accuracy_report, predict_logits


def certify_run(run, *, eps=(0.5, 1.0, 1.58), split: str = "test", n: int | None = None,
                lower_bound_examples: int = 16, seed: int = 0) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """Certificates of ``run`` on ``split`` (first ``n`` examples); returns ``(result, images, labels, logits)``.

    The radius uses the guaranteed upper bound of the model's Lipschitz constant
    (:func:`lipxai.certify.lipschitz_upper_bound`, times the normalisation's
    ``1/std``), so every certified example is certified for the function
    ``run.apply`` on [0, 1] images, not only for the nominal constant 1. The
    attained lower bound is reported beside it. ``n`` (``None``: all) must lie in ``[1, size
    of the split]``: a negative ``n`` would slice from the end.
    """
    images, labels = data.load_split(run.config.data.name, split, data_dir=run.config.data.data_dir or None)
    if n is not None:
        if positive_int("n", n) > len(images):
            raise ValueError(f"n must be in [1, {len(images)}] (the size of split {split!r}), got {n}")
        images, labels = images[:n], labels[:n]
    logits = predict_logits(jax.jit(run.apply_variables), run.variables, images)
    upper = float(certify.lipschitz_upper_bound(run.model, run.variables, (1, *images.shape[1:])))
    upper *= run.input_lipschitz_factor
    x = data.preprocess(images[:lower_bound_examples])
    # the weights as an argument, not constants: a closure over them (run.apply) is folded
    # into every compiled loop of the search
    fn = jax.tree_util.Partial(run.apply_variables, run.variables)
    lower = float(certify.lipschitz_lower_bound(fn, x, key=jax.random.PRNGKey(seed), steps=10))
    result = accuracy_report(logits, labels, eps, lipschitz=upper)
    result.update(lipschitz_upper=upper, lipschitz_lower=lower, split=split, step=run.step)
    return result, images, labels, logits


#: What ``method`` of :func:`certify_explanations` propagates, and its default batch size
#: (symbolic bounds keep (input features) x (activations) coefficients per image).
EXPLANATION_METHODS = {
    "ibp": ("interval bound propagation through the forward and backward pass", 64),
    "symbolic": ("interval bounds through the backward pass, forward values also bounded "
                 "linearly in the input (lipxai.bounds.symbolic)", 4),
}


def certify_explanations(run, eps, *, k: int = 20, split: str = "test", n: int = 256,
                         method: str = "ibp", batch_size: int | None = None, images=None) -> dict:
    """Certified robustness of the saliency maps of ``run`` over L_inf input boxes.

    For each radius in ``eps``, interval bounds on the input gradient of the predicted logit
    over ``[x - eps, x + eps] ∩ [0, 1]`` (:func:`lipxai.bounds.gradient_bounds` with
    ``method``, through the exported model) give the certificates of
    :func:`lipxai.bounds.certify_explanation`, averaged over the first ``n`` images of
    ``split``; the same boxes' forward bounds give the prediction certificates.  ``method``:
    ``"ibp"`` or ``"symbolic"`` (tighter, more memory: default ``batch_size`` 4 instead of
    64).  ``images`` (a batch ``[N, H, W, C]`` of the run's dataset) replaces the split's;
    the certificates are those of the predicted class, so no labels are needed.
    Returns ``{str(eps): {...}}`` plus the settings.
    """
    import jax.numpy as jnp

    from lipxai import bounds
    from lipxai.run_explain import check_images, exported_apply

    n = positive_int("n", n)
    if images is None:
        images, _ = data.load_split(run.config.data.name, split,
                                    data_dir=run.config.data.data_dir or None)
    else:
        check_images("images", images, data.DATASETS[run.config.data.name])
    description, default_batch = EXPLANATION_METHODS[one_of("method", method, EXPLANATION_METHODS)]
    batch_size = batch_size or default_batch
    images = images[:n]
    fn = exported_apply(run)

    @jax.jit
    def certificates(x, target, radius):
        b = bounds.gradient_bounds(fn, x, target, eps=radius, domain=(0.0, 1.0), method=method)
        return bounds.certify_explanation(b, target, k=k)

    per_eps = {}
    for radius in eps:
        parts = []
        for start in range(0, len(images), batch_size):
            x = jnp.asarray(data.preprocess(images[start:start + batch_size]))
            target = jnp.argmax(fn(x), axis=1)
            cert = certificates(x, target, jnp.float32(radius))
            parts.append({name: np.asarray(v) for name, v in cert.items() if name != "sign_stable"})
        merged = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        per_eps[str(radius)] = dict(
            topk_stable=float(merged["topk_stable"].mean()),
            topk_certified_mean=float(merged["topk_certified"].mean()),
            sign_stable_fraction=float(merged["sign_stable_fraction"].mean()),
            change_l2_median=float(np.median(merged["change_l2"])),
            relative_change_l2_median=float(np.median(merged["relative_change_l2"])),
            prediction_certified=float(merged["prediction_certified"].mean()),
        )
    return dict(norm="linf", k=k, n=len(images), explanation="saliency of the predicted logit",
                bounds=method, method=description, eps=per_eps)


def format_explanation_table(result: dict) -> str:
    """A plain-text table of :func:`certify_explanations`' averages, one row per radius."""
    head = (f"explanation certificates ({result['bounds']} bounds, L_inf box, top-{result['k']}, "
            f"{result['n']} images): "
            "eps | top-k stable | mean certified top-k | sign-stable | median rel. L2 change | "
            "certified prediction")
    rows = [f"  {e} | {v['topk_stable']:.4f} | {v['topk_certified_mean']:.2f} | "
            f"{v['sign_stable_fraction']:.4f} | {v['relative_change_l2_median']:.4g} | "
            f"{v['prediction_certified']:.4f}" for e, v in result["eps"].items()]
    return "\n".join([head, *rows])


def write_certify_json(result: dict, workdir: str, stem: str = "certify") -> str:
    """Write ``result`` to ``workdir/STEM.json`` (``certify.json``: the full run's results)."""
    path = os.path.join(workdir, f"{stem}.json")
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
