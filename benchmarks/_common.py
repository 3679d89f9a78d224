"""Pieces shared by the benchmark scripts: the reference MNIST CNN and the timing loop."""

from __future__ import annotations

import statistics
import time

import jax

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
