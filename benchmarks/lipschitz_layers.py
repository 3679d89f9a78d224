"""lipxai vs deel-torchlip: train step and inference time of the same 1-Lipschitz CNN on CPU.

    python benchmarks/lipschitz_layers.py [--quick]

The model is conv32 -> GroupSort2 -> L2Pool2 -> conv64 -> GroupSort2 -> L2Pool2 -> flatten ->
dense128 -> GroupSort2 -> dense10 on 28x28x1 inputs, batch 128, multiclass HKR loss and Adam.
Both libraries see the same random inputs and labels; their repeats alternate (lipxai aol,
lipxai rko, torchlip, ...); medians (the ratios use them) and minima are reported. Warm-up and
compilation are excluded from the timings; lipxai's compile time is reported on its own.
Other processes on the machine skew the timings, torch's most: check load_average_1min.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark this checkout's lipxai
from lipxai.losses import multiclass_hkr
from lipxai.nn import OrthoConv, OrthoDense, export, zoo

BATCH, CLASSES, ALPHA, MIN_MARGIN, LR, SEED = 128, 10, 0.9, 1.0, 1e-3, 0
CONV_METHODS = ("aol", "rko")
THREADS = 2
PEERS_NOTE = ("deel-torchlip comparison skipped: install the peers extra "
              "(pip install torch==2.13.0 && pip install -e '.[peers]')")


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


# deel-torchlip


def import_torchlip():
    try:
        import torch
        from deel import torchlip
    except ImportError:
        return None, None
    return torch, torchlip


class TorchlipBench:
    """The same CNN in deel-torchlip (its layer defaults), trained with torch.optim.Adam."""

    def __init__(self, torch, torchlip, x, y, hidden=128, downsample="pool"):
        torch.set_num_threads(THREADS)
        torch.manual_seed(SEED)
        self.torch = torch
        self.x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        self.y = torch.nn.functional.one_hot(torch.from_numpy(y).long(), CLASSES).float()
        if downsample == "pool":   # zoo.cnn's second block: 3x3 convolution, then L2 pooling
            second = [torchlip.SpectralConv2d(32, 64, kernel_size=3, padding="same"),
                      torchlip.GroupSort2(), torchlip.ScaledL2NormPool2d(kernel_size=2)]
        else:                      # downsample="patch": a 2x2 stride-2 convolution
            second = [torchlip.SpectralConv2d(32, 64, kernel_size=2, stride=2), torchlip.GroupSort2()]
        self.model = torchlip.Sequential(
            torchlip.SpectralConv2d(1, 32, kernel_size=3, padding="same"),
            torchlip.GroupSort2(),
            torchlip.ScaledL2NormPool2d(kernel_size=2),
            *second,
            torch.nn.Flatten(),
            torchlip.SpectralLinear(64 * 7 * 7, hidden),
            torchlip.GroupSort2(),
            torchlip.FrobeniusLinear(hidden, CLASSES, disjoint_neurons=True),
        )
        self.loss_fn = torchlip.HKRMulticlassLoss(alpha=ALPHA, min_margin=MIN_MARGIN)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LR)

    def train_step(self):
        self.optimizer.zero_grad()
        self.loss_fn(self.model(self.x), self.y).backward()
        self.optimizer.step()

    def prepare_inference(self):
        self.model.eval()
        plain = self.model.vanilla_export().eval()

        def infer():
            with self.torch.no_grad():
                plain(self.x)

        self.infer = infer

    def iterations(self):
        """torchlip's defaults, and the Björck iterations one train step actually runs per layer."""
        from deel.torchlip import normalizers

        torch, counts = self.torch, []
        bjorck_module = importlib.import_module("deel.torchlip.utils.bjorck_norm")
        original = bjorck_module.bjorck_normalization

        class CountMatmuls(torch.overrides.TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                counts[-1] += func is torch.mm
                return func(*args, **(kwargs or {}))

        def counted(*args, **kwargs):
            counts.append(0)
            with CountMatmuls():
                return original(*args, **kwargs)

        bjorck_module.bjorck_normalization = counted
        try:
            self.train_step()
        finally:
            bjorck_module.bjorck_normalization = original
        power_iters = {m.n_power_iterations for m in self.model.modules()
                       if type(m).__name__ == "_SpectralNorm"}
        return {
            "spectral_power_iterations_per_step": sorted(power_iters),
            "bjorck_maxiter": normalizers.DEFAULT_MAXITER_BJORCK,
            "bjorck_eps": normalizers.DEFAULT_EPS_BJORCK,
            # 2 matmuls per iteration; layers in forward order
            "bjorck_iterations_run": dict(zip(("conv32", "conv64", "dense128"),
                                              [c // 2 for c in counts], strict=True)),
            "bjorck_grad_through_last_iterations": normalizers.DEFAULT_BJORK_DETACH - 1,
        }


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


def versions(torch_available):
    names = ["jax", "jaxlib", "flax", "optax"]
    names += ["torch", "deel-torchlip"] if torch_available else []
    return {name: metadata.version(name) for name in names}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats (under a minute)")
    args = parser.parse_args()
    repeats, steps, warmup = (5, 2, 2) if args.quick else (20, 5, 5)
    load_at_start = os.getloadavg()[0]

    x, y = make_data()
    torch, torchlip = import_torchlip()
    benches = {f"lipxai_{m}": LipxaiBench(m, x, y) for m in CONV_METHODS}
    if torch is not None:
        benches["torchlip"] = TorchlipBench(torch, torchlip, x, y)

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
        "versions": versions(torch is not None),
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
        result["note"] = PEERS_NOTE
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
