"""What ``lipxai.nn`` and ``lipxai.bounds`` agree on: the names of the jitted functions that
the bounds recognise in a jaxpr, and how a window's positions are sliced and put back.

``lipxai.nn`` names some of its jitted calls so that ``lipxai.bounds`` can give them a
tighter rule than the composition of their primitives' rules; both read the names here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

#: Name of the jitted function of :class:`lipxai.nn.L2NormPool` that computes the unit vectors ``x_w / ||x_w||`` of
#: non-overlapping windows (``{kh}x{kw}``: the window).  ``lipxai.bounds`` recognises it in
#: gradient jaxprs and bounds it per component instead of as ``x * (1 / sqrt(sum x^2))``,
#: whose interval is unbounded near ``x_w = 0`` while the true value lies in ``[-1, 1]``.
UNIT_VECTORS_NAME = "l2pool_unit_vectors_{kh}x{kw}"

#: Name of the jitted function that :func:`lipxai.nn.reparam.apply_conv_spectrum` calls.  ``lipxai.bounds``
#: recognises it, and the calls that JAX derives from it under ``grad`` (its transpose keeps
#: the name), as per-example circular convolutions: linear maps with an exact interval hull.
CONV_SPECTRUM_NAME = "lipxai_conv_spectrum"


def window_position(array: jax.Array, axes, position) -> jax.Array:
    """The keepdims slice of ``array`` at index ``position[i]`` of each window axis
    ``axes[i]``."""
    index = [slice(None)] * array.ndim
    for a, j in zip(axes, position, strict=True):
        index[a] = slice(j, j + 1)
    return array[tuple(index)]


def from_window_positions(parts: dict, axes, sizes) -> jax.Array:
    """The inverse of :func:`window_position`: ``parts[position]`` for every position of a
    window of ``sizes``, concatenated back along ``axes``."""

    def assemble(prefix):
        if len(prefix) == len(axes):
            return parts[prefix]
        return jnp.concatenate([assemble(prefix + (j,)) for j in range(sizes[len(prefix)])],
                               axis=axes[len(prefix)])

    return assemble(())
