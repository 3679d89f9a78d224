"""Every table, JSON file and figure the ``lipxai`` command writes (the only user of matplotlib).

Each function takes the JSON-ready results of :mod:`lipxai.apps.certify`,
:mod:`lipxai.apps.explain` and :mod:`lipxai.apps.evaluate` and computes nothing but the
layout: the numbers are the apps' own.
"""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.backend_bases import FigureCanvasBase

#: The keys of a certificates result (:func:`lipxai.apps.certify.certificates`) that feed the
#: figures of the quickstart report and stay out of ``certify.json``.
FIGURE_KEYS = ("curve", "examples")
#: The keys of an evaluation (:func:`lipxai.apps.evaluate.evaluation`) left out of ``evaluate.json``.
PER_EXAMPLE_KEYS = ("scores",)
#: What the colours of an attribution map mean (:func:`plot_explanations`).
ATTRIBUTION_NOTE = ("attribution maps (summed over channels), each scaled to its largest |value|: "
                    "red raises the predicted class's logit, blue lowers it, white is 0 "
                    "(Grad-CAM maps are >= 0; blank: no boundary point found)")


def figure_formats() -> tuple[str, ...]:
    """The file extensions (without the dot) a figure can be saved as."""
    return tuple(sorted(FigureCanvasBase.get_supported_filetypes()))


# -- tables -----------------------------------------------------------------------------------------

def certify_table(result: dict) -> str:
    """A plain-text table of :func:`lipxai.apps.certify.certificates`."""
    rows = [("clean accuracy", f"{result['clean_accuracy']:.4f}")]
    rows += [(f"certified accuracy @ L2 eps={e}", f"{v:.4f}") for e, v in result["certified_accuracy"].items()]
    rows += [("Lipschitz upper bound", f"{result['lipschitz_upper']:.6f}"),
             ("Lipschitz lower bound (attained)", f"{result['lipschitz_lower']:.6f}"),
             ("examples", str(result["n"]))]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def explanation_certify_table(result: dict) -> str:
    """A plain-text table of :func:`lipxai.apps.certify.explanation_certificates`, one row per radius."""
    head = (f"explanation certificates ({result['bounds']} bounds, L_inf box, top-{result['k']}, "
            f"{result['n']} images): "
            "eps | top-k stable | mean certified top-k | sign-stable | median rel. L2 change | "
            "certified prediction")
    rows = [f"  {e} | {v['topk_stable']:.4f} | {v['topk_certified_mean']:.2f} | "
            f"{v['sign_stable_fraction']:.4f} | {v['relative_change_l2_median']:.4g} | "
            f"{v['prediction_certified']:.4f}" for e, v in result["eps"].items()]
    return "\n".join([head, *rows])


def metrics_table(result: dict) -> str:
    """A markdown table of :func:`lipxai.apps.evaluate.evaluation`: a row per method, a
    column per metric (mean ± standard error)."""
    names = list(result["metrics"])
    arrow = {"lower": "↓", "higher": "↑"}
    head = "| method | " + " | ".join(f"{k} {arrow[result['metrics'][k]['better']]}" for k in names) + " |"
    lines = [head, "|---" * (len(names) + 1) + "|"]
    for method, per in result["results"].items():
        cells = []
        for k in names:
            s = per[k]
            cell = f"{s['mean']:.4g} ± {s['sem']:.2g}"
            cells.append(cell + (f" ({s['nan']} nan)" if s["nan"] else ""))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- result files -----------------------------------------------------------------------------------

def write_certify_json(result: dict, workdir: str, stem: str = "certify") -> str:
    """Write ``result`` (without its :data:`FIGURE_KEYS`) to ``workdir/STEM.json``
    (``certify.json``: the full run's results)."""
    path = os.path.join(workdir, f"{stem}.json")
    with open(path, "w") as f:
        json.dump({k: v for k, v in result.items() if k not in FIGURE_KEYS}, f, indent=2)
    return path


def write_evaluation(result: dict, workdir: str, stem: str = "evaluate") -> dict:
    """Write ``STEM.json`` (summary and curves), ``STEM.md`` (the table) and the plots
    ``STEM_bars.png`` and, with deletion/insertion/pixel flipping, ``STEM_curves.png``."""
    paths = dict(json=os.path.join(workdir, f"{stem}.json"), md=os.path.join(workdir, f"{stem}.md"),
                 bars=os.path.join(workdir, f"{stem}_bars.png"))
    with open(paths["json"], "w") as f:
        json.dump({k: v for k, v in result.items() if k not in PER_EXAMPLE_KEYS}, f, indent=2)
    with open(paths["md"], "w") as f:
        f.write(f"Explanation metrics on {result['n']} {result['split']} images "
                f"(mean ± standard error; ↑ higher is better, ↓ lower is better)\n\n")
        f.write(metrics_table(result) + "\n")
    plot_bars(paths["bars"], result)
    if result["curves"]:
        paths["curves"] = os.path.join(workdir, f"{stem}_curves.png")
        plot_curves(paths["curves"], result)
    return paths


# -- figures ----------------------------------------------------------------------------------------

