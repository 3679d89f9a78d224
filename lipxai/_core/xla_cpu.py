r"""XLA:CPU: convolutions in gradient computations written the way it runs them fastest, and
:func:`jit` with its compile options for attribution workloads (opt-in, ``lx.explain.jit``).

Three rewrites of a function's jaxpr (loop bodies included), both made of ordinary operations
with the values of the original, so they compose with every JAX transformation (``jvp``
included).  They are meant for functions that already take their gradients (an attribution,
a search loop, a chunk of attributions, a train step); :func:`for_gradients` applies all
three on the CPU backend, :func:`for_gradient_loops` the first one only and
:func:`for_train_steps` the third one only.

**Kernel layout** (:func:`canonical_conv_kernels`).  Reverse mode turns a convolution
:math:`y = x \star W` into its input gradient :math:`\bar x = \bar y \star W'`, where
:math:`W'` is :math:`W` reversed along its spatial axes with its input and output feature
axes swapped.  JAX's transpose rule writes the swap as kernel dimension numbers (``01oi`` for
an ``HWIO`` kernel) rather than as a copy.  XLA:CPU's ``ConvCanonicalization`` rewrites such
convolutions for its library kernels only in the entry computation; inside a ``while`` loop
(``fori_loop``, ``scan``, ``while_loop``) the ``01oi`` convolution is compiled to a slower
kernel, which made a gradient step of a small CNN much slower in a loop than unrolled
(figures in docs/results.md, "Design measurements behind library choices").  So every
ungrouped convolution whose kernel is not laid out spatial axes, then input features, then
output features, gets an explicit ``transpose`` of its kernel into that layout and the
matching dimension numbers.  Only kernels no larger than the convolution's input are moved
(the weight gradient's convolution, whose "kernel" is an activation gradient, is left alone).

**Threaded kernel** (:func:`threaded_conv_kernels`).  XLA:CPU hands a 2-D convolution with
more than 16 input or output features to a YNNPACK fusion, which runs on one core when the
fusion's result is the whole convolution output, as it is in a gradient computation (the
activations are kept for the backward pass, and the input gradients are used whole).  It
keeps for its multi-threaded Eigen kernel the convolutions YNNPACK does not take, among them
those whose output is larger than their input along a spatial axis (XLA's
``IsConvolutionOpSupportedByYnn``).  So such a convolution gets enough extra padding at the
end of one spatial axis for one more output position than input positions there, and the
extra outputs are sliced off: the values are unchanged, the work grows by the extra outputs,
at most :data:`MAX_EXTRA_WORK` of the output; using every core outweighs it in gradient
computations (figures in docs/results.md).  Not for forward-only functions: there the
convolution, its ReLU and its pooling end in a reduction, a fusion YNNPACK does run on every
core, and the padding would only add work.

**Small kernel** (:func:`small_conv_kernels`).  The weight gradient of a transposed
convolution (the input-gradient convolution of a backward pass, differentiated again with
respect to its kernel: interval bounds of a gradient, double backpropagation) reaches XLA
as a convolution whose "kernel" is an activation larger than its input: with
:math:`L` the (lhs-dilated by :math:`d`) input of :math:`n_L` positions, :math:`R` the kernel
of :math:`n_R > n_L` positions and padding :math:`(l, h)`, its :math:`N` outputs are
:math:`o_i = \sum_p L_{p + i - l} R_p`.  XLA:CPU runs it many times slower than the same
products written as an ordinary weight gradient, :math:`o'_k = \sum_q R_{k + q - l'} L_q`
(input :math:`R`, kernel :math:`L` dilated by :math:`d`, padding
:math:`l' = N - 1 - l`, :math:`h' = (n_L - 1) d + 1 - n_R + l`), whose outputs are those of
the original reversed, :math:`o_i = o'_{N - 1 - i}`, with batch and feature roles of the
output swapped.  So every stride-1, undilated-kernel, ungrouped convolution whose kernel is
larger than its dilated input along every spatial axis (and the new padding is
non-negative) is written in that form followed by a spatial ``rev``.

Convolutions inside custom-derivative rules, or inside higher-order primitives other than
calls, remat, ``cond``, ``scan`` and ``while``, are left as they are.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from lipxai._core.jaxpr import Rewriter

__all__ = ["CPU_COMPILER_OPTIONS", "canonical_conv_kernels", "compiler_options", "for_gradient_loops",
           "for_gradients", "for_train_steps", "jit", "small_conv_kernels", "threaded_conv_kernels"]

#: :func:`threaded_conv_kernels` pads a convolution only if the extra output positions are at
#: most this fraction of its output (1/28 for a 28 x 28 "same" convolution, 1/14 at 14 x 14;
#: a 7 x 7 one would need 1/7 and is left to YNNPACK).
MAX_EXTRA_WORK = 1 / 8

#: The feature counts above which XLA:CPU gives a convolution to YNNPACK.
YNN_MIN_FEATURES = 16


def _canonical_rhs_spec(n: int) -> tuple:
    """Kernel dimension numbers (out, in, spatial...) of a kernel laid out spatial..., in, out."""
    return (n + 1, n, *range(n))


def _moves_kernel(eqn) -> bool:
    """Whether the kernel-layout rewrite applies to ``eqn`` (a convolution)."""
    p = eqn.params
    rhs_spec = tuple(p["dimension_numbers"].rhs_spec)
    lhs, rhs = (v.aval for v in eqn.invars)
    return (p["feature_group_count"] == 1 and p["batch_group_count"] == 1
            and rhs_spec != _canonical_rhs_spec(len(rhs_spec) - 2)
            and math.prod(rhs.shape) <= math.prod(lhs.shape))


def _extra_outputs(eqn):
    """``(spatial index, extra output positions)`` that take ``eqn`` off YNNPACK, or ``None``
    where it is not a YNNPACK convolution or the extra work would exceed MAX_EXTRA_WORK."""
    p = eqn.params
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
    lhs, rhs = (v.aval for v in eqn.invars)
    out = eqn.outvars[0].aval
    if (len(lhs_spec) != 4 or p["batch_group_count"] != 1 or p["feature_group_count"] != 1
            or any(d != 1 for d in p["lhs_dilation"])
            or lhs.dtype not in (jnp.float32, jnp.float64)
            or max(lhs.shape[lhs_spec[1]], out.shape[out_spec[1]]) <= YNN_MIN_FEATURES):
        return None
    sizes = [(lhs.shape[lhs_spec[2 + i]], rhs.shape[rhs_spec[2 + i]], out.shape[out_spec[2 + i]])
             for i in range(2)]
    if any(o > n or k > n for n, k, o in sizes):
        return None  # already left to the threaded kernel
    extra = [n + 1 - o for n, _, o in sizes]  # output positions to add along each axis
    i = min(range(2), key=lambda a: extra[a] / sizes[a][2])
    return (i, extra[i]) if extra[i] <= MAX_EXTRA_WORK * sizes[i][2] else None


def _swapped_padding(eqn):
    """The padding of the small-kernel form of ``eqn`` (module docstring), or ``None`` where
    the small-kernel rewrite does not apply."""
    p = eqn.params
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
    lhs, rhs = (v.aval for v in eqn.invars)
    out = eqn.outvars[0].aval
    if (p["feature_group_count"] != 1 or p["batch_group_count"] != 1
            or any(s != 1 for s in p["window_strides"]) or any(d != 1 for d in p["rhs_dilation"])):
        return None
    padding = []
    for i, (lo, _) in enumerate(p["padding"]):
        n_l = (lhs.shape[lhs_spec[2 + i]] - 1) * p["lhs_dilation"][i] + 1
        n_r, n = rhs.shape[rhs_spec[2 + i]], out.shape[out_spec[2 + i]]
        new = (n - 1 - lo, n_l - n_r + lo)
        if n_r <= n_l or min(new) < 0:
            return None
        padding.append(new)
    return tuple(padding)


class _ConvRewriter(Rewriter):
    inline_custom_derivatives = False
    strict = False
    description = "a convolution"

    def __init__(self, *, layout: bool, threaded: bool, small: bool = False):
        super().__init__()
        self.layout, self.threaded, self.small = layout, threaded, small

    def is_target(self, eqn, context) -> bool:
        if eqn.primitive is not lax.conv_general_dilated_p:
            return False
        return ((self.small and _swapped_padding(eqn) is not None)
                or (self.layout and _moves_kernel(eqn))
                or (self.threaded and _extra_outputs(eqn) is not None))

    def rewrite(self, eqn, invals, context):
        lhs, rhs = invals
        params = dict(eqn.params)
        padding = _swapped_padding(eqn) if self.small else None
        if padding is not None:
            lhs_spec, rhs_spec, out_spec = params["dimension_numbers"]
            params.update(padding=padding, rhs_dilation=params["lhs_dilation"],
                          lhs_dilation=(1,) * len(padding),
                          dimension_numbers=lax.ConvDimensionNumbers(
                              rhs_spec, lhs_spec, (out_spec[1], out_spec[0], *out_spec[2:])))
            out = lax.conv_general_dilated_p.bind(rhs, lhs, **params)
            return lax.rev(out, tuple(out_spec[2:]))
        lhs_spec, rhs_spec, out_spec = params["dimension_numbers"]
        if self.layout and _moves_kernel(eqn):
            rhs = jnp.transpose(rhs, (*rhs_spec[2:], rhs_spec[1], rhs_spec[0]))
            params["dimension_numbers"] = lax.ConvDimensionNumbers(
                lhs_spec, _canonical_rhs_spec(len(rhs_spec) - 2), out_spec)
        grow = _extra_outputs(eqn) if self.threaded else None
        if grow is None:
            return lax.conv_general_dilated_p.bind(lhs, rhs, **params)
        i, extra = grow
        padding = list(params["padding"])
        padding[i] = (padding[i][0], padding[i][1] + extra * params["window_strides"][i])
        params["padding"] = tuple(padding)
        out = lax.conv_general_dilated_p.bind(lhs, rhs, **params)
        axis = out_spec[2 + i]
        return lax.slice_in_dim(out, 0, out.shape[axis] - extra, axis=axis)


def _check(fn):
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")


def canonical_conv_kernels(fn):
    """``fn`` with its convolution kernels laid out explicitly (module docstring)."""
    _check(fn)
    return _ConvRewriter(layout=True, threaded=False).transform(fn)


def threaded_conv_kernels(fn):
    """``fn`` with its YNNPACK convolutions padded for XLA:CPU's threaded kernel (module
    docstring)."""
    _check(fn)
    return _ConvRewriter(layout=False, threaded=True).transform(fn)


def small_conv_kernels(fn):
    """``fn`` with its weight gradients of transposed convolutions written as ordinary weight
    gradients (module docstring)."""
    _check(fn)
    return _ConvRewriter(layout=False, threaded=False, small=True).transform(fn)


def for_gradient_loops(fn):
    """:func:`canonical_conv_kernels` on the CPU backend, ``fn`` itself on others: for loops
    whose bodies take gradients and also run forward passes (a metric's chunks)."""
    _check(fn)
    return canonical_conv_kernels(fn) if jax.default_backend() == "cpu" else fn


def for_train_steps(fn):
    """:func:`small_conv_kernels` on the CPU backend, ``fn`` itself on others: for a train
    step's loss and gradient, where only the weight gradients of transposed convolutions (of
    input-gradient regularisers and bounds) change form; the step's forward passes and attack
    loops keep the forms their own code chose."""
    _check(fn)
    return small_conv_kernels(fn) if jax.default_backend() == "cpu" else fn


def for_gradients(fn):
    """The three rewrites on the CPU backend, ``fn`` itself on others: for functions whose
    convolutions are (mostly) in gradient computations."""
    _check(fn)
    if jax.default_backend() != "cpu":
        return fn
    return _ConvRewriter(layout=True, threaded=True, small=True).transform(fn)


#: XLA CPU compile options that :func:`jit` requests (when this XLA knows them).
#: ``xla_cpu_experimental_ynn_fusion_type=""`` turns off XLA CPU's YNNPACK fusions, so that
#: convolutions and dots run on XLA's Eigen kernels, which are threaded.  Not applied unless
#: asked for: the option is experimental, and its effect depends on the CPU and the model; the
#: convolution rewrites above already give the explanation methods XLA's threaded convolutions
#: under plain ``jax.jit``, and since them the option has helped some methods and slowed
#: others (figures in docs/results.md, "Design measurements behind library choices").
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
