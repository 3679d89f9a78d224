"""Seed 002: certified explanation robustness (Wicker, Heo, Costabello & Weller, "Robust
Explanation Constraints for Neural Networks", ICLR 2023).

Standard training against training with the ``certified_explanation`` term at several ε_train
and against the gradient-regularised baselines (``input_gradient_l2``, ``hessian_norm``,
``gradient_smoothness``), on Wicker's FCN and CNN (``configs/explanation_training.py``). Each
trained model is measured with lipxai's own tools:

* clean accuracy on the test split;
* the fraction of test images whose top-k saliency set (k = 5, 10, 20) is certified stable over
  the L_inf ball of radius ε_test (interval bounds through the forward and backward pass,
  :func:`lipxai.apps.certify.explanation_certificates`), and the median certified relative L2
  change of the saliency map;
* the success rate of a targeted explanation attack that pushes the saliency map toward an 8×8
  patch in the image's top-left corner (:func:`lipxai.metrics.attack_explanation` with the
  ``target_map`` objective), against the attack radius.  Our reading of "success", which the
  paper's text does not pin down: the prediction is kept and more than half of the attacked
  map's 64 largest pixels lie in the patch.

The paper's expected shape: the standard model certifies about 0% at every ε_test > 0 while the
trained models certify a large fraction; attack success falls and clean accuracy falls as
ε_train grows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lipxai import metrics
from lipxai.apps.certify import explanation_certificates, predict
from lipxai.apps.reproduce.runs import RunSpec

NAME = "certified_explanations"
TITLE = "Certified explanation robustness (Wicker et al., ICLR 2023)"
#: The side of the attack's target patch, in pixels (top-left corner of the image).
PATCH = 8

FULL = dict(datasets=("mnist", "fashion_mnist"), models=("fcn", "cnn"),
            eps_train=(0.01, 0.025, 0.05, 0.1),
            baselines=("input_gradient_l2", "hessian_norm", "gradient_smoothness"),
            eps_test=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05), ks=(5, 10, 20), n=256,
            attack_eps=(0.05, 0.1, 0.2), attack_n=64, attack_steps=50, seeds=(0,))
FAST = dict(datasets=("mnist",), models=("fcn",), eps_train=(0.05,), baselines=("input_gradient_l2",),
            eps_test=(0.001, 0.01), ks=(5,), n=8, attack_eps=(0.1,), attack_n=4, attack_steps=3,
            seeds=(0,))


def specs(settings) -> list[tuple[str, str, str, RunSpec]]:
    """``(dataset, model, method label, RunSpec)`` for every run of the experiment."""
    methods = [("standard", "standard", ())]
    methods += [("certified_explanation", f"certified ε={eps}",
                 (f"objective.terms.certified_explanation.eps={eps}",)) for eps in settings["eps_train"]]
    methods += [(b, b, ()) for b in settings["baselines"]]
    return [(dataset, model, label,
             RunSpec(f"explanation_training.py:{method}/{dataset}/{model}", overrides, label))
            for dataset in settings["datasets"] for model in settings["models"]
            for method, label, overrides in methods]


def patch_map(shape) -> np.ndarray:
    """The attack's target: 1 on the :data:`PATCH` × :data:`PATCH` top-left pixels, 0 elsewhere,
    as a pixel map ``[B, H, W]``."""
    target = np.zeros(shape[:-1], np.float32)
    target[:, :PATCH, :PATCH] = 1.0
    return target


def attack_success(fn, x, *, eps, steps, key) -> float:
    """The share of ``x`` whose saliency the target-map attack moves into the patch (module doc)."""
    target = jnp.argmax(fn(x), axis=1)
    patch = patch_map(x.shape)
    attack = metrics.attack_explanation(fn, x, target, eps=eps, objective="target_map",
                                        target_map=patch, steps=steps, key=key)
    inside = metrics.top_k_intersection(attack.explanation, patch[..., None].astype(bool),
                                        PATCH * PATCH, absolute=True)
    return float(jnp.mean(attack.prediction_kept & (inside > 0.5)))


def measure(run, settings, key) -> dict:
    """Accuracy, explanation certificates and attack success of one trained run."""
    x, labels = run.split("test")
    accuracy = float(np.mean(np.argmax(predict(run.apply, x), axis=1) == np.asarray(labels)))
    xs = x[:settings["n"]]
    topk, relative = {}, {}
    for k in settings["ks"]:
        cert = explanation_certificates(run.apply, xs, settings["eps_test"], k=k)
        topk[k] = [cert["eps"][str(e)]["topk_stable"] for e in settings["eps_test"]]
        relative = [cert["eps"][str(e)]["relative_change_l2_median"] for e in settings["eps_test"]]
    xa = jnp.asarray(x[:settings["attack_n"]])
    success = [attack_success(run.apply, xa, eps=e, steps=settings["attack_steps"], key=key)
               for e in settings["attack_eps"]]
    return dict(accuracy=accuracy, topk_stable={str(k): v for k, v in topk.items()},
                relative_change_median=relative, attack_success=success)


def run(settings, trained) -> dict:
    """Train (or reuse) every run of ``settings`` with ``trained(spec) -> Run`` and measure it."""
    key = jax.random.PRNGKey(0)
    results = []
    for dataset, model, label, spec in specs(settings):
        results.append(dict(dataset=dataset, model=model, method=label, config=spec.config,
                            overrides=list(spec.overrides), **measure(trained(spec), settings, key)))
    return dict(title=TITLE, settings=settings, results=results, tables=tables(settings, results),
                panels=panels(settings, results), findings=findings(settings, results))


def tables(settings, results) -> list[dict]:
    """One table: a row per run, clean accuracy, top-k stability at each ε_test for the largest
    k, the median relative change at the middle ε_test, attack success at each attack ε."""
    k = str(max(settings["ks"]))
    mid = len(settings["eps_test"]) // 2
    header = (["data", "model", "method", "clean acc."]
              + [f"top-{k} certified @ ε={e}" for e in settings["eps_test"]]
              + [f"median rel. change @ ε={settings['eps_test'][mid]}"]
              + [f"attack success @ ε={e}" for e in settings["attack_eps"]])
    rows = [[r["dataset"], r["model"], r["method"], f"{r['accuracy']:.4f}",
             *(f"{v:.3f}" for v in r["topk_stable"][k]), f"{r['relative_change_median'][mid]:.3g}",
             *(f"{v:.3f}" for v in r["attack_success"])] for r in results]
    return [dict(caption=f"Test split; certificates on the first {settings['n']} test images, "
                         f"the attack on the first {settings['attack_n']} ({settings['attack_steps']} "
                         "steps toward an 8×8 top-left patch).", header=header, rows=rows)]


def panels(settings, results) -> list[dict]:
    """Per dataset and model: top-k stability against ε_test, and attack success against ε."""
    k = str(max(settings["ks"]))
    out = []
    for dataset in settings["datasets"]:
        for model in settings["models"]:
            mine = [r for r in results if r["dataset"] == dataset and r["model"] == model]
            out.append(dict(title=f"{dataset} {model}: certified top-{k}", xlabel="ε_test (L_inf)",
                            ylabel=f"fraction top-{k} certified", xscale="log",
                            series={r["method"]: dict(x=list(settings["eps_test"]), y=r["topk_stable"][k])
                                    for r in mine}))
            out.append(dict(title=f"{dataset} {model}: explanation attack", xlabel="attack ε (L_inf)",
                            ylabel="attack success rate",
                            series={r["method"]: dict(x=list(settings["attack_eps"]), y=r["attack_success"])
                                    for r in mine}))
    return out


def findings(settings, results) -> list[str]:
    """The paper's three expected trends, each checked against the numbers."""
    k = str(max(settings["ks"]))
    out = []
    for dataset in settings["datasets"]:
        for model in settings["models"]:
            mine = {r["method"]: r for r in results if r["dataset"] == dataset and r["model"] == model}
            standard = mine["standard"]
            trained = [mine[f"certified ε={e}"] for e in settings["eps_train"]]
            where = f"{dataset} / {model}"
            best = max(max(r["topk_stable"][k]) for r in trained)
            out.append(f"{where}: the standard model certifies top-{k} for at most "
                       f"{max(standard['topk_stable'][k]):.1%} of the images at the ε_test grid, "
                       f"certified training for up to {best:.1%}.")
            accuracies = [standard["accuracy"]] + [r["accuracy"] for r in trained]
            falls = all(a >= b for a, b in zip(accuracies, accuracies[1:], strict=False))
            out.append(f"{where}: clean accuracy for ε_train 0, {', '.join(map(str, settings['eps_train']))}: "
                       f"{', '.join(f'{a:.3f}' for a in accuracies)} "
                       f"({'falls' if falls else 'does not fall monotonically'} as ε_train grows).")
            attack = [standard["attack_success"][-1]] + [r["attack_success"][-1] for r in trained]
            out.append(f"{where}: attack success at ε={settings['attack_eps'][-1]} for ε_train 0, "
                       f"{', '.join(map(str, settings['eps_train']))}: {', '.join(f'{a:.3f}' for a in attack)}.")
    return out
