"""``jax.jit`` with XLA CPU options suited to attribution workloads (opt-in)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

#: XLA CPU compile options that :func:`jit` requests (when this XLA knows them).
#: ``xla_cpu_experimental_ynn_fusion_type=""`` turns off XLA CPU's YNNPACK fusions, so that
#: convolutions and dots run on XLA's Eigen kernels.  Measured on the CNN of
#: benchmarks/attributions.py (2 shared Xeon cores, load ~1, medians of 3 to 20 interleaved
#: calls): saliency at batch 128 219 -> 152 us per image; SmoothGrad-32 at batch 128 (default
#: chunk) 10.5 -> 5.7 ms per image, at batch 16 7.9 -> 5.4; IG-64 at batch 128 21.1 -> 11.1
#: ms per image; saliency at batch 16 unchanged (0.23 ms).
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
