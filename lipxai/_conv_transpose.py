r"""Convolutions with their kernel laid out as XLA:CPU's library kernels want it, inside loops.

Reverse mode turns a convolution :math:`y = x \star W` into its input gradient
:math:`\bar x = \bar y \star W'`, where :math:`W'` is :math:`W` reversed along its spatial
axes with its input and output feature axes swapped.  JAX's transpose rule writes the swap
as kernel dimension numbers (``01oi`` for an ``HWIO`` kernel) rather than as a copy.
XLA:CPU's ``ConvCanonicalization`` rewrites such convolutions for its library kernels only in
the entry computation; inside a ``while`` loop (``fori_loop``, ``scan``, ``while_loop``) the
``01oi`` convolution is compiled to a slower kernel.  Measured on the MNIST CNN of
benchmarks/attributions.py (batch 128, 2 cores): one gradient step took 48.4-53.6 ms in a
``fori_loop`` against 29.7 ms unrolled, and 26.2 ms with the kernel transposed explicitly.

:func:`canonical_conv_kernels` re-interprets a function's jaxpr (loop bodies included) with
every ungrouped convolution whose kernel is not laid out spatial axes, then input features,
then output features, given an explicit ``transpose`` of its kernel into that layout and the
matching dimension numbers.  Only kernels no larger than the convolution's input are moved
(the weight gradient's convolution, whose "kernel" is an activation gradient, is left alone).
It is meant for functions that already take their gradients (a search loop, a chunked
attribution); the result is made of ordinary operations, with the values of ``fn``, so it
composes with every JAX transformation (``jvp`` included).  Convolutions inside
custom-derivative rules, or inside higher-order primitives other than calls, remat, ``cond``,
``scan`` and ``while``, are left as they are.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from lipxai._jaxpr import Rewriter

__all__ = ["canonical_conv_kernels", "for_gradient_loops"]


def _canonical_rhs_spec(n: int) -> tuple:
    """Kernel dimension numbers (out, in, spatial...) of a kernel laid out spatial..., in, out."""
    return (n + 1, n, *range(n))


class _KernelLayout(Rewriter):
    inline_custom_derivatives = False
    strict = False
    description = "a convolution"

    def is_target(self, eqn, context) -> bool:
        if eqn.primitive is not lax.conv_general_dilated_p:
            return False
        p = eqn.params
        rhs_spec = tuple(p["dimension_numbers"].rhs_spec)
        lhs, rhs = (v.aval for v in eqn.invars)
        return (p["feature_group_count"] == 1 and p["batch_group_count"] == 1
                and rhs_spec != _canonical_rhs_spec(len(rhs_spec) - 2)
                and math.prod(rhs.shape) <= math.prod(lhs.shape))

    def rewrite(self, eqn, invals, context):
        lhs, rhs = invals
        lhs_spec, rhs_spec, out_spec = eqn.params["dimension_numbers"]
        kernel = jnp.transpose(rhs, (*rhs_spec[2:], rhs_spec[1], rhs_spec[0]))
        numbers = lax.ConvDimensionNumbers(lhs_spec, _canonical_rhs_spec(len(rhs_spec) - 2),
                                           out_spec)
        return lax.conv_general_dilated_p.bind(lhs, kernel,
                                               **dict(eqn.params, dimension_numbers=numbers))


def canonical_conv_kernels(fn):
    """``fn`` with its convolution kernels laid out explicitly (module docstring)."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    return _KernelLayout().transform(fn)


def for_gradient_loops(fn):
    """:func:`canonical_conv_kernels` on the CPU backend (where it pays, module docstring),
    ``fn`` itself on others."""
    return canonical_conv_kernels(fn) if jax.default_backend() == "cpu" else fn
