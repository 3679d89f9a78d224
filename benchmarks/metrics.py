"""Seconds per image of Max-Sensitivity-50, Pixel-Flipping and Deletion: lipxai vs Quantus.

    TFDS_DATA_DIR=/path/to/tfds python benchmarks/metrics.py [--quick] [--batch N]
        [--repeats N] [--train-steps N] [--pf-step N]

The model and inputs are _torch_reference.Reference: the conv32-conv64-dense128 CNN built in
torch (seed 0), trained for --train-steps Adam steps on MNIST train (default 100) and ported to
a JAX function (the logits must agree to 1e-4 before anything is timed), on the first --batch
(default 64, Quantus' batch size; --quick: 16) real MNIST test images; targets are the
predicted classes, attributions the signed saliency maps (the same array for both libraries).

  max_sensitivity50  lipxai.metrics.max_sensitivity(samples=50, radius=0.2), explanation =
                     lipxai.explain.saliency of the JAX model, vs quantus.MaxSensitivity(
                     nr_samples=50, lower_bound=0.2) whose explain_func is the same saliency in
                     torch (autograd of the target logit): both recompute 50 explanations per
                     image.
  pixel_flipping     lipxai.metrics.pixel_flipping(features_per_step=--pf-step) vs
                     quantus.PixelFlipping(features_in_step=--pf-step) (default 4: 196 steps;
                     Quantus' default is 1), "black" baseline, softmax; the AUCs of both must
                     agree (max relative difference reported). Quantus returns the curves;
                     their area (trapezoid rule, as Quantus' AUC) is taken in the timed call.
  deletion28         lipxai.metrics.deletion(steps=28) (zeros baseline, softmax, 28 rows of
                     pixels per step: 29 points) vs quantus.PixelFlipping(features_in_step=28):
                     Quantus has no Deletion; pixel flipping 28 pixels per step on these
                     [0, 1] images with a 0 baseline is the same perturbation curve (Quantus
                     returns it; lipxai its area).

Xplique (which has Deletion and MuFidelity) needs TensorFlow and is left out when it is not
importable. lipxai calls are the public metric functions (jitted inside; compiled and warmed
up by one untimed call, blocked with jax.block_until_ready); Quantus runs on torch CPU with
torch.set_num_threads(os.cpu_count()), warmed up by one untimed call. The variants of a metric
are called once per repeat in turn (--repeats, default 3; --quick: 2); medians are reported in
seconds per image; ratio = lipxai / Quantus (< 1: lipxai faster). Other processes skew the
timings: check load_average_1min. Prints one JSON object (progress goes to stderr).
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout's lipxai
from lipxai import explain as ex
from lipxai import metrics as mx

from _common import batch_and_repeats, cnn, interleaved, max_rel_diff, timing_parser, versions  # noqa: E402
from _torch_reference import Reference, import_peers, log  # noqa: E402

SENS_SAMPLES, SENS_RADIUS, DELETION_STEPS = 50, 0.2, 28


def xplique_status():
    try:
        import xplique  # noqa: F401
    except ImportError as error:
        return f"not run: xplique is not importable ({error})"
    return "installed, not benchmarked"


def torch_saliency(torch, model):
    """Quantus' ``explain_func``: the signed input gradient of the target logit (NCHW numpy)."""

    def explain(inputs, targets, **kwargs):  # Quantus passes model= too: the same network
        z = torch.from_numpy(np.asarray(inputs, np.float32)).requires_grad_(True)
        t = torch.from_numpy(np.asarray(targets)).long()
        (g,) = torch.autograd.grad(model(z).gather(1, t[:, None]).sum(), z)
        return g.numpy()

    return explain


