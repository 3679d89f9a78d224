"""lipxai vs deel-torchlip: train step and inference time of the same 1-Lipschitz CNN on CPU.

    python benchmarks/lipschitz_layers.py [--quick]

The model is conv32 -> GroupSort2 -> L2Pool2 -> conv64 -> GroupSort2 -> L2Pool2 -> flatten ->
dense128 -> GroupSort2 -> dense10 on 28x28x1 inputs, batch 128, multiclass HKR loss and Adam.
The deel-torchlip side is _torch_reference.TorchlipBench (torchlip's layer defaults, 2 torch
threads). Both libraries see the same random inputs and labels; their repeats alternate (lipxai
aol, lipxai rko, torchlip, ...); medians (the ratios use them) and minima are reported. Warm-up and
compilation are excluded from the timings; lipxai's compile time is reported on its own.
Other processes on the machine skew the timings, torch's most: check load_average_1min.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout's lipxai
from lipxai.losses import multiclass_hkr
from lipxai.nn import OrthoConv, OrthoDense, export, zoo

from _common import versions  # noqa: E402
from _torch_reference import TorchlipBench, import_peers, skipped_note  # noqa: E402

BATCH, CLASSES, ALPHA, MIN_MARGIN, LR, SEED = 128, 10, 0.9, 1.0, 1e-3, 0
CONV_METHODS = ("aol", "rko")
THREADS = 2
TORCHLIP_VERSIONS = ("torch", "deel-torchlip")


def make_data():
    """Uint8-like images in [0, 1] (NHWC) and integer labels, from a fixed numpy seed."""
    rng = np.random.default_rng(SEED)
    x = rng.integers(0, 256, (BATCH, 28, 28, 1)).astype(np.float32) / 255.0
    return x, rng.integers(0, CLASSES, BATCH).astype(np.int32)


def timed_ms(fn, steps):
    """Wall time of ``steps`` calls of ``fn`` (which must block until done), in ms per call."""
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) * 1e3 / steps


# lipxai


class LipxaiBench:
    """A jitted Adam train step and an exported, jitted forward pass of ``zoo.cnn``."""

    def __init__(self, conv_method, x, y):
        self.x, self.y = jnp.asarray(x), jnp.asarray(y)
        model = zoo.cnn(num_classes=CLASSES, channels=(32, 64), dense=(128,),
                        conv_method=conv_method, dense_method="bjorck")
        params = model.init(jax.random.key(SEED), self.x)["params"]
        optimizer = optax.adam(LR)

        def loss_fn(params, x, y):
            logits = model.apply({"params": params}, x)
            return multiclass_hkr(logits, y, alpha=ALPHA, min_margin=MIN_MARGIN)

        def step(params, opt_state, x, y):
            loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        self.model, self.state = model, (params, optimizer.init(params))
        start = time.perf_counter()
        jitted = jax.jit(step, donate_argnums=(0, 1))
        self._step = jitted.lower(*self.state, self.x, self.y).compile()
        self.compile_s = time.perf_counter() - start

    def train_step(self):
        params, opt_state, loss = self._step(*self.state, self.x, self.y)
        self.state = (params, opt_state)
        loss.block_until_ready()

    def prepare_inference(self):
        plain, plain_vars = export(self.model, {"params": self.state[0]}, input_shape=self.x.shape)
        start = time.perf_counter()
        forward = jax.jit(plain.apply).lower(plain_vars, self.x).compile()
        self.inference_compile_s = time.perf_counter() - start
        self.infer = lambda: forward(plain_vars, self.x).block_until_ready()


# driver


def interleaved_times(benches, steps, repeats, method):
    """``(median, min)`` ms per call of ``bench.<method>`` per bench, alternating benches each repeat.

    The minimum is less sensitive to other processes on the machine than the median.
    """
    samples = {name: [] for name in benches}
    for _ in range(repeats):
        for name, bench in benches.items():
            samples[name].append(timed_ms(getattr(bench, method), steps))
    return {name: (round(statistics.median(s), 3), round(min(s), 3)) for name, s in samples.items()}


def timings(train, infer, name):
    return {"train_step_ms": train[name][0], "train_step_min_ms": train[name][1],
            "inference_ms": infer[name][0], "inference_min_ms": infer[name][1]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats (under a minute)")
    args = parser.parse_args()
    repeats, steps, warmup = (5, 2, 2) if args.quick else (20, 5, 5)
    load_at_start = os.getloadavg()[0]

    x, y = make_data()
    torch, torchlip = import_peers("torch", "deel.torchlip", required=False) or (None, None)
    benches = {f"lipxai_{m}": LipxaiBench(m, x, y) for m in CONV_METHODS}
    if torch is not None:
        benches["torchlip"] = TorchlipBench(torch, torchlip, x, y, alpha=ALPHA,
                                            min_margin=MIN_MARGIN, lr=LR, threads=THREADS)

    for bench in benches.values():
        for _ in range(warmup):
            bench.train_step()
    train = interleaved_times(benches, steps, repeats, "train_step")
    torchlip_iterations = benches["torchlip"].iterations() if torch is not None else None
    for bench in benches.values():
        bench.prepare_inference()
        for _ in range(warmup):
            bench.infer()
    infer = interleaved_times(benches, steps, repeats, "infer")

    result = {
        "benchmark": "lipschitz_layers",
        "model": "conv32-gs2-l2pool-conv64-gs2-l2pool-dense128-gs2-dense10",
        "batch": BATCH, "input_shape": [28, 28, 1], "loss": "multiclass_hkr",
        "alpha": ALPHA, "min_margin": MIN_MARGIN, "optimizer": f"adam(lr={LR})",
        "quick": args.quick, "repeats": repeats, "train_steps_per_repeat": steps,
        "inference_calls_per_repeat": steps, "warmup_calls": warmup,
        "cpu_count": os.cpu_count(), "torch_threads": THREADS if torch is not None else None,
        "load_average_1min": {"start": load_at_start, "end": os.getloadavg()[0]},
        "jax_backend": jax.default_backend(),
        "jax_default_matmul_precision": str(jax.config.jax_default_matmul_precision),
        "versions": versions("jax", "jaxlib", "flax", "optax",
                             *(TORCHLIP_VERSIONS if torch is not None else ())),
        "lipxai": {
            m: {**timings(train, infer, f"lipxai_{m}"),
                "compile_s": round(benches[f"lipxai_{m}"].compile_s, 3),
                "inference_compile_s": round(benches[f"lipxai_{m}"].inference_compile_s, 3),
                "bjorck_iterations": {"conv": OrthoConv.iters if m == "rko" else None,
                                      "dense": OrthoDense.iters}}
            for m in CONV_METHODS
        },
        "torchlip": None, "train_step_ratio": None, "inference_ratio": None,
    }
    if torch is None:
        result["note"] = skipped_note("deel-torchlip")
    else:
        result["torchlip"] = {"conv": "SpectralConv2d", "last_layer": "FrobeniusLinear",
                              **timings(train, infer, "torchlip"),
                              "iterations": torchlip_iterations}
        result["train_step_ratio"] = {
            m: round(train[f"lipxai_{m}"][0] / train["torchlip"][0], 3) for m in CONV_METHODS}
        result["inference_ratio"] = {
            m: round(infer[f"lipxai_{m}"][0] / infer["torchlip"][0], 3) for m in CONV_METHODS}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
