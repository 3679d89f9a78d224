"""Lipschitz-margin certificates and Lipschitz-constant bounds.

* :func:`radius` and :func:`certified_accuracy` turn logits of a network with a known
  Lipschitz constant into certified L2 / L-inf robustness radii (Tsuzuku, Sato & Sugiyama
  2018, "Lipschitz-Margin Training").
* :func:`dense_operator_norm` and :func:`conv_operator_norm` give per-layer operator norms
  (exact, resp. an upper bound) whose product upper-bounds a network's Lipschitz constant
  (Sedghi, Gupta & Long 2019, "The singular values of convolutional layers").
* :func:`operator_norm_lower` and :func:`lipschitz_lower_bound` give *lower* bounds by power
  iteration and local search over inputs (Scaman & Virmaux 2018, "Lipschitz regularity of
  deep neural networks"), which measure how loose an upper bound (a product of layer norms,
  or LipSDP of Fazlyab et al. 2019) is.
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import lipxai.nn as lnn
from lipxai._core.checks import (
    finite_examples,
    floating_array,
    in_range,
    is_tracer,
    labels_for,
    nan_unless,
    non_empty,
    non_negative,
    one_of,
    positive,
    positive_int,
)
from lipxai.nn.export import sequential_layers
from lipxai.nn.plain import Bias, FourierConv
from lipxai.nn.residual import sll_scale

_NORMS = ("l2", "linf")
_MODES = ("global", "rowwise")
_TINY = 1e-30
_X_STEP = 0.02  # ascent step on x, as a fraction of the typical per-example input norm
_PAIR_RADIUS = 0.01  # ||d|| of the pair search, same unit


def _positive_scalar(name: str, value):
    """Like ``positive`` but also accepts concrete 0-d numpy/jax arrays (and lets tracers pass)."""
    if is_tracer(value):
        return value
    if np.ndim(value) == 0 and hasattr(value, "dtype"):
        value = value.item()
    return positive(name, value)


def _unit(v):
    return v / jnp.maximum(jnp.linalg.norm(v), _TINY)


# ---------------------------------------------------------------------------------------
# Certificates
# ---------------------------------------------------------------------------------------


def radius(logits, lipschitz=1.0, norm="l2", *, mode="global", input_dim=None):
    """Certified robustness radius per example, ``float[B]``.

    With ``margin = top1 - top2`` of ``logits [B, C]``:

    * ``mode="global"``: ``x -> logits`` is ``L``-Lipschitz in L2 as a map into ``R^C``;
      then ``z_i - z_j`` is ``sqrt(2) L``-Lipschitz and ``radius = margin / (sqrt(2) L)``
      (Tsuzuku et al. 2018).
    * ``mode="rowwise"``: each logit is ``L``-Lipschitz; ``radius = margin / (2 L)``.

    ``norm="linf"`` divides the L2 radius by ``sqrt(input_dim)`` since
    ``||d||_2 <= sqrt(d) ||d||_inf``. No prediction within the radius differs from argmax.

    An example with a NaN or infinite logit has radius NaN (certified nowhere), and so has
    every example when ``lipschitz`` is traced under ``jit`` and not a finite number > 0.
    """
    logits = non_empty("logits", floating_array("logits", logits, rank=2))
    if logits.shape[1] < 2:
        raise ValueError(f"logits must have at least 2 classes, got shape {logits.shape}")
    lipschitz = _positive_scalar("lipschitz", lipschitz)
    one_of("norm", norm, _NORMS)
    one_of("mode", mode, _MODES)
    if norm == "linf":
        if input_dim is None:
            raise ValueError('input_dim is required when norm="linf"')
        input_dim = positive_int("input_dim", input_dim)
    top2 = jax.lax.top_k(logits, 2)[0]
    margin = top2[:, 0] - top2[:, 1]
    r = margin / ((math.sqrt(2.0) if mode == "global" else 2.0) * lipschitz)
    r = r / math.sqrt(input_dim) if norm == "linf" else r
    valid = finite_examples(logits) & (jnp.isfinite(lipschitz) & (lipschitz > 0))
    return nan_unless(valid, r)


def certified_accuracy(
    logits, labels, eps, lipschitz=1.0, norm="l2", *, mode="global", input_dim=None
):
    """Fraction of examples that are correct *and* certified: ``mean(argmax == y & radius > eps)``.

    ``eps`` is a scalar (returns a scalar) or a 1-D array of radii (returns ``float[E]``),
    finite and ``>= 0``.  An example with NaN logits counts as not certified.  Values seen
    only under ``jit``: an ``eps`` that is negative or NaN gives NaN for that radius, a label
    out of ``[0, C)`` NaN for every radius (never a plausible accuracy).
    """
    r = radius(logits, lipschitz, norm, mode=mode, input_dim=input_dim)
    logits = jnp.asarray(logits)
    labels = labels_for("labels", labels, logits.shape[1], logits.shape[0])
    non_negative("eps", eps)
    eps = jnp.asarray(eps, dtype=r.dtype)
    if eps.ndim > 1:
        raise ValueError(f"eps must be a scalar or a 1-D array, got shape {eps.shape}")
    ok = jnp.argmax(logits, axis=1) == labels
    accuracy = jnp.mean(ok & (r > eps[..., None]), axis=-1)
    valid = jnp.all(in_range(labels, logits.shape[1])) & jnp.isfinite(eps) & (eps >= 0)
    return jnp.where(valid, accuracy, jnp.nan)


# ---------------------------------------------------------------------------------------
# Operator norms of linear layers
# ---------------------------------------------------------------------------------------


def dense_operator_norm(kernel):
    """Exact L2 operator norm (largest singular value) of a 2-D ``kernel``."""
    kernel = floating_array("kernel", kernel, rank=2)
    return jnp.linalg.svd(kernel, compute_uv=False)[0]


def _int_pair(name: str, value):
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)
    ):
        raise ValueError(f"{name} must be a pair of integers, got {value!r}")
    return tuple(int(v) for v in value)


def conv_operator_norm(kernel, input_hw, *, strides=(1, 1), padding="SAME"):
    """Upper bound on the L2 operator norm of ``x -> conv(x, kernel)`` on NHWC images.

    ``kernel`` is HWIO ``[kh, kw, cin, cout]`` (flax / ``lax.conv_general_dilated``),
    ``input_hw = (n1, n2)``. A circular convolution on an ``m1 x m2`` grid is
    block-diagonalised by the 2-D DFT; its singular values are those of the ``cout x cin``
    matrices ``K_hat(f) = sum_{p,q} K[p,q] exp(-2 pi i (f1 p / m1 + f2 q / m2))``, so its
    norm is ``max_f sigma_max(K_hat(f))`` (Sedghi, Gupta & Long 2019). (lax computes a
    cross-correlation, whose symbol is the complex conjugate: same singular values.)

    * ``padding="CIRCULAR"``: grid ``(n1, n2)``; exact for stride 1.
    * zero padding (``"SAME"``, ``"VALID"``, ``"SAME_LOWER"`` or ``((lo1, hi1), (lo2, hi2))``):
      along each axis the layer is a crop (a contraction) of a circular convolution of the
      zero-padded input (an isometry) on the grid ``n + lo + hi`` (VALID convolution of the
      padded image) and also on ``n + k - 1`` (the full correlation); each choice gives an
      upper bound and the smallest is returned.
    * ``strides``: a strided convolution is the stride-1 one followed by subsampling (a
      contraction), so the stride-1 norm (with the padding lax uses for ``strides``) bounds it.
      With zero padding it is also a stride-1 convolution of the polyphase components of the
      padded input (:func:`polyphase_kernel`; splitting an image into them is a permutation),
      whose bound is exact when the kernel is no larger than the stride; the smaller bound is
      returned.
    """
    kernel = floating_array("kernel", kernel, rank=4)
    n = _int_pair("input_hw", input_hw)
    strides = _int_pair("strides", strides)
    for name, pair in (("input_hw", n), ("strides", strides)):
        if min(pair) < 1:
            raise ValueError(f"{name} must be positive, got {pair}")
    window = kernel.shape[:2]
    if isinstance(padding, str):
        one_of("padding", padding, ("SAME", "SAME_LOWER", "VALID", "CIRCULAR"))
        if padding == "CIRCULAR":
            return _circular_norm(kernel, n)
        pads = jax.lax.padtype_to_pads(n, window, strides, padding)
    else:
        if not isinstance(padding, (tuple, list)) or len(padding) != 2:
            raise ValueError(f"padding must be a string or two (lo, hi) pairs, got {padding!r}")
        pads = [_int_pair("padding", p) for p in padding]
        if min(min(p) for p in pads) < 0:
            raise ValueError(f"padding must be non-negative, got {padding!r}")
    grids = [{ni + lo + hi, ni + k - 1} for ni, k, (lo, hi) in zip(n, window, pads, strict=False)]
    bounds = [_circular_norm(kernel, m) for m in itertools.product(*grids)]
    if strides != (1, 1):
        # the padded image split into its s1 s2 polyphase components, each -(-m // s) long
        phases = tuple(-(-(ni + lo + hi) // si) for ni, (lo, hi), si in zip(n, pads, strides, strict=True))
        bounds.append(conv_operator_norm(polyphase_kernel(kernel, strides), phases, padding="VALID"))
    return jnp.min(jnp.stack(bounds))


def polyphase_kernel(kernel, strides):
    """The stride-1 kernel ``[ceil(kh/s1), ceil(kw/s2), s1 s2 cin, cout]`` acting on polyphase
    components: with ``X_b[j] = x[s j + b]`` (per axis),
    ``sum_p x[s i + p] K[p] = sum_{a, b} X_b[i + a] K[s a + b]`` (``K`` zero beyond its size),
    so a stride-``s`` correlation of ``x`` is a stride-1 correlation of the ``s1 s2`` components
    stacked as channels (a permutation of ``x``: same norm)."""
    kh, kw, cin, cout = kernel.shape
    (s1, s2), a1, a2 = strides, -(-kh // strides[0]), -(-kw // strides[1])
    padded = jnp.pad(kernel, ((0, a1 * s1 - kh), (0, a2 * s2 - kw), (0, 0), (0, 0)))
    return padded.reshape(a1, s1, a2, s2, cin, cout).transpose(0, 2, 1, 3, 4, 5).reshape(a1, a2, s1 * s2 * cin, cout)


@functools.partial(jax.jit, static_argnums=1)
def _circular_norm(kernel, grid):
    """Exact norm of the circular convolution with ``kernel`` on an ``m1 x m2`` grid."""
    (m1, m2), (kh, kw) = grid, kernel.shape[:2]
    # Explicit DFT matrices (rather than an FFT of the zero-padded kernel) also handle
    # kernels larger than the grid, whose taps wrap around.
    dtype = jnp.result_type(kernel.dtype, jnp.complex64)
    dft1 = np.exp(-2j * np.pi * np.outer(np.arange(m1), np.arange(kh)) / m1).astype(dtype)
    dft2 = np.exp(-2j * np.pi * np.outer(np.arange(m2), np.arange(kw)) / m2).astype(dtype)
    symbol = jnp.einsum("fp,gq,pqio->fgoi", dft1, dft2, kernel.astype(dtype))
    return jnp.max(jnp.linalg.svd(symbol, compute_uv=False)[..., 0])


def operator_norm_lower(linear_fn, x_shape, *, key, iters=100):
    """Lower bound on the L2 operator norm of a linear map ``A = linear_fn``.

    Power iteration ``v <- A^T A v / ||A^T A v||`` from a random ``v`` (adjoint by
    ``jax.linear_transpose``); returns ``||A v||`` for the final unit ``v``, which is
    ``<= ||A||_2`` (up to floating-point round-off) and converges to it.
    """
    if not callable(linear_fn):
        raise TypeError(f"linear_fn must be callable, got {type(linear_fn).__name__}")
    if not isinstance(x_shape, (tuple, list)) or not all(
        isinstance(s, numbers.Integral) and s >= 0 for s in x_shape
    ):
        raise ValueError(f"x_shape must be a tuple of non-negative integers, got {x_shape!r}")
    iters = positive_int("iters", iters)
    v = _unit(jax.random.normal(key, tuple(x_shape)))
    adjoint = jax.linear_transpose(linear_fn, v)

    def step(_, v):
        return _unit(adjoint(linear_fn(v))[0])

    v = jax.lax.fori_loop(0, iters, step, v)
    return jnp.linalg.norm(linear_fn(v))


# ---------------------------------------------------------------------------------------
# Whole-model Lipschitz lower bound
# ---------------------------------------------------------------------------------------


def _jacobian_power(g, x, v, iters):
    """``iters`` power iterations on ``J(x)^T J(x)`` from ``v``; returns ``(v, ||J(x) v||)``."""
    _, jvp = jax.linearize(g, x)
    vjp = jax.linear_transpose(jvp, x)
    v = jax.lax.fori_loop(0, iters, lambda _, v: _unit(vjp(jvp(v))[0]), _unit(v))
    return v, jnp.linalg.norm(jvp(v))


def _jacobian_ascent(g, x, v, *, step, steps, power_iters):
    """Normalised gradient ascent on ``x`` of ``||J(x) v||`` (``v`` from power iteration).

    Returns the largest ``||J(x) v||`` (unit ``v``) evaluated at an iterate ``x``.
    """

    def sq_jvp(x, v):
        return jnp.sum(jax.jvp(g, (x,), (v,))[1] ** 2)

    def body(_, carry):
        x, v, best = carry
        x = x + step * _unit(jax.grad(sq_jvp)(x, v))
        v, value = _jacobian_power(g, x, v, power_iters)
        return x, v, jnp.maximum(best, value)

    v, value = _jacobian_power(g, x, v, power_iters)
    return jax.lax.fori_loop(0, steps, body, (x, v, value))[2]


def _pair_search(g, x, d, *, step, rho, steps):
    """Projected gradient ascent of ``||g(x + d) - g(x)||`` over ``x`` and ``||d|| = rho``.

    ``d`` takes steps of ``0.1 rho`` and is projected back onto the sphere ``||d|| = rho``.

    Returns the largest ratio ``||g(x + d) - g(x)|| / ||d||`` evaluated at an iterate.
    """

    def ratio(x, d):
        y = x + d  # divide by the distance between the points actually evaluated
        return jnp.linalg.norm(g(y) - g(x)) / jnp.maximum(jnp.linalg.norm(y - x), _TINY)

    def sq_diff(x, d):
        return jnp.sum((g(x + d) - g(x)) ** 2)

    def body(_, carry):
        x, d, best = carry
        gx, gd = jax.grad(sq_diff, argnums=(0, 1))(x, d)
        x = x + step * _unit(gx)
        d = rho * _unit(d + 0.1 * rho * _unit(gd))
        return x, d, jnp.maximum(best, ratio(x, d))

    d = rho * _unit(d)
    return jax.lax.fori_loop(0, steps, body, (x, d, ratio(x, d)))[2]


def lipschitz_lower_bound(fn, x, *, key, steps=20, power_iters=10, pair_search=True):
    """Lower bound on the L2 Lipschitz constant of a batched ``fn: [B, ...] -> [B, C]``.

    For each example (independently, via ``vmap`` of ``x_b -> fn(x_b[None])[0]``):

    (a) ``sigma_max(J(x))`` by power iteration with ``jax.linearize`` and its transpose, then
        ``steps`` steps of normalised gradient ascent on ``x`` of ``||J(x) v||``, re-running
        ``power_iters`` warm-started power iterations at each new point (Scaman & Virmaux 2018);
    (b) if ``pair_search``: projected gradient ascent over pairs ``(x, x + d)`` with ``||d||``
        fixed and small, of ``||fn(x + d) - fn(x)||_2 / ||d||_2``.

    Every candidate is recomputed at an actual point (a Jacobian norm ``||J(x) v||`` with
    unit ``v``, or an actual difference ratio), so the maximum over candidates and examples
    is a lower bound on the Lipschitz constant (up to floating-point round-off). Steps are
    relative to the root-mean-square input size times ``sqrt(dim)``.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    x = floating_array("x", x, min_rank=1)
    if x.shape[0] < 1:
        raise ValueError(f"x must have a non-empty batch dimension, got shape {x.shape}")
    steps = positive_int("steps", steps, minimum=0)
    power_iters = positive_int("power_iters", power_iters)
    out = jax.eval_shape(fn, x)
    if len(out.shape) != 2 or out.shape[0] != x.shape[0]:
        raise ValueError(
            f"fn must map x of shape {x.shape} to [{x.shape[0]}, C], got shape {out.shape}"
        )

    def g(xb):
        return fn(xb[None])[0]

    rms = jnp.sqrt(jnp.mean(x**2))
    scale = jnp.where(rms > 0, rms, 1.0) * math.sqrt(math.prod(x.shape[1:]))
    k_v, k_d = jax.random.split(key)
    v0 = jax.random.normal(k_v, x.shape, x.dtype)
    best = jax.vmap(
        lambda xb, vb: _jacobian_ascent(
            g, xb, vb, step=_X_STEP * scale, steps=steps, power_iters=power_iters
        )
    )(x, v0)
    if pair_search:
        d0 = jax.random.normal(k_d, x.shape, x.dtype)
        pairs = jax.vmap(
            lambda xb, db: _pair_search(
                g, xb, db, step=_X_STEP * scale, rho=_PAIR_RADIUS * scale, steps=steps
            )
        )(x, d0)
        best = jnp.maximum(best, pairs)
    return jnp.max(best)


