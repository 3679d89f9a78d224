r"""``softplus_relu(fn, beta)``: replace every ReLU of a JAX function by a softplus.

The saliency map of a ReLU network is piecewise constant in the input: its gradient (the
second derivative of the network) is zero almost everywhere, so an attack that follows the
gradient of an explanation cannot move.  Dombrowski et al. 2019, "Explanations can be
manipulated and geometry is to blame" (NeurIPS), replace every ReLU by

.. math:: \mathrm{softplus}_\beta(z) = \frac{1}{\beta}\log\big(1 + e^{\beta z}\big),

which converges to :math:`\max(z, 0)` uniformly as :math:`\beta\to\infty`
(:math:`0 \le \mathrm{softplus}_\beta(z) - \max(z, 0) \le \log 2 / \beta`), attack the
smoothed network, and evaluate the result on the original one.

:func:`softplus_relu` does this as a JAX *function transformation*, for any JAX function
(not only lipxai or Flax models): it traces ``fn`` to a jaxpr on the shapes of its
arguments and re-interprets it, equation by equation.  An equation ``max(z, 0)`` (``z``
floating, the other operand a literal zero, a constant zero or a broadcast / reshape /
conversion of one in the same jaxpr; either order) is what ``jax.nn.relu`` and
``flax.linen.relu`` lower to, and is evaluated as ``softplus(beta * z) / beta`` (stable:
``jax.nn.softplus``).  Every other equation is bound as usual.  Equations that carry
sub-jaxprs are re-interpreted recursively when a sub-jaxpr contains a ReLU:

* ``jit``, ``closed_call``, ``core_call``: the body is inlined;
* ``custom_jvp_call`` / ``custom_vjp_call`` (``jax.nn.relu`` is a ``custom_jvp``): the body
  is inlined *without* its custom derivative rule (which was written for the ReLU), so the
  derivatives are those of the smoothed body;
* ``remat`` / ``checkpoint``: re-wrapped in :func:`jax.checkpoint` (same policy);
* ``cond``, ``scan``, ``while``: rebuilt with :func:`jax.lax.switch`, :func:`jax.lax.scan`,
  :func:`jax.lax.while_loop` around the re-interpreted bodies.

An equation whose sub-jaxprs contain no ReLU is bound unchanged (e.g. ``softplus`` itself,
whose ``logaddexp`` body has a ``max`` with a zero passed in as an argument, or lipxai's
max-pooling, which stays a max-pooling as in Dombrowski et al.).  Another higher-order
primitive with a ReLU inside raises ``NotImplementedError`` naming it.  A ReLU written some
other way (``jnp.where(z > 0, z, 0)``, ``z * (z > 0)``) is not recognised.

With ``max_min=True`` every elementwise ``max(a, b)`` / ``min(a, b)`` of two floating
operands is smoothed as well, as

.. math:: \max(a, b) \approx b + \mathrm{softplus}_\beta(a - b), \qquad
          \min(a, b) \approx a - \mathrm{softplus}_\beta(a - b)

(ReLU is the case ``b = 0``; ``max + min = a + b`` is kept exactly): the GroupSort / MaxMin
activations of 1-Lipschitz networks are piecewise linear too, so their saliency maps are as
flat as a ReLU network's.  This smooths *every* such ``max`` / ``min`` of the program
(clamps included), so use it on models, not on losses.

The interpretation happens when the transformed function is called (it traces ``fn`` again
on each call's shapes), with ordinary JAX operations, so the result composes with
``jax.grad`` (to any order), ``jax.vmap`` and ``jax.jit``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from lipxai._core.checks import positive
from lipxai._core.jaxpr import Rewriter

__all__ = ["softplus_relu"]

#: Primitives that only move / convert values: a zero in gives a zero out.
_ZERO_PRESERVING = frozenset(
    {"broadcast_in_dim", "convert_element_type", "reshape", "squeeze", "expand_dims", "copy",
     "copy_p", "transpose"}
)


def softplus_relu(fn: Callable, beta: float, *, max_min: bool = False) -> Callable:
    r"""Return ``fn`` with every ReLU replaced by :math:`\log(1 + e^{\beta z}) / \beta`.

    Dombrowski et al. 2019, "Explanations can be manipulated and geometry is to blame": the
    second derivatives of a ReLU network vanish almost everywhere; those of the smoothed
    network do not, so gradient attacks on its explanations can make progress.  The result
    differs from ``fn`` by at most ``log(2) / beta`` per ReLU (times the Lipschitz constant
    of what follows it) and converges to it as ``beta`` grows.

    Args:
      fn: any JAX-traceable function (arguments and outputs: pytrees of arrays).
      beta: the inverse temperature :math:`\beta > 0` (Dombrowski et al. anneal it from
        about 0.8 to 30 on MNIST-sized networks; larger is closer to ``fn``).
      max_min: also smooth every elementwise ``max`` / ``min`` of two floating operands
        (GroupSort / MaxMin; see the module docstring).

    Returns:
      A function with ``fn``'s signature, usable under ``jax.grad``, ``jax.vmap`` and
      ``jax.jit``.  How ReLUs are recognised, and which sub-jaxprs are followed, is in the
      module docstring.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    return _Smoother(float(positive("beta", beta)), bool(max_min)).transform(fn)