def _image(a):
    """An image ``[H, W, C]`` as imshow takes it (grey images without their channel axis)."""
    return a.squeeze(-1) if a.shape[-1] == 1 else np.clip(a, 0, 1)


def plot_explanations(path: str, result: dict) -> None:
    """A grid of :func:`lipxai.apps.explain.explanations`: a column per image; the input with
    its prediction and margin, then a row per method.

    Attributions are summed over channels and shown on a blue-white-red scale symmetric per
    image (one colour bar, and a note saying what the colours mean: :data:`ATTRIBUTION_NOTE`);
    ``nan`` (no boundary point found) shows as blank.  Counterfactual images are shown on
    the input's grey scale with their class.
    """
    images, maps = result["images"], result["maps"]
    n, rows = images.shape[0], 1 + len(maps)
    fig, axes = plt.subplots(rows, n, figsize=(1.3 * n + 1.2, 1.45 * rows + 0.5), squeeze=False,
                             layout="constrained")
    heat_image = None
    for j in range(n):
        ax = axes[0, j]
        ax.imshow(_image(images[j]), cmap="gray", vmin=0, vmax=1)
        ok = "" if result["predictions"][j] == result["labels"][j] else f"\n(true {result['labels'][j]})"
        ax.set_title(f"{result['predictions'][j]}  m={result['margins'][j]:.2f}{ok}", fontsize=7)
        for i, (method, m) in enumerate(maps.items(), start=1):
            ax = axes[i, j]
            if method == "counterfactual":
                ax.imshow(_image(m[j]), cmap="gray", vmin=0, vmax=1)
                ax.set_title(f"-> {result['classes'][method][j]}", fontsize=7)
            else:
                heat = m[j].sum(-1)
                scale = np.nanmax(np.abs(heat)) if np.isfinite(heat).any() else 1.0
                scale = scale if scale > 0 else 1.0
                heat_image = ax.imshow(heat / scale, cmap="bwr", vmin=-1, vmax=1)
    for i, method in enumerate(maps, start=1):
        axes[i, 0].set_ylabel(method, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("input", fontsize=8)
    if heat_image is not None:
        bar = fig.colorbar(heat_image, ax=axes[1:, :], shrink=0.8, ticks=[-1, 0, 1])
        bar.ax.set_yticklabels(["-max\n(lowers)", "0", "+max\n(raises)"], fontsize=7)
        fig.supxlabel(ATTRIBUTION_NOTE, fontsize=6, wrap=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bars(path: str, result: dict) -> None:
    """One panel per metric of an evaluation, a bar per method with its standard error."""
    names, methods = list(result["metrics"]), list(result["results"])
    fig, axes = plt.subplots(1, len(names), figsize=(2.4 * len(names), 2.8), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        means = [result["results"][m][name]["mean"] for m in methods]
        sems = [result["results"][m][name]["sem"] for m in methods]
        ax.bar(range(len(methods)), means, yerr=sems, color=[f"C{i}" for i in range(len(methods))])
        ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{name} ({result['metrics'][name]['better']} is better)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(path: str, result: dict) -> None:
    """The mean score of the explained class along each faithfulness curve, per method."""
    curves = result["curves"]
    fig, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 3), squeeze=False)
    for ax, (name, per) in zip(axes[0], curves.items(), strict=True):
        for method, c in per.items():
            ax.plot(np.linspace(0, 1, len(c)), c, label=method)
        ax.set(xlabel="fraction of features", ylabel="score of the explained class", title=name)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_certified_accuracy(path: str, result: dict) -> None:
    """The certified accuracy of a certificates result along its radius grid (``curve``),
    with the clean accuracy and the certified accuracies at the command's radii."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(result["curve"]["eps"], result["curve"]["certified_accuracy"], label="certified accuracy")
    ax.axhline(result["clean_accuracy"], color="gray", ls="--", label="clean accuracy")
    for e, v in result["certified_accuracy"].items():
        ax.plot(float(e), v, "o", color="C1")
    ax.set(xlabel="L2 radius eps", ylabel="accuracy", ylim=(0, 1), title="Certified robustness (test)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_examples(path: str, images, examples: dict) -> None:
    """The first images with their prediction, margin and certified radius (``examples`` of a
    certificates result; ``images`` in [0, 1], at least as many)."""
    count = len(examples["prediction"])
    fig, axes = plt.subplots(1, count, figsize=(1.6 * count, 2.2), squeeze=False)
    for i, ax in enumerate(axes[0]):
        ax.imshow(_image(np.asarray(images[i])), cmap="gray", vmin=0, vmax=1)
        pred, label = examples["prediction"][i], examples["label"][i]
        ok = "" if pred == label else f" (true {label})"
        ax.set_title(f"pred {pred}{ok}\nmargin {examples['margin'][i]:.2f}\nradius {examples['radius'][i]:.2f}",
                     fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- the quickstart report ------------------------------------------------------------------------

def write_quickstart_report(workdir: str, *, training: dict, certificates: dict, images,
                            explanations: bool = False, evaluation: dict | None = None) -> str:
    """Write ``report.md``, ``certified_accuracy.png`` and ``examples.png`` into ``workdir``.

    ``training``: ``config`` (what was trained: the config file and its overrides),
    ``steps``, ``seconds`` (the wall time of the training command), ``loss`` (of the last
    logged window) and ``images_per_sec`` (the run's average); ``certificates``: a
    :func:`lipxai.apps.certify.certificates` result; ``images``: the images of its
    ``examples``.  The report shows ``explanations.png`` when ``explanations`` is set and the
    table of :func:`lipxai.apps.evaluate.evaluation` when given.
    """
    plot_certified_accuracy(os.path.join(workdir, "certified_accuracy.png"), certificates)
    plot_examples(os.path.join(workdir, "examples.png"), images, certificates["examples"])
    speed = (f"; last training loss {training['loss']:.4f}, {training['images_per_sec']:.0f} images/s "
             "on average." if training.get("images_per_sec") else ".")
    lines = [
        "# lipxai quickstart: a certified 1-Lipschitz MNIST classifier",
        "",
        f"Config: {training['config']}.",
        "",
        f"Trained for {training['steps']} steps in {training['seconds']:.0f} s{speed}",
        "",
        "```",
        certify_table(certificates),
        "```",
        "",
        "A prediction is certified at radius eps when its logit margin exceeds sqrt(2) L eps, with L the",
        "guaranteed Lipschitz upper bound above: no L2 perturbation smaller than eps can change it.",
        "",
        "![certified accuracy](certified_accuracy.png)",
        "",
        "![examples](examples.png)",
        "",
    ]
    if explanations:
        lines += [
            "## Explanations",
            "",
            "Per test image (columns): the input with its prediction and margin m, then the",
            "saliency map, integrated gradients, SmoothGrad, boundary-based integrated gradients",
            "(BIG, from the closest boundary point) and the optimal-transport counterfactual",
            "x - 1.1 m grad m / |grad m|^2 with the class it moves to (`lipxai explain --help`).",
            "Each attribution map is scaled to its largest absolute value: red pixels raise the",
            "predicted class's logit, blue pixels lower it, white ones do not matter.",
            "",
            "![explanations](explanations.png)",
            "",
        ]
    if evaluation is not None:
        lines += [
            "## Explanation metrics",
            "",
            f"Attributions of the predicted class on the first {evaluation['n']} test images, scored",
            "by `lipxai.metrics` (mean ± standard error; ↑ higher is better, ↓ lower is better;",
            f"sampled metrics use {evaluation['samples']} draws). `lipxai evaluate` computes more.",
            "",
            metrics_table(evaluation),
            "",
        ]
        if evaluation["curves"]:
            lines += ["![faithfulness curves](evaluate_curves.png)", ""]
    path = os.path.join(workdir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


# -- experiments (lipxai reproduce) -----------------------------------------------------------------

def markdown_table(header, rows) -> str:
    """A Markdown table from a header row and rows of cells (strings)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def plot_panels(path: str, title: str, panels: list[dict]) -> None:
    """One line plot per panel (``title``, ``xlabel``, ``ylabel``, optional ``xscale`` and
    ``linestyle`` (``"none"``: markers only, for categories on the x axis), and ``series``:
    ``{label: {"x", "y", optional "err"}}``, ``x`` numbers or category names), three panels per
    row."""
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.3 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        categories = None
        for label, s in panel["series"].items():
            x = s["x"]
            if any(isinstance(v, str) for v in x):   # categories: one tick per name
                categories, x = x, list(range(len(x)))
            ax.errorbar(x, s["y"], yerr=s.get("err"), marker="o", ms=3, capsize=2, label=label,
                        linestyle=panel.get("linestyle", "-"))
        ax.set(xlabel=panel["xlabel"], ylabel=panel["ylabel"], title=panel["title"])
        ax.set_xscale(panel.get("xscale", "linear"))   # resets the ticks: categories after it
        if categories is not None:
            ax.set_xticks(range(len(categories)), categories, rotation=20, ha="right", fontsize=7)
        ax.title.set_fontsize(9)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_experiment(folder: str, stem: str, result: dict, provenance: dict) -> dict[str, str]:
    """Write an experiment's ``STEM.md`` (provenance, findings, tables, the figure), ``STEM.json``
    (everything, with the provenance) and ``STEM.png`` (its panels) into ``folder``."""
    os.makedirs(folder, exist_ok=True)
    paths = {ext: os.path.join(folder, f"{stem}.{ext}") for ext in ("md", "json", "png")}
    plot_panels(paths["png"], result["title"], result["panels"])
    with open(paths["json"], "w") as f:
        json.dump({"provenance": provenance, **result}, f, indent=2)
    lines = [f"# {result['title']}", "",
             *(f"- {key}: `{value}`" if key == "command" else f"- {key}: {value}"
               for key, value in provenance.items()), "", "## Findings", "",
             *(f"- {text}" for text in result["findings"]), ""]
    for table in result["tables"]:
        lines += [table["caption"], "", markdown_table(table["header"], table["rows"]), ""]
    lines += [f"![{result['title']}]({stem}.png)", ""]
    with open(paths["md"], "w") as f:
        f.write("\n".join(lines))
    return paths
