r"""Convolution input-gradients as plain convolutions, for gradients computed inside loops.

Reverse mode turns a convolution :math:`y = x \star W` into its input gradient
:math:`\bar x = \bar y \star W'`, where :math:`W'` is :math:`W` reversed along its spatial
axes with its input and output feature axes swapped (with the forward strides as input
dilation and the padding that gives back ``x``'s shape).  JAX's transpose rule writes
:math:`W'` as a ``rev`` plus swapped kernel dimension labels (``01oi``).  XLA:CPU's
``ConvCanonicalization`` rewrites such convolutions for its library kernels only in the
entry computation; inside a ``while`` loop (``fori_loop``, ``scan``, ``while_loop``) the
``01oi`` convolution is compiled to a slower kernel.  Measured on the MNIST CNN of
benchmarks/attributions.py (batch 128, 2 cores): one gradient step took 53.6 ms in a
``fori_loop`` against 29.7 ms unrolled; with :math:`W'` computed explicitly (a reversed and
transposed copy of the kernel, then an ordinary ``01io`` convolution) 27.3 ms in the loop.

:func:`explicit_conv_transposes` re-interprets a function's jaxpr with every plain
convolution (no input dilation, one feature group, one batch group) given a ``custom_vjp``
whose input gradient is that explicit convolution (its kernel gradient is JAX's own).  Values
and gradients are those of ``fn``; the rewritten function supports reverse mode (to any
order), ``vmap`` and ``jit``, not forward mode (``jvp`` of a ``custom_vjp``).  It pays for
first-order gradients only: in :func:`lipxai.metrics.attack_explanation` (the gradient of a
saliency map, in a ``fori_loop``; 32 images, 10 steps) it made the attack slower, 0.80 s
against 0.45 s, so it is used by :func:`lipxai.boundary.search` alone.  Convolutions
inside custom-derivative rules, or inside higher-order primitives other than calls, remat,
``cond``, ``scan`` and ``while``, are left as they are.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from lipxai._jaxpr import Rewriter

__all__ = ["explicit_conv_transposes", "for_gradient_loops"]


def _lhs_transpose_padding(in_shape, window, strides, out_shape, padding, rhs_dilation):
    """Padding of the input-gradient convolution (lhs dilated by the forward strides)."""
    pads = []
    for n, k, s, o, (lo, _), d in zip(in_shape, window, strides, out_shape, padding,
                                      rhs_dilation, strict=True):
        k_dilated = (k - 1) * d + 1
        before = k_dilated - lo - 1
        after = n + k_dilated - 1 - ((o - 1) * s + 1) - before
        pads.append((before, after))
    return tuple(pads)


def _input_gradient(ct, rhs, lhs_shape, params):
    """:math:`\\bar y \\star W'` with :math:`W'` materialised (module docstring)."""
    lhs_spec, rhs_spec, out_spec = params["dimension_numbers"]
    spatial = tuple(rhs_spec[2:])
    kernel = jnp.swapaxes(lax.rev(rhs, spatial), rhs_spec[0], rhs_spec[1])
    padding = _lhs_transpose_padding(
        [lhs_shape[d] for d in lhs_spec[2:]], [rhs.shape[d] for d in spatial],
        params["window_strides"], [ct.shape[d] for d in out_spec[2:]], params["padding"],
        params["rhs_dilation"])
    return lax.conv_general_dilated(
        ct, kernel, window_strides=(1,) * len(spatial), padding=padding,
        lhs_dilation=params["window_strides"], rhs_dilation=params["rhs_dilation"],
        dimension_numbers=lax.ConvDimensionNumbers(out_spec, rhs_spec, lhs_spec),
        precision=params["precision"], preferred_element_type=None,
    ).astype(jnp.result_type(ct.dtype, rhs.dtype))


def _conv_with_explicit_transpose(lhs, rhs, params):
    def conv(a, w):
        return lax.conv_general_dilated_p.bind(a, w, **params)

    @jax.custom_vjp
    def f(a, w):
        return conv(a, w)

    def fwd(a, w):
        return conv(a, w), (a, w)

    def bwd(res, ct):
        a, w = res
        _, kernel_vjp = jax.vjp(lambda w: conv(a, w), w)
        grad_a = _input_gradient(ct, w, a.shape, params).astype(a.dtype)
        return grad_a, kernel_vjp(ct)[0]

    f.defvjp(fwd, bwd)
    return f(lhs, rhs)


class _ConvRewriter(Rewriter):
    inline_custom_derivatives = False
    strict = False
    description = "a convolution"

    def is_target(self, eqn, context) -> bool:
        p = eqn.params
        return (eqn.primitive is lax.conv_general_dilated_p
                and all(d == 1 for d in p["lhs_dilation"])
                and p["feature_group_count"] == 1 and p["batch_group_count"] == 1)

    def rewrite(self, eqn, invals, context):
        return _conv_with_explicit_transpose(*invals, eqn.params)


def explicit_conv_transposes(fn):
    """``fn`` with explicit convolution input-gradients (module docstring)."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    return _ConvRewriter().transform(fn)


def for_gradient_loops(fn):
    """:func:`explicit_conv_transposes` on the CPU backend (where it pays, module
    docstring), ``fn`` itself on others."""
    return explicit_conv_transposes(fn) if jax.default_backend() == "cpu" else fn
