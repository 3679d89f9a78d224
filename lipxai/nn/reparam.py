"""Pure, differentiable reparametrisations that make linear maps 1-Lipschitz.

Kernels follow flax's convention: a dense kernel is ``[in, out]`` (``y = x @ W``),
a convolution kernel is HWIO ``[kh, kw, cin, cout]``. Every function here is a
pure function of arrays, so it can be jitted, differentiated and reused outside
the layers (e.g. to orthogonalise a kernel once at export time).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from lipxai._core.windows import CONV_SPECTRUM_NAME

_TINY = 1e-12


def _first_max(v: jax.Array) -> jax.Array:
    """``max(v)`` of a 1-D array, differentiated as the one-hot of its first argmax.

    ``jnp.max``'s derivative is ``(v == max(v)) / count(v == max(v))``.  XLA may recompute ``v``
    in several fusions with different rounding; the mask and the count can then disagree, and a
    count of 0 makes 0/0.  On an H100 (autotuned kernels, several training processes at once)
    the gradient of a Björck kernel came out NaN in exactly one row: the row of the largest row
    sum, the one this maximum selects.  Indexing by the argmax tests no float for equality.
    """
    return v[jnp.argmax(v)]


def spectral_norm_upper(w: jax.Array) -> jax.Array:
    """A guaranteed upper bound on ``||W||_2``: ``min(||W||_F, sqrt(||W||_1 ||W||_inf))``.

    The minimum and the maxima are differentiated through one chosen entry each (no float
    equality test in the backward pass, see :func:`_first_max`).
    """
    frobenius = jnp.sqrt(jnp.sum(w * w))
    abs_w = jnp.abs(w)
    holder = jnp.sqrt(_first_max(jnp.sum(abs_w, axis=0)) * _first_max(jnp.sum(abs_w, axis=1)))
    bound = jnp.where(frobenius <= holder, frobenius, holder)
    return jnp.where(bound > _TINY, bound, _TINY)


def bjorck(w: jax.Array, iters: int = 15, beta: float = 0.5) -> jax.Array:
    """Björck–Bowie orthonormalisation of a 2-D kernel.

    Iterates ``W <- W ((1 + beta) I - beta W^T W)`` (Björck & Bowie 1971; used for
    1-Lipschitz networks by Anil, Lucas & Grosse 2019, "Sorting out Lipschitz
    function approximation") after dividing ``W`` by a guaranteed upper bound of
    its spectral norm. With ``beta = 1/2`` each singular value follows
    ``s <- 1.5 s - 0.5 s^3``, which maps [0, 1] into [0, 1] and increases towards
    1: every iterate is 1-Lipschitz (up to float rounding) and the limit is the
    orthogonal polar factor (orthonormal columns if tall, rows if wide).

    For a long kernel (``m >= 2n`` after orienting it tall) the same iterates are
    computed as ``W_k = W_0 T_k`` with ``T_{k+1} = T_k ((1 + beta) I - beta T_k^T G T_k)``
    and ``G = W_0^T W_0``: every iteration then costs three ``n x n`` products
    instead of two ``m x n`` ones (e.g. 8x fewer flops for a 3136 x 128 kernel).
    """
    wide = w.shape[0] < w.shape[1]
    v = w.T if wide else w
    v = v / spectral_norm_upper(v)
    m, n = v.shape
    eye = jnp.eye(n, dtype=v.dtype)
    if m >= 2 * n:
        gram = v.T @ v
        t = eye
        for _ in range(iters):
            t = t @ ((1.0 + beta) * eye - beta * (t.T @ gram @ t))
        v = v @ t
    else:
        for _ in range(iters):
            v = v @ ((1.0 + beta) * eye - beta * (v.T @ v))
    return v.T if wide else v


def power_iteration(w: jax.Array, u: jax.Array, iters: int = 1):
    """Power iteration for the top singular pair of ``W`` ``[m, n]`` from ``u`` ``[n]``.

    Returns ``(sigma, u)`` where ``sigma = ||W u||`` for the final unit ``u``; ``u`` is
    returned without gradient so that it can be stored as state and continued at
    the next training step (Miyato et al. 2018, "Spectral normalization for
    generative adversarial networks"). ``sigma`` is a *lower* estimate of
    ``||W||_2`` and is differentiable in ``W``.
    """
    u = lax.stop_gradient(u)
    wd = lax.stop_gradient(w)
    for _ in range(iters):
        v = wd @ u
        v = v / jnp.maximum(jnp.linalg.norm(v), _TINY)
        u = wd.T @ v
        u = u / jnp.maximum(jnp.linalg.norm(u), _TINY)
    sigma = jnp.linalg.norm(w @ u)
    return sigma, u


def top_right_singular_vector(w: jax.Array) -> jax.Array:
    """Exact top right singular vector of a 2-D matrix (used to initialise power iteration)."""
    _, _, vt = jnp.linalg.svd(w, full_matrices=False)
    return vt[0]


def aol_dense(w: jax.Array) -> jax.Array:
    """AOL rescaling of a dense kernel ``[in, out]`` (Prach & Lampert 2022, "Almost-orthogonal layers").

    For any matrix ``P``, ``P D`` with ``D_ii = (sum_j |P^T P|_{ij})^{-1/2}`` has
    norm at most 1 (Gershgorin on ``D P^T P D``). Applied to the inputs,
    ``W' = diag(d) W`` with ``d`` from ``|W W^T|``; applied to the outputs,
    ``W' = W diag(d)`` with ``d`` from ``|W^T W|``. The smaller Gram matrix is used
    (inputs when ``in <= out``), so a 3136 x 128 kernel costs a 128 x 128 Gram.
    """
    if w.shape[0] <= w.shape[1]:
        rowsum = jnp.sum(jnp.abs(w @ w.T), axis=1)
        return w * lax.rsqrt(jnp.maximum(rowsum, _TINY))[:, None]
    colsum = jnp.sum(jnp.abs(w.T @ w), axis=1)
    return w * lax.rsqrt(jnp.maximum(colsum, _TINY))[None, :]


def cayley(a: jax.Array, in_features: int, out_features: int) -> jax.Array:
    """Orthogonal ``[in, out]`` kernel from an unconstrained square ``[n, n]`` parameter.

    With the skew-symmetric ``S = A - A^T``, ``Q = (I + S)^{-1} (I - S)`` is exactly
    orthogonal (Cayley 1846; for layers: Trockman & Kolter 2021, "Orthogonalizing
    convolutional layers with the Cayley transform"). ``n = max(in, out)``; the
    kernel is the top-left ``[in, out]`` block, which has orthonormal rows when
    ``in <= out`` (an isometry) and orthonormal columns otherwise.
    """
    n = a.shape[0]
    skew = a - a.T
    eye = jnp.eye(n, dtype=a.dtype)
    q = jnp.linalg.solve(eye + skew, eye - skew)
    return q[:in_features, :out_features]


def conv_coverage(kernel_size, strides) -> int:
    """Largest number of output patches that contain one input pixel: ``prod ceil(k_i / s_i)``."""
    return math.prod(-(-k // s) for k, s in zip(kernel_size, strides, strict=True))


def rko_conv(kernel: jax.Array, strides=(1, 1), iters: int = 15) -> jax.Array:
    """Reshaped-kernel orthogonalisation of a convolution kernel ``[kh, kw, cin, cout]``.

    The kernel reshaped to ``[kh kw cin, cout]`` is orthonormalised with
    :func:`bjorck` (the "RKO" idea of Serrurier et al. 2021 and deel-lip), then
    multiplied by ``1 / sqrt(c)`` with ``c = prod ceil(k / s)`` the largest number
    of patches that share an input pixel. Since ``||conv(x)||^2 = sum over patches
    ||W^T patch||^2 <= c ||x||^2 ||W||^2``, the convolution is 1-Lipschitz on any
    image size and padding. (deel-lip's correction factor averages the coverage
    over the image, which is not an upper bound; this one is.)
    """
    kh, kw, cin, cout = kernel.shape
    flat = bjorck(kernel.reshape(kh * kw * cin, cout), iters=iters)
    scale = 1.0 / math.sqrt(conv_coverage((kh, kw), strides))
    return (flat * scale).reshape(kh, kw, cin, cout)


def conv_gram_abs_rowsum(kernel: jax.Array) -> jax.Array:
    """``M_ij = sum_delta |(A^T A)_{ij}(delta)|`` for the convolution ``A`` with kernel ``[kh, kw, cin, cout]``.

    ``A^T A`` is a convolution on ``cin`` channels with the ``(2kh-1, 2kw-1)`` kernel
    ``(A^T A)_{ij}(delta) = sum_{p, o} K[p, i, o] K[p + delta, j, o]``; zero padding
    only removes terms from the rows of the full operator, so the row sums of
    ``|A^T A|`` are bounded by ``M`` (Prach & Lampert 2022).
    """
    kh, kw, _, _ = kernel.shape
    as_images = jnp.transpose(kernel, (2, 0, 1, 3))  # [cin, kh, kw, cout]
    as_filter = jnp.transpose(kernel, (0, 1, 3, 2))  # [kh, kw, cout, cin]
    gram = lax.conv_general_dilated(
        as_images,
        as_filter,
        window_strides=(1, 1),
        padding=((kh - 1, kh - 1), (kw - 1, kw - 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=lax.Precision.HIGHEST,
    )  # [cin, 2kh-1, 2kw-1, cin]
    return jnp.sum(jnp.abs(gram), axis=(1, 2))


def aol_conv(kernel: jax.Array) -> jax.Array:
    """AOL rescaling of a convolution kernel: input channel ``i`` scaled by ``(sum_j M_ij)^{-1/2}``.

    ``M`` is :func:`conv_gram_abs_rowsum`; the rescaled convolution is 1-Lipschitz
    for any image size, zero or circular padding, and any stride (Prach & Lampert
    2022, Theorem 2; a stride only subsamples the output).
    """
    rowsum = jnp.sum(conv_gram_abs_rowsum(kernel), axis=1)
    return kernel * lax.rsqrt(jnp.maximum(rowsum, _TINY))[None, None, :, None]


def cayley_conv_spectrum(kernel: jax.Array, grid) -> jax.Array:
    """Per-frequency unitary matrices of the Cayley-orthogonalised circular convolution.

    ``kernel`` is ``[kh, kw, c, c]``; ``grid = (n1, n2)`` the image size. With
    ``V(f)`` the 2-D DFT of the zero-padded kernel (a ``c x c`` matrix per
    frequency), ``S(f) = V(f) - V(f)^H`` is skew-Hermitian and
    ``Q(f) = (I + S)^{-1} (I - S)`` is unitary; because ``Q(-f) = conj(Q(f))`` the
    operator maps real images to real images and is orthogonal (Trockman & Kolter
    2021). Only the ``n2 // 2 + 1`` non-negative frequencies of the last axis are
    kept (real FFT). Returns ``complex[n1, n2 // 2 + 1, c, c]`` acting on column
    vectors of input channels.
    """
    kh, kw, c, c2 = kernel.shape
    if c != c2:
        raise ValueError(f"cayley_conv_spectrum needs a square channel kernel, got {kernel.shape}")
    n1, n2 = grid
    if kh > n1 or kw > n2:
        raise ValueError(f"kernel {kh}x{kw} is larger than the image grid {n1}x{n2}")
    # V(f)[o, i] = sum_p K[p, i, o] exp(-2 pi i f.p): cross-correlation index convention.
    spectrum = jnp.fft.rfft2(kernel, s=(n1, n2), axes=(0, 1))  # [n1, n2//2+1, c_in, c_out]
    v = jnp.conj(jnp.swapaxes(spectrum, -1, -2))  # correlation = convolution with conj spectrum
    skew = v - jnp.conj(jnp.swapaxes(v, -1, -2))
    eye = jnp.eye(c, dtype=skew.dtype)
    return jnp.linalg.solve(eye + skew, eye - skew)


def _conv_spectrum(x: jax.Array, spectrum: jax.Array) -> jax.Array:
    n1, n2 = x.shape[1], x.shape[2]
    x_hat = jnp.fft.rfft2(x, axes=(1, 2))
    y_hat = jnp.einsum("hwoi,bhwi->bhwo", spectrum, x_hat, precision=lax.Precision.HIGHEST)
    return jnp.fft.irfft2(y_hat, s=(n1, n2), axes=(1, 2)).astype(x.dtype)


_conv_spectrum.__name__ = CONV_SPECTRUM_NAME
_conv_spectrum_call = jax.jit(_conv_spectrum)


def apply_conv_spectrum(x: jax.Array, spectrum: jax.Array) -> jax.Array:
    """Apply per-frequency matrices ``[n1, n2//2+1, c, c]`` to NHWC images ``[B, n1, n2, c]``.

    ``y = irfft2(S(f) rfft2(x)(f))`` is linear in ``x`` and commutes with circular shifts: a
    circular convolution ``y[p] = sum_q K[p - q] x[q]`` with the full-grid kernel
    ``K = irfft2(S)`` ``[n1, n2, c_out, c_in]`` (Trockman & Kolter 2021 apply their Cayley
    convolutions this way).  It runs as one jitted call named :data:`~lipxai._core.windows.CONV_SPECTRUM_NAME`, so
    that interval bounds see the whole linear map (an FFT alone has no interval rule).
    """
    return _conv_spectrum_call(x, spectrum)