# ---------------------------------------------------------------------------------------
# Whole-model Lipschitz upper bound and report
# ---------------------------------------------------------------------------------------

#: Elementwise functions allowed as layers of a ``Sequential`` model, with their Lipschitz constants.
_ELEMENTWISE_LIPSCHITZ = {
    jax.nn.relu: 1.0, jnp.tanh: 1.0, jax.nn.tanh: 1.0, jax.nn.softplus: 1.0, jax.nn.sigmoid: 0.25,
    jnp.abs: 1.0,
}


def lipschitz_upper_bound(module, variables, input_shape):
    """Guaranteed upper bound on the L2 Lipschitz constant of ``x -> module.apply(variables, x)``.

    ``module`` is a ``flax.linen.Sequential`` (nested ones included) of lipxai layers,
    plain ``nn.Dense`` / ``nn.Conv`` or elementwise functions; ``input_shape`` is the
    batched input shape (``(1, 28, 28, 1)``), needed for convolutions. The bound is the
    product of per-layer bounds: the exact spectral norm of dense kernels, the Fourier
    bound of :func:`conv_operator_norm` for convolutions (exact per-frequency norms for
    Cayley convolutions), 1 for the norm-preserving activations, pooling and reshaping
    layers, and for an SLL block ``max(1, 2 ||T^{-1/2} W^T||^2 - 1)`` (its Jacobian
    ``I - 2 M^T D M`` with ``M = T^{-1/2} W^T`` and ``0 <= D <= I`` is symmetric with
    spectrum in ``[1 - 2 ||M||^2, 1]``; Araujo et al. 2023). Centering layers are
    bounded in evaluation mode (a shift, 1). A layer it does not know raises ``TypeError``.
    """
    if not isinstance(module, nn.Sequential):
        shape = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
        return jnp.asarray(_layer_bound(module, variables, shape), jnp.float32)
    bound = jnp.asarray(1.0, jnp.float32)
    for _, layer, sub, shape in sequential_layers(module, variables, input_shape):
        bound = bound * _layer_bound(layer, sub, shape)
    return bound


