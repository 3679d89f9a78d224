"""Seed 003: saliency-constrained adaptive adversarial training (Xu et al., "SCAAT: improving
neural network interpretability via saliency constrained adaptive adversarial training",
BMVC 2023).

Standard training against ``scaat`` (our reading of the paper, ``lipxai.train.objectives.scaat``)
and the two baselines the paper compares with, ``pgd_adversarial`` (Madry et al. 2018) and
``saliency_guided`` (Ismail et al. 2021), on Wicker's ReLU CNN
(``configs/explanation_training.py:METHOD/DATASET/cnn``), each trained with several seeds
(``seed=N``; seed 0 is the config's own, so its standard run is the one of
``certified_explanations``).  Every trained model is measured on the first ``n`` test images,
with the saliency map of the predicted class (:func:`lipxai.apps.evaluate.evaluation`):

* clean accuracy on the whole test split (the paper's claim: SCAAT costs at most one point);
* sparseness (Gini index, higher is sparser) and complexity (entropy, lower is simpler);
* deletion (lower is better) and insertion (higher is better) areas, 28 steps;
* MuFidelity (higher is better) and max-sensitivity (lower is better), ``samples`` draws.

Each number is the mean ± standard deviation over the seeds of the per-seed means.

Full mode: 2 datasets x 4 methods x 3 seeds = 24 runs of 2000 steps of 128 images (the
config's), SCAAT and PGD costing about 6-8 standard steps each; with the evaluations it is
sized for about 1.5 to 2 hours on a 2-core CPU.  ``--fast``: MNIST, one seed, 8 images.
"""

from __future__ import annotations

from lipxai.apps.evaluate import METRICS, evaluation
from lipxai.apps.reproduce.measures import accuracy, accuracy_scope, mean_std
from lipxai.apps.reproduce.runs import RunSpec

NAME = "scaat"
TITLE = "Saliency-constrained adaptive adversarial training (Xu et al., BMVC 2023)"
#: The metrics of the saliency maps, in table order (names of :data:`lipxai.apps.evaluate.METRICS`).
METRIC_NAMES = ("sparseness", "complexity", "deletion", "insertion", "mufidelity", "max_sensitivity")
#: What the paper's claim is measured against: the most SCAAT may lose in clean accuracy.
ACCURACY_COST = 0.01

FULL = dict(accuracy_n=None, datasets=("mnist", "fashion_mnist"), model="cnn",
            methods=("standard", "scaat", "pgd_adversarial", "saliency_guided"), seeds=(0, 1, 2),
            train_overrides=(), n=256, samples=20, batch=64)
FAST = dict(accuracy_n=256, datasets=("mnist",), model="cnn",
            methods=("standard", "scaat", "pgd_adversarial", "saliency_guided"), seeds=(0,),
            train_overrides=(), n=8, samples=2, batch=8)

_ARROW = {"lower": "↓", "higher": "↑"}


def specs(settings) -> list[tuple[str, str, int, RunSpec]]:
    """``(dataset, method, seed, RunSpec)`` for every run of the experiment."""
    out = []
    for dataset in settings["datasets"]:
        for method in settings["methods"]:
            for seed in settings["seeds"]:
                overrides = (*settings["train_overrides"], *((f"seed={seed}",) if seed else ()))
                out.append((dataset, method, seed, RunSpec(
                    f"explanation_training.py:{method}/{dataset}/{settings['model']}", overrides, method)))
    return out


def measure(run, settings) -> dict:
    """Clean accuracy and the mean of each saliency metric over the first ``n`` test images."""
    x, _ = run.split("test", settings["n"])
    scores = evaluation(run.apply, x, ("saliency",), METRIC_NAMES, samples=settings["samples"],
                        batch=min(settings["batch"], settings["n"]))
    return dict(accuracy=accuracy(run, settings["accuracy_n"]),
                **{name: scores["results"]["saliency"][name]["mean"] for name in METRIC_NAMES})


