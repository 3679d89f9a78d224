"""The quickstart report: markdown with a certified-accuracy curve and example margins (matplotlib)."""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from lipxai import certify
from lipxai.run_certify import format_table
from lipxai.run_evaluate import format_table as format_metrics


def certified_accuracy_curve(logits, labels, lipschitz: float, eps_max: float = 3.0, points: int = 61):
    """``(eps, certified_accuracy)`` on a grid of L2 radii from 0 to ``eps_max``."""
    eps = np.linspace(0.0, eps_max, points).astype(np.float32)
    return eps, np.asarray(certify.certified_accuracy(logits, labels, eps, lipschitz=lipschitz))


def plot_curve(path: str, logits, labels, result: dict) -> None:
    eps, acc = certified_accuracy_curve(logits, labels, result["lipschitz_upper"])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(eps, acc, label="certified accuracy")
    ax.axhline(result["clean_accuracy"], color="gray", ls="--", label="clean accuracy")
    for e, v in result["certified_accuracy"].items():
        ax.plot(float(e), v, "o", color="C1")
    ax.set(xlabel="L2 radius eps", ylabel="accuracy", ylim=(0, 1), title="Certified robustness (test)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_examples(path: str, images, labels, logits, lipschitz: float, count: int = 8) -> None:
    radii = np.asarray(certify.radius(logits[:count], lipschitz=lipschitz))
    top2 = np.sort(logits[:count], axis=-1)[:, -2:]
    fig, axes = plt.subplots(1, count, figsize=(1.6 * count, 2.2))
    for i, ax in enumerate(axes):
        ax.imshow(images[i].squeeze(), cmap="gray")
        pred = int(np.argmax(logits[i]))
        ok = "" if pred == labels[i] else f" (true {labels[i]})"
        ax.set_title(f"pred {pred}{ok}\nmargin {top2[i, 1] - top2[i, 0]:.2f}\nradius {radii[i]:.2f}", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_quickstart_report(workdir: str, result: dict, images, labels, logits, *, train_seconds: float,
                            evaluation: dict | None = None) -> str:
    """Write ``report.md``, ``certified_accuracy.png`` and ``examples.png`` into ``workdir``
    (the report also shows ``explanations.png`` when it is there, and the table of
    explanation metrics of :func:`lipxai.run_evaluate.evaluate_run` when given)."""
    plot_curve(os.path.join(workdir, "certified_accuracy.png"), logits, labels, result)
    plot_examples(os.path.join(workdir, "examples.png"), images, labels, logits, result["lipschitz_upper"])
    last_train = _last_record(os.path.join(workdir, "metrics.jsonl"), "train")
    lines = [
        "# lipxai quickstart: a certified 1-Lipschitz MNIST classifier",
        "",
        f"Trained for {result['step']} steps in {train_seconds:.0f} s"
        + (f"; last training loss {last_train['loss']:.4f}, {last_train['images_per_sec']:.0f} images/s."
           if last_train else "."),
        "",
        "```",
        format_table(result),
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
    if os.path.exists(os.path.join(workdir, "explanations.png")):
        lines += [
            "## Explanations",
            "",
            "Per test image (columns): the input with its prediction and margin m, then the",
            "saliency map, integrated gradients, SmoothGrad, boundary-based integrated gradients",
            "(BIG, from the closest boundary point) and the optimal-transport counterfactual",
            "x - 1.1 m grad m / |grad m|^2 with the class it moves to (`lipxai explain --help`).",
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
            format_metrics(evaluation),
            "",
        ]
        if os.path.exists(os.path.join(workdir, "evaluate_curves.png")):
            lines += ["![faithfulness curves](evaluate_curves.png)", ""]
    path = os.path.join(workdir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def _last_record(path: str, split: str):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    records = [r for r in records if r.get("split") == split]
    return records[-1] if records else None
