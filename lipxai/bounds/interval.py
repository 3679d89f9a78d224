"""The ``Interval`` value: elementwise lower and upper bounds of an array, as a pytree node.

An ``Interval(lower, upper)`` stands for every array ``v`` of the same shape with
``lower <= v <= upper`` elementwise.  Boolean intervals are three-valued truth values under
the order ``False < True``: ``[True, True]`` is certainly true, ``[False, False]`` certainly
false and ``[False, True]`` unknown.  Plain arrays are point values (zero-width intervals);
the interval transformation keeps them as plain arrays, so that equations whose inputs are
all points are evaluated exactly as without it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lipxai._core.checks import non_negative

#: ``precision`` of the products inside interval rules, whatever the traced function asked
#: for: a GPU's default TF32 products (10-bit mantissa) would make bounds unsound by ~1e-3
#: relative.
FULL_PRECISION = (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)


@jax.tree_util.register_pytree_node_class
class Interval:
    """Elementwise bounds ``lower <= v <= upper`` on an array ``v``.

    ``lower`` and ``upper`` have the same shape and dtype.  ``lower <= upper`` is the
    caller's promise; it is checked by ``lipxai.bounds.box`` and ``Interval.check`` (on
    concrete values), not on construction, so that Intervals can be built under ``jit``.
    """

    __slots__ = ("lower", "upper")

    def __init__(self, lower, upper):
        lower, upper = jnp.asarray(lower), jnp.asarray(upper)
        if lower.shape != upper.shape:
            raise ValueError(
                f"Interval lower and upper must have the same shape, got {lower.shape} "
                f"and {upper.shape}"
            )
        if lower.dtype != upper.dtype:
            raise TypeError(
                f"Interval lower and upper must have the same dtype, got {lower.dtype} "
                f"and {upper.dtype}"
            )
        self.lower, self.upper = lower, upper

    def tree_flatten(self):
        return (self.lower, self.upper), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        del aux
        obj = object.__new__(cls)  # pytree utilities put non-arrays in the leaves
        obj.lower, obj.upper = children
        return obj

    @property
    def shape(self) -> tuple[int, ...]:
        return self.lower.shape

    @property
    def dtype(self):
        return self.lower.dtype

    @property
    def ndim(self) -> int:
        return self.lower.ndim

    @property
    def center(self) -> jax.Array:
        """``(lower + upper) / 2``."""
        return (self.lower + self.upper) / 2

    @property
    def radius(self) -> jax.Array:
        """``(upper - lower) / 2``."""
        return (self.upper - self.lower) / 2

    @property
    def width(self) -> jax.Array:
        """``upper - lower``."""
        return self.upper - self.lower

    def check(self) -> Interval:
        """Raise ``ValueError`` if (concrete) ``lower > upper`` or a bound is NaN anywhere
        (no value lies in such an interval); return ``self``.  The first offending index is
        named."""
        if bool(jnp.all(self.lower <= self.upper)):  # one device reduction in the usual case
            return self
        lo, hi = np.asarray(self.lower), np.asarray(self.upper)
        idx = tuple(int(i) for i in np.argwhere(~(lo <= hi))[0])
        problem = "a NaN bound" if np.isnan(lo[idx]) or np.isnan(hi[idx]) else "lower > upper"
        raise ValueError(
            f"Interval has {problem} at index {idx}: lower {lo[idx]}, upper {hi[idx]}"
        )

    def __repr__(self) -> str:
        return f"Interval(lower={self.lower!r}, upper={self.upper!r})"


@jax.tree_util.register_pytree_node_class
class PackedInterval(Interval):
    """An Interval stored as one array: ``lower`` and ``upper`` side by side along the last axis.

    ``packed[..., :C]`` is the lower and ``packed[..., C:]`` the upper bound of a value whose
    last axis has size ``C``.  The interval transformation produces it where that layout lets
    XLA fuse the interval computation as it fuses the plain one (a convolution with a point
    kernel and features last, followed by bias, ReLU and pooling: ``lipxai.bounds.packed``),
    and turns it back into a plain ``Interval`` at the boundary of ``interval(fun)``.  It is an
    ``Interval`` everywhere: ``lower`` and ``upper`` are slices of ``packed``.

    A NaN in ``packed`` means "unknown" and reads as ``-inf`` in ``lower`` and ``+inf`` in
    ``upper``.  The lane-wise ops on packed arrays (convolution, adding a point, ``max``,
    pooling, reshapes) propagate NaN to every output that depends on one, so the NaNs of
    ``inf - inf`` or ``0 * inf`` need no clean-up between them (a ``select`` there would stop
    XLA from fusing the chain); they are read as infinite bounds when the value is unpacked.
    """

    __slots__ = ("packed",)

    def __init__(self, packed):
        packed = jnp.asarray(packed)
        if packed.ndim == 0 or packed.shape[-1] % 2:
            raise ValueError(f"PackedInterval needs an even last axis, got shape {packed.shape}")
        self.packed = packed

    def tree_flatten(self):
        return (self.packed,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        del aux
        obj = object.__new__(cls)
        (obj.packed,) = children
        return obj

    def _half(self, index: int, unknown: float) -> jax.Array:
        features = self.packed.shape[-1] // 2
        half = self.packed[..., index * features : (index + 1) * features]
        if not jnp.issubdtype(half.dtype, jnp.floating):
            return half
        return jnp.where(jnp.isnan(half), jnp.asarray(unknown, half.dtype), half)

    @property
    def lower(self) -> jax.Array:
        return self._half(0, -jnp.inf)

    @property
    def upper(self) -> jax.Array:
        return self._half(1, jnp.inf)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.packed.shape[:-1] + (self.packed.shape[-1] // 2,)

    @property
    def dtype(self):
        return self.packed.dtype

    @property
    def ndim(self) -> int:
        return self.packed.ndim

    def unpacked(self) -> Interval:
        """The same bounds as a plain ``Interval``."""
        return Interval(self.lower, self.upper)


def unpacked(value):
    """``value`` with a :class:`PackedInterval` turned into a plain ``Interval``."""
    return value.unpacked() if isinstance(value, PackedInterval) else value


def is_interval(value) -> bool:
    return isinstance(value, Interval)


def point(value) -> Interval:
    """The zero-width interval ``[value, value]``."""
    value = jnp.asarray(value)
    return Interval(value, value)


def as_interval(value) -> Interval:
    """``value`` as an Interval (points become zero-width intervals)."""
    return value if isinstance(value, Interval) else point(value)


def greater(a, b, *, strict: bool) -> Interval:
    """``a > b`` (strict) or ``a >= b`` as a three-valued boolean Interval: certainly true
    if ``a_lo > b_hi``, possibly true if ``a_hi > b_lo`` (Intervals or points)."""
    op = jnp.greater if strict else jnp.greater_equal
    return Interval(op(lower_of(a), upper_of(b)), op(upper_of(a), lower_of(b)))


def lower_of(value):
    """``value.lower`` for an Interval, ``value`` itself for a point."""
    return value.lower if isinstance(value, Interval) else value


def upper_of(value):
    """``value.upper`` for an Interval, ``value`` itself for a point."""
    return value.upper if isinstance(value, Interval) else value


def box(x, eps) -> Interval:
    """The L_inf box ``[x - eps, x + eps]`` (``eps >= 0`` and finite, a scalar or broadcastable
    array; NaN or infinite ``eps`` raises ``ValueError`` when concrete)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"box: x must be a floating-point array, got dtype {x.dtype}")
    eps = jnp.asarray(non_negative("eps", eps), x.dtype)
    return Interval(x - eps, x + eps)


def hull(a, b):
    """The smallest interval containing both ``a`` and ``b`` (Intervals or points)."""
    return Interval(
        jnp.minimum(lower_of(a), lower_of(b)), jnp.maximum(upper_of(a), upper_of(b))
    )