def run(settings, trained) -> dict:
    """Train (or reuse) every run of ``settings`` with ``trained(spec) -> Run`` and measure it."""
    results = [dict(dataset=dataset, method=method, seed=seed, config=spec.config,
                    overrides=list(spec.overrides), **measure(trained(spec), settings))
               for dataset, method, seed, spec in specs(settings)]
    summary = summarise(settings, results)
    return dict(title=TITLE, settings=settings, results=results, summary=summary,
                tables=tables(settings, summary), panels=panels(settings, summary),
                findings=findings(settings, summary))


def summarise(settings, results) -> dict:
    """``{dataset: {method: {quantity: {"mean", "std", "n"}}}}`` over the seeds."""
    quantities = ("accuracy", *METRIC_NAMES)
    return {d: {m: {q: mean_std([r[q] for r in results if r["dataset"] == d and r["method"] == m])
                    for q in quantities}
                for m in settings["methods"]}
            for d in settings["datasets"]}


def _cell(s: dict, digits: int = 4) -> str:
    return f"{s['mean']:.{digits}g} ± {s['std']:.2g}"


def tables(settings, summary) -> list[dict]:
    """One table: a row per dataset and method, mean ± std over the seeds of each quantity."""
    header = ["data", "method", "clean acc."] + [f"{q} {_ARROW[METRICS[q].better]}" for q in METRIC_NAMES]
    rows = [[d, m, _cell(per["accuracy"]), *(_cell(per[q]) for q in METRIC_NAMES)]
            for d, methods in summary.items() for m, per in methods.items()]
    seeds = ", ".join(map(str, settings["seeds"]))
    return [dict(caption=f"Model: Wicker's CNN ({settings['model']}); seeds {seeds} (mean ± std over "
                         f"seeds). Accuracy on "
                         f"{accuracy_scope(settings['accuracy_n'])}; saliency metrics of the predicted "
                         f"class on the first {settings['n']} test images ({settings['samples']} draws "
                         "for MuFidelity and max-sensitivity, 28 steps for deletion and insertion).",
                 header=header, rows=rows)]


def panels(settings, summary) -> list[dict]:
    """A panel per quantity: mean ± std over the seeds against the training method, a series
    per dataset."""
    out = []
    for q in ("accuracy", *METRIC_NAMES):
        better = "higher" if q == "accuracy" else METRICS[q].better
        out.append(dict(title=f"{q} ({better} is better)", xlabel="training method (bars: ± std over seeds)",
                        ylabel="clean accuracy (fraction)" if q == "accuracy" else f"{q} of saliency (mean)",
                        linestyle="none",
                        series={d: dict(x=list(settings["methods"]), y=[per[m][q]["mean"] for m in settings["methods"]],
                                        err=[per[m][q]["std"] for m in settings["methods"]])
                                for d, per in summary.items()}))
    return out


def findings(settings, summary) -> list[str]:
    """The accuracy claim, and for each metric whether SCAAT improves on standard training and
    where it ranks among the methods."""
    out = []
    for d, per in summary.items():
        cost = per["standard"]["accuracy"]["mean"] - per["scaat"]["accuracy"]["mean"]
        holds = "holds" if cost <= ACCURACY_COST else "does not hold"
        out.append(f"{d}: clean accuracy standard {_cell(per['standard']['accuracy'])}, SCAAT "
                   f"{_cell(per['scaat']['accuracy'])}: SCAAT costs {100 * cost:.2f} points, so the claim "
                   f"of at most {100 * ACCURACY_COST:.0f} point {holds}.")
        for q in METRIC_NAMES:
            sign = 1.0 if METRICS[q].better == "higher" else -1.0
            ranked = sorted(settings["methods"], key=lambda m: -sign * per[m][q]["mean"])
            better = sign * (per["scaat"][q]["mean"] - per["standard"][q]["mean"]) > 0
            values = ", ".join(f"{m} {_cell(per[m][q])}" for m in settings["methods"])
            out.append(f"{d}: {q} ({METRICS[q].better} is better): {values}; SCAAT is "
                       f"{'better' if better else 'not better'} than standard and ranks "
                       f"{ranked.index('scaat') + 1} of {len(ranked)}.")
    return out
