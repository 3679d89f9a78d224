"""Re-evaluating jaxpr equations: what the jaxpr interpreters (lipxai.bounds,
lipxai.metrics.softplus_relu) share."""

from __future__ import annotations


def bind(eqn, invals):
    """Evaluate equation ``eqn`` on ``invals`` with its primitive, as JAX would."""
    bound = eqn.primitive.get_bind_params(eqn.params)
    subfuns, params = bound if isinstance(bound, tuple) else ((), bound)  # jax < 0.8: a pair
    return eqn.primitive.bind(*subfuns, *invals, **params)


def scan_layout(params) -> tuple[int, int]:
    """``(num_consts, num_carry)`` of a ``scan`` equation: named params before jax 0.11, the
    flat-tree layout ``ft_in = (consts, carry, xs)`` since."""
    if "num_consts" in params:
        return params["num_consts"], params["num_carry"]
    consts, carry, _ = params["ft_in"].unpack()
    return len(list(consts.vals)), len(list(carry.vals))