def quantus_call(metric, model, x_q, y, a_q, *, curve_auc=False, **extra):
    """A Quantus metric call; ``curve_auc``: the metric returns curves, integrated here by the
    trapezoid rule with unit spacing (Quantus' own AUC calls ``np.trapz``, gone from numpy 2)."""

    def call():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = np.asarray(metric(model=model, x_batch=x_q, y_batch=y, a_batch=a_q.copy(),
                                    channel_first=True, **extra), np.float64)
        return np.trapezoid(out, axis=1) if curve_auc else out

    return call


def lipxai_call(metric, *args, **kwargs):
    def call():
        return np.asarray(jax.block_until_ready(metric(*args, **kwargs)), np.float64)

    return call


def main():
    parser = timing_parser(__doc__, batch=64, repeats=3)
    parser.add_argument("--train-steps", type=int, default=100,
                        help="Adam steps on MNIST train before explaining (0: untrained weights)")
    parser.add_argument("--pf-step", type=int, default=4, help="pixels flipped per step (default 4)")
    args = parser.parse_args()
    batch, repeats = batch_and_repeats(args)
    if min(batch, repeats, args.pf_step) < 1 or args.train_steps < 0 or 784 % args.pf_step:
        parser.error("--batch, --repeats >= 1, --train-steps >= 0, --pf-step must divide 784")
    torch, quantus = import_peers("torch", "quantus")
    torch.set_num_threads(os.cpu_count())
    load_at_start = os.getloadavg()[0]
    ref = Reference(torch, batch, args.train_steps, torch.device("cpu"))
    fn, model, x, target = jax.tree_util.Partial(cnn, ref.params), ref.model, ref.x, ref.target
    x_q, y = ref.x_t.numpy(), ref.logits_t.argmax(1)
    a = ex.saliency(fn, x, target)
    a_q = np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2))
    explain_fn = jax.tree_util.Partial(ex.saliency, fn)
    key = jax.random.PRNGKey(0)

    groups = {
        "max_sensitivity50": {
            "lipxai": lipxai_call(mx.max_sensitivity, explain_fn, x, target, key=key,
                                  samples=SENS_SAMPLES, radius=SENS_RADIUS),
            "quantus": quantus_call(
                quantus.MaxSensitivity(nr_samples=SENS_SAMPLES, lower_bound=SENS_RADIUS,
                                       disable_warnings=True),
                model, x_q, y, a_q, explain_func=torch_saliency(torch, model)),
        },
        "pixel_flipping": {
            "lipxai": lipxai_call(mx.pixel_flipping, fn, x, target, a,
                                  features_per_step=args.pf_step),
            "quantus": quantus_call(
                quantus.PixelFlipping(features_in_step=args.pf_step, disable_warnings=True),
                model, x_q, y, a_q, curve_auc=True),
        },
        "deletion28": {
            "lipxai": lipxai_call(mx.deletion, fn, x, target, a, steps=DELETION_STEPS),
            "quantus": quantus_call(
                quantus.PixelFlipping(features_in_step=784 // DELETION_STEPS,
                                      disable_warnings=True), model, x_q, y, a_q),
        },
    }
    results = {}
    for name, variants in groups.items():
        log(name)
        times, last = interleaved(variants, repeats, warmup=list(variants))
        entry = {f"{k}_s_per_image": v / batch for k, v in times.items()}
        entry["ratio"] = times["lipxai"] / times["quantus"]
        if name == "pixel_flipping":
            entry["max_rel_diff_auc_lipxai_vs_quantus"] = max_rel_diff(last["lipxai"],
                                                                       last["quantus"])
        results[name] = entry
    print(json.dumps(dict(
        batch=batch, repeats=repeats, train_steps=args.train_steps, pf_step=args.pf_step,
        threads=os.cpu_count(), devices=[str(d) for d in jax.devices()],
        load_average_1min=[load_at_start, os.getloadavg()[0]], versions=versions("jax", "jaxlib", "numpy", "torch", "quantus"),
        xplique=xplique_status(), results=results,
    ), indent=2))


if __name__ == "__main__":
    main()
