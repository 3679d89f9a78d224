"""Path attributions: Integrated Gradients (with Captum's quadratures) and IDGI.

Integrated Gradients (Sundararajan, Taly & Yan 2017, "Axiomatic attribution for deep
networks") attributes

.. math:: \\mathrm{IG}(x) = (x - x') \\odot \\int_0^1 \\nabla f_t(x' + \\alpha (x - x'))\\,d\\alpha
          \\approx (x - x') \\odot \\sum_k w_k \\nabla f_t(x' + \\alpha_k (x - x')),

with the nodes :math:`\\alpha_k` and weights :math:`w_k` of :func:`quadrature`, defined
exactly as Captum's ``approximation_methods`` so that results match
``captum.attr.IntegratedGradients``.

Chunking: the ``steps`` path points are never materialised for the whole batch at once
(unless ``batch_size >= steps``); the steps are evaluated in chunks of ``batch_size`` steps,
one after the other, each chunk one call of ``fn`` on ``batch_size * B`` examples (see
:func:`lipxai._core.batched.chunked_reduce`: a ``lax.scan`` over chunks).
``batch_size=None`` uses :func:`lipxai.explain.gradients.default_chunk`: at most
:data:`~lipxai.explain.gradients.DEFAULT_CHUNK` (16) steps per chunk, on CPU usually fewer
(it aims at ~2**17 input elements per chunk), which is also faster there; its docstring has
the timings.

Per-example gradients: see :mod:`lipxai.explain.gradients` (``per_example=True``).
Invalid examples (a non-finite input or baseline, a target out of range under ``jit``) get
NaN attributions, as everywhere in :mod:`lipxai.explain`.
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from lipxai._core.batched import (
    check_batch_size,
    check_inputs,
    chunked_sum,
    default_chunk,
    flat,
    target_grad,
    target_logit,
)
from lipxai._core.checks import (
    finite_examples,
    floating_array,
    nan_unless,
    one_of,
    ordered_pair,
    positive,
    positive_int,
)

__all__ = ["integrated_gradients", "idgi", "quadrature", "make_baseline", "METHODS"]

METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")
BASELINES = ("zeros", "uniform", "blur")


def quadrature(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``alphas`` in [0, 1] and weights ``step_sizes`` of an IG quadrature, as Captum.

    * ``riemann_left``: ``alphas = linspace(0, 1 - 1/n, n)``, weights ``1/n``;
    * ``riemann_right``: ``alphas = linspace(1/n, 1, n)``, weights ``1/n``;
    * ``riemann_middle``: ``alphas = linspace(1/(2n), 1 - 1/(2n), n)``, weights ``1/n``;
    * ``riemann_trapezoid``: ``alphas = linspace(0, 1, n)``, weights ``1/n`` halved at both
      ends.  This is Captum's definition verbatim; note its weights sum to ``(n-1)/n``, not
      1 (the node spacing is ``1/(n-1)``), so it under-estimates the integral by a factor
      ``(n-1)/n``, e.g. for a linear model;
    * ``gausslegendre``: ``n``-point Gauss-Legendre nodes and weights mapped from [-1, 1]
      to [0, 1] (exact for polynomials of degree ``2n - 1`` along the path).

    Returns float64 numpy arrays ``(alphas, step_sizes)`` of length ``steps``.
    """
    one_of("method", method, METHODS)
    n = positive_int("steps", steps, minimum=2)
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return 0.5 * (1.0 + nodes), 0.5 * weights
    deltas = np.full(n, 1.0 / n)
    if method == "riemann_trapezoid":
        deltas[0] /= 2
        deltas[-1] /= 2
        alphas = np.linspace(0.0, 1.0, n)
    elif method == "riemann_left":
        alphas = np.linspace(0.0, 1.0 - 1.0 / n, n)
    elif method == "riemann_middle":
        alphas = np.linspace(1.0 / (2 * n), 1.0 - 1.0 / (2 * n), n)
    else:  # riemann_right
        alphas = np.linspace(1.0 / n, 1.0, n)
    return alphas, deltas