def _is_zero_literal(var) -> bool:
    if not isinstance(var, jcore.Literal):
        return False
    val = var.val
    try:
        return bool(np.all(np.asarray(val) == 0))
    except Exception:  # a literal that numpy cannot read: not a zero we recognise
        return False


def _concrete_zero(value) -> bool:
    if isinstance(value, jax.core.Tracer):
        return False
    try:
        arr = np.asarray(value)
    except Exception:
        return False
    return arr.size > 0 and bool(np.all(arr == 0))


def _floating(var) -> bool:
    aval = getattr(var, "aval", None)
    return aval is not None and jnp.issubdtype(aval.dtype, jnp.floating)


class _Smoother(Rewriter):
    """ReLUs (and, with ``max_min``, floating max / min) become softplus expressions."""

    description = "lipxai.metrics.softplus_relu: a ReLU"

    def __init__(self, beta: float, max_min: bool):
        super().__init__()
        self.beta = beta
        self.max_min = max_min

    def context(self, jaxpr, consts=None) -> set:
        """The variables of ``jaxpr`` known to be zero."""
        zeros = set()
        if consts is not None:
            # only constants that reach a max (directly or through a broadcast / reshape)
            # are read back from the device
            used = {v for eqn in jaxpr.eqns
                    if eqn.primitive.name == "max" or eqn.primitive.name in _ZERO_PRESERVING
                    for v in eqn.invars if not isinstance(v, jcore.Literal)}
            zeros |= {v for v, c in zip(jaxpr.constvars, consts, strict=True)
                      if v in used and _concrete_zero(c)}
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in _ZERO_PRESERVING and eqn.invars:
                src = eqn.invars[0]
                if _is_zero_literal(src) or src in zeros:
                    zeros.update(eqn.outvars)
        return zeros

    def is_target(self, eqn, zeros) -> bool:
        return self._is_relu(eqn, zeros) or self._is_max_min(eqn)

    def _is_relu(self, eqn, zeros) -> bool:
        if eqn.primitive.name != "max" or len(eqn.invars) != 2:
            return False
        if not _floating(eqn.outvars[0]):
            return False
        a, b = eqn.invars
        is_zero = lambda v: _is_zero_literal(v) or (not isinstance(v, jcore.Literal)
                                                    and v in zeros)
        return is_zero(a) != is_zero(b)

    def _is_max_min(self, eqn) -> bool:
        return (self.max_min and eqn.primitive.name in ("max", "min")
                and len(eqn.invars) == 2 and _floating(eqn.outvars[0]))

    def softplus(self, z):
        beta = jnp.asarray(self.beta, z.dtype)
        return jax.nn.softplus(beta * z) / beta

    def rewrite(self, eqn, invals, zeros):
        dtype, shape = eqn.outvars[0].aval.dtype, eqn.outvars[0].aval.shape
        if self._is_relu(eqn, zeros):
            a, _ = eqn.invars
            z = invals[1] if (_is_zero_literal(a) or a in zeros) else invals[0]
            return jnp.broadcast_to(self.softplus(jnp.asarray(z, dtype)), shape)
        a, b = (jnp.asarray(v, dtype) for v in invals)
        s = self.softplus(a - b)
        return jnp.broadcast_to(b + s if eqn.primitive.name == "max" else a - s, shape)
