"""Re-evaluating jaxpr equations: what the jaxpr interpreters (lipxai.bounds,
lipxai.metrics.softplus_relu) share."""

from __future__ import annotations


def bind(eqn, invals):
    """Evaluate equation ``eqn`` on ``invals`` with its primitive, as JAX would."""
    bound = eqn.primitive.get_bind_params(eqn.params)
    subfuns, params = bound if isinstance(bound, tuple) else ((), bound)  # jax < 0.8: a pair
    return eqn.primitive.bind(*subfuns, *invals, **params)