@functools.partial(jax.jit, static_argnames="sigma")
def _gaussian_blur(x, sigma: float):
    """Separable Gaussian blur over the spatial axes ``1 .. ndim-2`` (channels last), edge-padded."""
    radius = max(1, int(np.ceil(3.0 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = taps / taps.sum()
    out = x
    for axis in range(1, x.ndim - 1):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (radius, radius)
        padded = jnp.pad(out, pad, mode="edge")
        size = x.shape[axis]
        acc = jnp.zeros_like(out)
        for k, w in enumerate(taps):
            acc = acc + jnp.asarray(w, x.dtype) * jax.lax.slice_in_dim(
                padded, k, k + size, axis=axis
            )
        out = acc
    return out


def make_baseline(
    x, baseline=None, *, key=None, sigma: float = 5.0, low: float = 0.0, high: float = 1.0
):
    """The IG baseline ``x'`` for inputs ``x``, broadcast to ``x.shape`` and ``x.dtype``.

    ``baseline`` may be:
      * ``None`` or ``"zeros"``: all zeros;
      * a finite real number: that constant everywhere;
      * ``"uniform"``: i.i.d. ``U(low, high)`` noise (``low <= high``), drawn with ``key``
        (required);
      * ``"blur"``: ``x`` blurred by a Gaussian of standard deviation ``sigma`` pixels over
        its spatial axes (all axes but the batch and the last, channel, axis; needs
        ``x.ndim >= 3``), as in Sturmfels, Lundberg & Lee 2020, "Visualizing the impact of
        feature attribution baselines";
      * any array broadcastable to ``x.shape``.
    """
    x = floating_array("x", x, min_rank=2)
    if baseline is None or (isinstance(baseline, str) and baseline == "zeros"):
        return jnp.zeros_like(x)
    if isinstance(baseline, str):
        one_of("baseline", baseline, BASELINES)
        if baseline == "uniform":
            ordered_pair("(low, high)", (low, high))
            if key is None:
                raise ValueError('key must be a jax.random key for baseline="uniform", got None')
            return jax.random.uniform(key, x.shape, x.dtype, minval=low, maxval=high)
        positive("sigma", sigma)
        if x.ndim < 3:
            raise ValueError(
                f'baseline="blur" needs x with spatial axes (rank >= 3, channels last), '
                f"got shape {tuple(x.shape)}"
            )
        return _gaussian_blur(x, float(sigma))
    if isinstance(baseline, numbers.Real) and not isinstance(baseline, bool):
        if not np.isfinite(baseline):
            raise ValueError(f"baseline must be a finite number, got {baseline!r}")
        return jnp.full_like(x, baseline)
    b = floating_array("baseline", baseline)
    try:
        shape = np.broadcast_shapes(tuple(b.shape), tuple(x.shape))
    except ValueError:
        shape = None
    if shape != tuple(x.shape):
        raise ValueError(
            f"baseline must be broadcastable to x's shape {tuple(x.shape)}, got shape {tuple(b.shape)}"
        )
    return jnp.broadcast_to(b.astype(x.dtype), x.shape)


def integrated_gradients(
    fn,
    x,
    target,
    *,
    baseline=None,
    steps: int = 50,
    method: str = "gausslegendre",
    batch_size: int | None = None,
    key=None,
    sigma: float = 5.0,
    per_example: bool = False,
):
    """Integrated Gradients with Captum's quadratures (see the module docstring).

    Args:
      fn: batched model function ``x[B, ...] -> logits[B, C]``.
      x: floating inputs ``[B, ...]``.
      target: ``int[B]``.
      baseline: see :func:`make_baseline` (``None``/"zeros", a constant, "uniform",
        "blur", or an array broadcastable to ``x``).
      steps: number of quadrature nodes, ``>= 2``.
      method: one of :data:`METHODS` (:func:`quadrature`).
      batch_size: path steps evaluated together per chunk (``None``:
        :func:`~lipxai.explain.gradients.default_chunk`).
      key: ``jax.random`` key for ``baseline="uniform"``.
      sigma: blur standard deviation (pixels) for ``baseline="blur"``.
      per_example: see :func:`lipxai.explain.saliency`.

    Returns:
      the attribution, shaped like ``x`` (NaN for an invalid example).  Completeness: ``attr.sum()`` per example
      approximates ``f_t(x) - f_t(baseline)`` (exactly for a linear model, except for
      ``riemann_trapezoid``: see :func:`quadrature`).
    """
    x, target, valid = check_inputs(fn, x, target)
    alphas, weights = quadrature(method, steps)
    batch_size = check_batch_size(batch_size)
    base = make_baseline(x, baseline, key=key, sigma=sigma)
    valid = valid & finite_examples(base)
    delta = x - base
    alphas = jnp.asarray(alphas, x.dtype)
    weights = jnp.asarray(weights, x.dtype)
    grad = target_grad(fn, per_example)
    bshape = (-1,) + (1,) * x.ndim

    def chunk_fn(idx):
        c = idx.shape[0]
        z = base[None] + alphas[idx].reshape(bshape) * delta[None]
        _, g = grad(flat(z), jnp.tile(target, c))
        g = g.reshape(z.shape)
        return jnp.tensordot(weights[idx], g, axes=1)

    n = alphas.shape[0]
    chunk = default_chunk(n, x.shape) if batch_size is None else batch_size
    return nan_unless(valid, delta * chunked_sum(chunk_fn, n, chunk))


def idgi(
    fn,
    x,
    target,
    *,
    baseline=None,
    steps: int = 50,
    batch_size: int | None = None,
    key=None,
    sigma: float = 5.0,
    per_example: bool = False,
):
    r"""IDGI: Integrated Gradients with the noise directions removed.

    Yang, Wang & Bilen 2023, "IDGI: A framework to eliminate explanation noise from
    integrated gradients" (CVPR).  On the straight path with nodes
    :math:`\alpha_i = i / n`, :math:`i = 0..n`, each step's change of the target logit
    :math:`d_i = f_t(x_{i+1}) - f_t(x_i)` is distributed over the features along the gradient
    direction only (the component of the path step orthogonal to the gradient, which
    does not change :math:`f_t` to first order, is discarded):

    .. math:: \mathrm{IDGI}(x) = \sum_{i=0}^{n-1} \frac{g_i \odot g_i}{\|g_i\|^2}\, d_i,
              \qquad g_i = \nabla f_t(x_i).

    It is complete by construction: ``attr.sum() = f_t(x) - f_t(baseline)`` per example
    (up to rounding; a step with ``g_i = 0`` contributes nothing).  Arguments as
    :func:`integrated_gradients` (``steps >= 2``).  Each step evaluates one gradient at
    :math:`x_i` and one forward pass at :math:`x_{i+1}`.
    """
    x, target, valid = check_inputs(fn, x, target)
    n = positive_int("steps", steps, minimum=2)
    batch_size = check_batch_size(batch_size)
    base = make_baseline(x, baseline, key=key, sigma=sigma)
    valid = valid & finite_examples(base)
    delta = x - base
    grad = target_grad(fn, per_example)
    value = target_logit(fn, per_example)
    bshape = (-1,) + (1,) * x.ndim
    red = tuple(range(2, x.ndim + 1))

    def chunk_fn(idx):
        c = idx.shape[0]
        a0 = (idx.astype(x.dtype) / n).reshape(bshape)
        a1 = ((idx + 1).astype(x.dtype) / n).reshape(bshape)
        z0 = base[None] + a0 * delta[None]
        z1 = base[None] + a1 * delta[None]
        t = jnp.tile(target, c)
        f0, g = grad(flat(z0), t)
        f1 = value(flat(z1), t)
        g = g.reshape(z0.shape)
        d = (f1 - f0).reshape((c, x.shape[0]) + (1,) * (x.ndim - 1)).astype(x.dtype)
        sq = g * g
        norm = sq.sum(axis=red, keepdims=True)
        safe = jnp.where(norm > 0, norm, 1)
        return (jnp.where(norm > 0, sq / safe, 0) * d).sum(0)

    chunk = default_chunk(n, x.shape) if batch_size is None else batch_size
    return nan_unless(valid, chunked_sum(chunk_fn, n, chunk))
