"""Seed 000: the explanations of 1-Lipschitz networks (Serrurier, Mamalet, Fel, Béthune &
Boissin, "On the explainable properties of 1-Lipschitz neural networks: an optimal transport
perspective", NeurIPS 2023).

The paper's claim: a 1-Lipschitz network trained with the HKR loss has saliency maps that are
more faithful, more stable and sparser than an unconstrained network's, and its gradient
points along the optimal transport plan, so that one step ``x - t m(x) ∇m(x) / ‖∇m(x)‖²``
(:func:`lipxai.explain.counterfactual`, ``method="transport"``) crosses the decision boundary
near its closest point.  Three models per dataset (``configs/explanation_training.py``):

* ``standard/DATASET/lipschitz_cnn``: the quickstart's 1-Lipschitz CNN with soft HKR (without
  the quickstart's final eikonal phase);
* ``standard/DATASET/plain_cnn``: the same widths unconstrained, with cross-entropy;
* ``pgd_adversarial/DATASET/plain_cnn``: that network trained on PGD examples (Madry et al.
  2018), the robust unconstrained reference.

Measured on the test split: clean accuracy; on the first ``n`` images, the saliency map of the
predicted class scored by MuFidelity (↑), stability (↑), max-sensitivity (↓) and sparseness
(Gini, ↑) (:func:`lipxai.apps.evaluate.evaluation`); on the first ``cf_n`` images, the share of
transport counterfactuals (step ``t``) that change the prediction, and their L2 distance
divided by the closest boundary point's (:func:`lipxai.boundary.search`, method ``search``;
:func:`lipxai.apps.reproduce.measures.distance_ratio`), whose median is ``t`` for an exact
transport step and grows as the gradient stops pointing at the closest boundary point.

Full mode: 6 runs (2 datasets x 3 models: the 1-Lipschitz CNN's 2300 steps of 256 images, the
unconstrained CNN's 2000 steps of 128, and the same with 7-step PGD, which costs about 8 plain
steps a step and dominates), then 256 images for the metrics and 64 for the counterfactuals,
whose closest boundary points come from the search ``"all"`` (PGD ladder, DeepFool, CW and
transport, the closest per example); sized for about 1.5 to 2 hours on a 2-core CPU.
``--fast``: MNIST, 8 images, DeepFool as the search.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from lipxai import boundary, explain
from lipxai.apps.evaluate import METRICS, evaluation
from lipxai.apps.reproduce.measures import accuracy, accuracy_scope, distance_ratio
from lipxai.apps.reproduce.runs import RunSpec

NAME = "lipschitz_saliency"
TITLE = "Saliency and transport counterfactuals of 1-Lipschitz networks (Serrurier et al., NeurIPS 2023)"
#: The saliency metrics, in table order (names of :data:`lipxai.apps.evaluate.METRICS`).
METRIC_NAMES = ("mufidelity", "stability", "max_sensitivity", "sparseness")
#: ``(label, method, model)`` of the three models compared.
MODELS = (("1-Lipschitz (HKR)", "standard", "lipschitz_cnn"),
          ("unconstrained", "standard", "plain_cnn"),
          ("unconstrained + PGD", "pgd_adversarial", "plain_cnn"))

FULL = dict(accuracy_n=None, datasets=("mnist", "fashion_mnist"), n=256, samples=20, batch=64, cf_n=64, t=1.1,
            search="all")
FAST = dict(accuracy_n=256, datasets=("mnist",), n=8, samples=2, batch=8, cf_n=8, t=1.1, search="deepfool")


def specs(settings) -> list[tuple[str, str, RunSpec]]:
    """``(dataset, model label, RunSpec)`` for every run of the experiment."""
    return [(dataset, label, RunSpec(f"explanation_training.py:{method}/{dataset}/{model}", (), label))
            for dataset in settings["datasets"] for label, method, model in MODELS]


def counterfactuals(fn, x, *, t: float, search: str) -> dict:
    """Flip rate of the transport counterfactuals of ``x``'s predicted class, and their distance
    relative to the closest boundary point found by ``search`` (median over the examples where
    both exist, with the share of examples where the search found one)."""
    x = jnp.asarray(x)
    target = jnp.argmax(fn(x), axis=1)
    cf = explain.counterfactual(fn, x, target, method="transport", t=t)
    closest = boundary.search(fn, x, target, method=search)
    ratio = distance_ratio(cf.distances, cf.flipped, closest.distances, closest.success)
    found = np.asarray(closest.success)
    return dict(flip_rate=float(np.mean(np.asarray(cf.flipped))),
                distance_ratio_median=float(np.nanmedian(ratio)) if np.isfinite(ratio).any() else float("nan"),
                counterfactual_distance_median=float(np.nanmedian(np.asarray(cf.distances))),
                boundary_distance_median=float(np.median(np.asarray(closest.distances)[found]))
                if found.any() else float("nan"),
                boundary_found=float(found.mean()))


def measure(run, settings) -> dict:
    """Accuracy, the saliency metrics and the counterfactuals of one trained run."""
    x, _ = run.split("test", max(settings["n"], settings["cf_n"]))
    scores = evaluation(run.apply, x[:settings["n"]], ("saliency",), METRIC_NAMES,
                        samples=settings["samples"], batch=min(settings["batch"], settings["n"]))
    return dict(accuracy=accuracy(run, settings["accuracy_n"]),
                **{name: scores["results"]["saliency"][name]["mean"] for name in METRIC_NAMES},
                **counterfactuals(run.apply, x[:settings["cf_n"]], t=settings["t"],
                                  search=settings["search"]))


def run(settings, trained) -> dict:
    """Train (or reuse) the three models per dataset with ``trained(spec) -> Run`` and measure them."""
    results = [dict(dataset=dataset, model=label, config=spec.config, **measure(trained(spec), settings))
               for dataset, label, spec in specs(settings)]
    return dict(title=TITLE, settings=settings, results=results, tables=tables(settings, results),
                panels=panels(settings, results), findings=findings(settings, results))


_QUANTITIES = (("accuracy", "clean acc.", "higher"),
               *((m, f"{m} (saliency)", METRICS[m].better) for m in METRIC_NAMES),
               ("flip_rate", "counterfactual flip rate", "higher"),
               ("distance_ratio_median", "median distance / closest boundary", "closer to t"))
_ARROW = {"lower": "↓", "higher": "↑", "closer to t": "→ t"}


def tables(settings, results) -> list[dict]:
    """One table: a row per dataset and model."""
    header = ["data", "model", *(f"{name} {_ARROW[better]}" for _, name, better in _QUANTITIES),
              "boundary found"]
    rows = [[r["dataset"], r["model"], *(f"{r[q]:.4g}" for q, _, _ in _QUANTITIES), f"{r['boundary_found']:.3f}"]
            for r in results]
    return [dict(caption=f"Seed 0 per model. Accuracy on "
                         f"{accuracy_scope(settings['accuracy_n'])}; saliency of the predicted class "
                         f"on the first {settings['n']} test images ({settings['samples']} draws per "
                         f"sampled metric); transport counterfactuals (t = {settings['t']}) on the first "
                         f"{settings['cf_n']}, their L2 distance divided by that of the closest boundary "
                         f"point found by lipxai.boundary.search (method {settings['search']!r}) where "
                         "both exist.", header=header, rows=rows)]


def panels(settings, results) -> list[dict]:
    """A panel per quantity against the model, a series per dataset."""
    labels = [label for label, _, _ in MODELS]
    out = []
    for q, name, better in _QUANTITIES:
        unit = "fraction of test images" if q in ("accuracy", "flip_rate") else (
            "distance ratio (1: as the closest point)" if q == "distance_ratio_median" else "mean score")
        out.append(dict(title=f"{name} ({better} is better)", xlabel="model", ylabel=unit, linestyle="none",
                        series={d: dict(x=labels, y=[next(r[q] for r in results
                                                          if r["dataset"] == d and r["model"] == m)
                                                     for m in labels])
                                for d in settings["datasets"]}))
    return out


def _score(value: float, better: str, t: float) -> float:
    """``value`` oriented so that larger is better (NaN compares as not better)."""
    return {"higher": value, "lower": -value, "closer to t": -abs(value - t)}[better]


def findings(settings, results) -> list[str]:
    """Per dataset and quantity: whether the 1-Lipschitz model does better than both others (for
    the distance ratio: lies closer to the transport step ``t``)."""
    lip = MODELS[0][0]
    out = []
    for d in settings["datasets"]:
        mine = {r["model"]: r for r in results if r["dataset"] == d}
        for q, name, better in _QUANTITIES[1:]:
            values = ", ".join(f"{m} {r[q]:.4g}" for m, r in mine.items())
            best = all(_score(mine[lip][q], better, settings["t"]) > _score(r[q], better, settings["t"])
                       for m, r in mine.items() if m != lip)
            out.append(f"{d}: {name} ({better} is better): {values}; the 1-Lipschitz model is "
                       f"{'the best of the three' if best else 'not the best'}.")
        out.append(f"{d}: clean accuracy " + ", ".join(f"{m} {r['accuracy']:.4f}" for m, r in mine.items()) + ".")
    return out
