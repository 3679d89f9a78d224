"""``jax.jit`` with XLA CPU options suited to attribution workloads (opt-in)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

#: XLA CPU compile options that :func:`jit` requests (when this XLA knows them).
#: ``xla_cpu_experimental_ynn_fusion_type=""`` turns off XLA CPU's YNNPACK fusions, so that
#: convolutions and dots run on XLA's Eigen kernels.  Measured with benchmarks/attributions.py
#: (its MNIST CNN, default chunks; 2 shared Xeon cores, load 0.9-1.8), ms per image with
#: ``jax.jit`` -> with :func:`jit`: batch 128: saliency 0.262 -> 0.165, SmoothGrad-32 10.5 ->
#: 5.9, IG-64 20.5 -> 11.0; batch 16 (load ~1.2): saliency 0.35 -> 0.38 (no gain),
#: SmoothGrad-32 7.3 -> 5.4, IG-64 15.2 -> 10.6.  Not applied unless asked for: the option
#: is experimental, and its effect depends on the CPU and the model.  Those timings predate the
#: convolution rewrites of :mod:`lipxai._cpu_convolutions`, which give the explanation methods
#: XLA's threaded convolutions under plain ``jax.jit`` too; since then (batch 128, load ~2.4),
#: lipxai / Captum: saliency 0.99 -> 0.88 with this, IG-64 0.65 -> 0.70, SmoothGrad-32 0.62 ->
#: 0.69.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def _supported(name: str, value: str) -> bool:
    try:
        jax.jit(lambda a: a + 1, compiler_options={name: value})(jnp.zeros(()))
    except Exception:  # an XLA without the option (or a value it rejects)
        return False
    return True


def compiler_options() -> dict:
    """The options of :data:`CPU_COMPILER_OPTIONS` this XLA accepts, on the CPU backend
    (``{}`` on other backends)."""
    if jax.default_backend() != "cpu":
        return {}
    return {k: v for k, v in CPU_COMPILER_OPTIONS.items() if _supported(k, v)}


def jit(fun, **kwargs):
    """``jax.jit(fun, **kwargs)`` compiled with :func:`compiler_options` (merged under any
    ``compiler_options`` given).  Same results as ``jax.jit`` up to float rounding (other
    convolution kernels); use it to compile attribution functions on CPU."""
    options = {**compiler_options(), **(kwargs.pop("compiler_options", None) or {})}
    return jax.jit(fun, compiler_options=options or None, **kwargs)