def _layer_bound(layer, variables, shape):
    one = (lnn.GroupSort, lnn.FullSort, lnn.MaxMin, lnn.Householder, lnn.L2NormPool,
           lnn.GlobalL2NormPool, lnn.InvertibleDownsample, lnn.Flatten, lnn.LayerCentering,
           lnn.BatchCentering, Bias)
    if isinstance(layer, nn.Sequential):
        return lipschitz_upper_bound(layer, variables, shape.shape)
    if isinstance(layer, one):
        return 1.0
    if isinstance(layer, (lnn.OrthoDense, lnn.OrthoConv)):
        plain, plain_vars = lnn.export(layer, variables, input_shape=shape.shape)
        return _layer_bound(plain, plain_vars, shape)
    if isinstance(layer, nn.Dense):
        return dense_operator_norm(variables["params"]["kernel"])
    if isinstance(layer, nn.Conv):
        return _flax_conv_bound(layer, variables["params"]["kernel"], shape)
    if isinstance(layer, FourierConv):
        p = variables["params"]
        spectrum = p["spectrum_real"] + 1j * p["spectrum_imag"]
        return jnp.max(jnp.linalg.svd(spectrum, compute_uv=False)[..., 0])
    if isinstance(layer, (lnn.SLLDense, lnn.SLLConv)):
        return _sll_bound(layer, variables["params"], shape)
    if not isinstance(layer, nn.Module) and layer in _ELEMENTWISE_LIPSCHITZ:
        return _ELEMENTWISE_LIPSCHITZ[layer]
    raise TypeError(f"lipschitz_upper_bound has no rule for the layer {layer!r}; use lipxai.nn "
                    "layers, nn.Dense, nn.Conv or one of the elementwise functions "
                    f"{sorted(f.__name__ for f in _ELEMENTWISE_LIPSCHITZ)}")


