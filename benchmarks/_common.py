"""The JAX side shared by the benchmark scripts: the reference MNIST CNN, the timing loop, the
--quick/--batch/--repeats arguments and the real MNIST test images (the torch side is in
_torch_reference.py)."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from importlib import metadata

import jax
import numpy as np

from lipxai import data
from lipxai import nn as lipxai_nn


def cnn(params, x, pool=lipxai_nn.max_pool):
    """conv32-conv64-dense128 on NHWC inputs: [conv3x3 (padding 1) -> ReLU -> 2x2 ``pool``]
    x 2 -> flatten -> dense128 -> ReLU -> dense10; ``params`` maps conv1/conv2/dense1/dense2
    to (kernel HWIO or [in, out], bias)."""
    dn = ("NHWC", "HWIO", "NHWC")
    for name in ("conv1", "conv2"):
        w, b = params[name]
        h = jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn)
        x = pool(jax.nn.relu(h + b), (2, 2), (2, 2))
    x = x.reshape(x.shape[0], -1)
    w, b = params["dense1"]
    x = jax.nn.relu(x @ w + b)
    w, b = params["dense2"]
    return x @ w + b


def interleaved(variants, repeats, warmup=()):
    """Median seconds of one call per variant and each variant's last output.

    The variants named in ``warmup`` are first called once untimed; then each repeat calls
    every variant once, in turn.
    """
    for name in warmup:
        variants[name]()
    samples, last = {name: [] for name in variants}, {}
    for _ in range(repeats):
        for name, call in variants.items():
            start = time.perf_counter()
            last[name] = call()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}, last


def compile_jax(fn, *args, jit=jax.jit):
    """``jit(fn)`` compiled for ``args`` and warmed up; returns (blocking call, compile_s)."""
    start = time.perf_counter()
    compiled = jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))
    return (lambda: jax.block_until_ready(compiled(*args))), compile_s


def sig(value, digits=3):
    """``value`` rounded to ``digits`` significant digits (for the JSON)."""
    return float(f"{value:.{digits}g}")


def max_rel_diff(a, b):
    """max |a - b| / max |b| (float64): how far ``a`` is from the reference ``b``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def versions(*names):
    """``{package: installed version}``."""
    return {name: metadata.version(name) for name in names}


def timing_parser(doc, *, batch, repeats, quick_batch=16, quick_repeats=2, quick_extra=""):
    """An argument parser with ``--quick``, ``--batch`` and ``--repeats`` (the description is
    ``doc``'s first line); resolve them with :func:`batch_and_repeats`."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"batch {quick_batch}, {quick_repeats} repeats{quick_extra}")
    parser.add_argument("--batch", type=int, help=f"images per call (default {batch}, quick {quick_batch})")
    parser.add_argument("--repeats", type=int,
                        help=f"interleaved repeats (default {repeats}, quick {quick_repeats})")
    parser.set_defaults(_sizes=(batch, repeats, quick_batch, quick_repeats))
    return parser


def batch_and_repeats(args):
    """``(batch, repeats)`` from the arguments of a :func:`timing_parser`."""
    batch, repeats, quick_batch, quick_repeats = args._sizes
    return (args.batch or (quick_batch if args.quick else batch),
            args.repeats or (quick_repeats if args.quick else repeats))


def mnist_test_images(batch):
    """The first ``batch`` real MNIST test images, preprocessed (NHWC float32 in [0, 1]), and
    their labels; exits with tfds' message when MNIST is not prepared (never random data)."""
    try:
        images, labels = data.load_split("mnist", "test")
    except data.DatasetNotFoundError as error:
        print(error, file=sys.stderr)
        sys.exit(1)
    return data.preprocess(images[:batch]), labels[:batch]
