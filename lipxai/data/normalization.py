"""Input normalisation ``(x - mean) / std`` per channel: one definition for the host pipeline
(:func:`lipxai.data.preprocess`, numpy) and for a trained run's ``apply`` (jax, traced).

A run records its choice as ``config.data.normalize``: ``None`` or an empty sequence for none,
else a pair ``(mean, std)`` of scalars or of one value per channel. The map is affine with
Lipschitz constant ``1 / min(std)``, which certificates on ``[0, 1]`` images must account for.
"""

from __future__ import annotations

import numpy as np

__all__ = ["check_normalize", "normalize"]


def check_normalize(normalize, channels: int, dtype=np.float32):
    """``(mean, 1 / std)`` as arrays of ``dtype`` with 1 or ``channels`` values, or None for no
    normalisation (``None`` or an empty tuple/list); ``ValueError`` naming the bad part.

    Both must be finite and ``std > 0`` once rounded to ``dtype`` (a ``std`` that rounds to 0,
    or whose reciprocal overflows, would divide by zero)."""
    if _is_identity(normalize):
        return None
    if not isinstance(normalize, (tuple, list)) or len(normalize) != 2:
        raise ValueError(f"normalize must be None or a pair (mean, std), got {normalize!r}")
    out = []
    for label, value in zip(("mean", "std"), normalize, strict=True):
        arr = np.asarray(value, dtype)
        if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] not in (1, channels)):
            raise ValueError(
                f"normalize {label} must be a scalar or have {channels} values (one per channel), "
                f"got shape {arr.shape}"
            )
        if not np.isfinite(arr).all():
            raise ValueError(f"normalize {label} must be finite, got {value!r}")
        out.append(arr.reshape(-1))
    mean, std = out
    if (std <= 0).any():
        raise ValueError(f"normalize std must be > 0, got {normalize[1]!r}")
    with np.errstate(over="ignore"):
        inv_std = np.asarray(1, std.dtype) / std
    if not np.isfinite(inv_std).all():
        raise ValueError(
            f"normalize std must have a finite reciprocal in {np.dtype(dtype)}, "
            f"got {normalize[1]!r}"
        )
    return mean, inv_std


def normalize(x, normalize):
    """``(x - mean) / std`` over the last (channel) axis of a floating array ``x``.

    Computed as ``(x - mean) * (1 / std)`` with ``mean`` and ``1 / std`` rounded to the dtype of
    ``x`` on the host. A subtraction and a multiplication round the same way in numpy and XLA; a
    division need not (XLA:CPU's can differ from numpy's in the last bit, and jit rewrites a
    division by a constant into a product with its reciprocal anyway). So numpy, eager jax and
    jitted jax give bit-identical values, within an ulp or two of the exact quotient.

    Args:
      x: a numpy or jax array (a tracer too) of floating dtype, channels last (NHWC).
      normalize: ``None`` or an empty sequence (``x`` is returned as is), or ``(mean, std)``
        with scalars or one value per channel, ``std > 0``.

    Returns:
      An array of the same kind (numpy or jax), shape and dtype as ``x``; ``x`` is not modified.
    """
    if _is_identity(normalize):
        return x
    dtype = np.dtype(x.dtype)
    if dtype.kind in "biuc":  # numpy floats are kind "f", jax's bfloat16 & co. kind "V"
        raise TypeError(f"x must be a floating array to normalize, got dtype {dtype}")
    mean, inv_std = check_normalize(normalize, x.shape[-1], dtype)
    out = x - mean
    out *= inv_std  # in place for numpy (no second temporary); a new array for jax
    return out


def _is_identity(normalize) -> bool:
    return normalize is None or (isinstance(normalize, (tuple, list)) and len(normalize) == 0)
