"""Evaluate the explanations of a trained run: metrics per method and mean faithfulness curves.

``lipxai evaluate RUN_DIR --methods saliency,ig --metrics deletion,stability --n 256`` explains
the first ``n`` images of a split (the predicted class, as ``lipxai explain``) with each method
and scores the attributions with each metric of :mod:`lipxai.metrics`.  Examples are processed
in batches (a progress bar counts batches x methods); random metrics draw their perturbations
from the same key for every batch, so a score does not depend on the batch an example falls in.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lipxai import metrics
from lipxai._core.checks import positive_int
from lipxai.apps.explain import attribute, check_images
from lipxai.apps.names import (
    DEFAULT_EVALUATE_METHODS,
    DEFAULT_EVALUATE_METRICS,
    EVALUATE_BATCH,
    EVALUATE_N,
    EVALUATE_SAMPLES,
)


class Inputs(NamedTuple):
    """What a metric may use: the model, a batch, its attributions and the explanation
    function that produced them (``explain_fn(x, target)``, for the robustness metrics)."""

    fn: Callable
    x: jax.Array
    target: jax.Array
    attributions: jax.Array
    explain_fn: Callable
    key: jax.Array
    samples: int


class Metric(NamedTuple):
    group: str
    better: str  # "lower" or "higher"
    compute: Callable  # Inputs -> float[B], or (float[B], curve float[B, K])


def _deletion(i):
    return metrics.deletion(i.fn, i.x, i.target, i.attributions, steps=28, return_curve=True)


def _insertion(i):
    return metrics.insertion(i.fn, i.x, i.target, i.attributions, steps=28, return_curve=True)


def _pixel_flipping(i):
    return metrics.pixel_flipping(i.fn, i.x, i.target, i.attributions, features_per_step=28,
                                  features="pixels", return_curve=True)


#: ``--metrics`` names (:data:`lipxai.apps.names.EVALUATE_METRICS`).  Deletion and insertion use 28 steps (a row of an MNIST image per
#: step) and keep their curves; the sampled metrics use ``--samples`` draws.
METRICS = {
    "deletion": Metric("faithfulness", "lower", _deletion),
    "insertion": Metric("faithfulness", "higher", _insertion),
    "pixel_flipping": Metric("faithfulness", "lower", _pixel_flipping),
    "mufidelity": Metric("faithfulness", "higher", lambda i: metrics.mufidelity(
        i.fn, i.x, i.target, i.attributions, key=i.key, samples=i.samples)),
    "infidelity": Metric("faithfulness", "lower", lambda i: metrics.infidelity(
        i.fn, i.x, i.target, i.attributions, key=i.key, samples=i.samples)),
    "completeness": Metric("faithfulness", "lower", lambda i: metrics.completeness(
        i.fn, i.x, i.target, i.attributions, relative=True)),
    "sparseness": Metric("complexity", "higher", lambda i: metrics.sparseness(i.attributions)),
    "complexity": Metric("complexity", "lower", lambda i: metrics.complexity(i.attributions)),
    "max_sensitivity": Metric("robustness", "lower", lambda i: metrics.max_sensitivity(
        i.explain_fn, i.x, i.target, key=i.key, samples=i.samples)),
    "avg_sensitivity": Metric("robustness", "lower", lambda i: metrics.avg_sensitivity(
        i.explain_fn, i.x, i.target, key=i.key, samples=i.samples)),
    "local_lipschitz": Metric("robustness", "lower", lambda i: metrics.local_lipschitz_estimate(
        i.explain_fn, i.x, i.target, key=i.key, samples=i.samples)),
    "stability": Metric("robustness", "higher", lambda i: metrics.stability(
        i.explain_fn, i.x, i.target, key=i.key, samples=i.samples)),
}

def _explain_fn(fn, method, key, search):
    """``explain_fn(x, target)`` for one method; built once per method so that the metrics'
    jitted computations (``explain_fn`` is static) compile once for all batches."""
    return lambda x, target: attribute(fn, x, target, method, key=key, search=search)[0]


class _Progress:
    """A one-line progress bar on stderr: ``done/total``, elapsed time and an estimate."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.enabled, self.start = total, 0, enabled, time.perf_counter()

    def step(self, label: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        left = elapsed / self.done * (self.total - self.done)
        width = 24
        bar = "#" * round(width * self.done / self.total)
        print(f"\r[{bar:<{width}}] {self.done}/{self.total} {label:<24} {elapsed:5.0f}s "
              f"(~{left:.0f}s left)", end="" if self.done < self.total else "\n",
              file=sys.stderr, flush=True)


def score_attributions(fn, x, methods, metric_names, *, key, samples: int = EVALUATE_SAMPLES,
                       batch: int = EVALUATE_BATCH,
                       search: str = "pgd", progress: bool = False) -> dict:
    """Score the attributions of ``fn``'s predicted class on ``x`` for every method and metric.

    Returns ``{"scores": {method: {metric: float[n]}}, "curves": {metric: {method:
    float[K]}}}`` (numpy; curves are averaged over the examples).  Every metric is
    per-example, so scores do not depend on ``batch``, except through the noise of SmoothGrad
    and VarGrad, which is drawn per batch (a different draw, not a different distribution).
    ``x`` must be a batch ``[B, H, W, C]``.
    """
    n = check_images("x", x).shape[0]
    samples, batch = positive_int("samples", samples), positive_int("batch", batch)
    k_explain, k_metric = jax.random.split(key)
    explain_fns = {m: _explain_fn(fn, m, k_explain, search) for m in methods}
    scores = {m: {name: [] for name in metric_names} for m in methods}
    curves = {name: {m: [] for m in methods} for name in metric_names}
    bar = _Progress(math.ceil(n / batch) * len(methods), progress)
    batch = min(batch, n)
    for lo in range(0, n, batch):
        # the last batch is padded with copies of its first example (dropped below), so that
        # every batch has the same shape and each metric compiles once
        real = min(batch, n - lo)
        xb = x[lo:lo + real]
        xb = jnp.concatenate([xb, jnp.repeat(xb[:1], batch - real, axis=0)])
        target = jnp.argmax(fn(xb), axis=1)
        for method in methods:
            a = explain_fns[method](xb, target)
            inputs = Inputs(fn, xb, target, a, explain_fns[method], k_metric, samples)
            for name in metric_names:
                out = METRICS[name].compute(inputs)
                if isinstance(out, tuple):
                    out, curve = out
                    curves[name][method].append(np.asarray(curve)[:real].sum(0))
                scores[method][name].append(np.asarray(out, np.float64)[:real])
            bar.step(method)
    return dict(
        scores={m: {k: np.concatenate(v) for k, v in per.items()} for m, per in scores.items()},
        curves={k: {m: np.sum(v, axis=0) / n for m, v in per.items()}
                for k, per in curves.items() if any(per.values())},
    )


def summarise(scores: dict) -> dict:
    """``{method: {metric: {"mean", "sem", "nan"}}}``: mean and standard error over the
    finite scores, and how many were not finite (e.g. stability of a constant map)."""
    out = {}
    for method, per in scores.items():
        out[method] = {}
        for name, v in per.items():
            ok = v[np.isfinite(v)]
            sem = float(ok.std(ddof=1) / np.sqrt(ok.size)) if ok.size > 1 else float("nan")
            out[method][name] = dict(mean=float(ok.mean()) if ok.size else float("nan"), sem=sem,
                                     nan=int(v.size - ok.size))
    return out


def evaluation(fn, x, methods=DEFAULT_EVALUATE_METHODS, metric_names=DEFAULT_EVALUATE_METRICS, *,
               split: str = "test", seed: int = 0, samples: int = EVALUATE_SAMPLES,
               batch: int = EVALUATE_BATCH, search: str = "pgd", progress: bool = False) -> dict:
    """:func:`score_attributions` on the images ``x`` (of ``split``, named in the result); a
    JSON-ready summary (with the mean deletion/insertion curves) plus the per-example
    ``scores`` (numpy, left out of ``evaluate.json``)."""
    out = score_attributions(fn, jnp.asarray(x), methods, metric_names, key=jax.random.PRNGKey(seed),
                             samples=samples, batch=batch, search=search, progress=progress)
    return dict(
        n=len(x), split=split, seed=seed, samples=samples, methods=list(methods),
        metrics={name: dict(group=METRICS[name].group, better=METRICS[name].better)
                 for name in metric_names},
        results=summarise(out["scores"]),
        curves={k: {m: c.tolist() for m, c in per.items()} for k, per in out["curves"].items()},
        scores=out["scores"],
    )


def evaluate_run(run, methods=DEFAULT_EVALUATE_METHODS, metric_names=DEFAULT_EVALUATE_METRICS, *,
                 n: int = EVALUATE_N, split: str = "test", **options) -> dict:
    """:func:`evaluation` of ``run.apply`` on the first ``n`` images of ``split`` (``options``:
    those of :func:`evaluation`)."""
    x, _ = run.split(split, n)
    return evaluation(run.apply, x, methods, metric_names, split=split, **options)