def _flax_conv_bound(layer, kernel, shape):
    def as_pair(v):
        return (v, v) if isinstance(v, int) else tuple(v)

    if as_pair(layer.kernel_dilation or 1) != (1, 1) or as_pair(layer.input_dilation or 1) != (1, 1) \
            or layer.feature_group_count != 1 or kernel.ndim != 4:
        raise TypeError("lipschitz_upper_bound supports 2-D nn.Conv without dilation or feature groups")
    padding = layer.padding
    if isinstance(padding, int):
        padding = ((padding, padding), (padding, padding))
    elif not isinstance(padding, str):
        padding = tuple(as_pair(p) for p in padding)
    return conv_operator_norm(kernel, shape.shape[1:3], strides=as_pair(layer.strides or 1),
                              padding=padding)


def _sll_bound(layer, params, shape):
    kernel = params["kernel"]
    if isinstance(layer, lnn.SLLDense):
        t = sll_scale(jnp.abs(kernel.T @ kernel), params["q"])
        m_norm = dense_operator_norm(kernel / jnp.sqrt(t))
    else:
        t = sll_scale(lnn.reparam.conv_gram_abs_rowsum(kernel.swapaxes(2, 3)), params["q"])
        m_norm = conv_operator_norm(kernel / jnp.sqrt(t), shape.shape[1:3], padding="SAME")
    return jnp.maximum(1.0, 2.0 * m_norm**2 - 1.0)


def lipschitz_report(module, variables, x, *, key, **lower_bound_kwargs):
    """``{"lipschitz_upper", "lipschitz_lower"}`` for a model, the two bounds side by side.

    The upper bound is :func:`lipschitz_upper_bound` (guaranteed); the lower bound is
    :func:`lipschitz_lower_bound` started from the examples ``x`` (attained).
    """
    x = floating_array("x", x, min_rank=2)
    upper = lipschitz_upper_bound(module, variables, (1, *x.shape[1:]))
    lower = lipschitz_lower_bound(lambda z: module.apply(variables, z), x, key=key,
                                  **lower_bound_kwargs)
    return {"lipschitz_upper": float(upper), "lipschitz_lower": float(lower)}
