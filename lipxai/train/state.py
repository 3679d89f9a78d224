"""The train state: one pytree holding everything a step reads and writes."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """``step``, ``params``, ``opt_state`` and the model's other variable collections
    (``"lipschitz_state"`` power-iteration vectors, ``"batch_stats"`` running means)."""

    step: jax.Array
    params: Any
    opt_state: Any
    collections: Any

    @property
    def variables(self):
        """The variables to pass to ``model.apply`` in evaluation."""
        return {"params": self.params, **self.collections}


def init_state(model, optimizer: optax.GradientTransformation, key, sample_x) -> TrainState:
    """Initialise the model on ``sample_x`` (a batch of the right shape) and the optimiser."""
    variables = model.init(key, sample_x)
    params = variables["params"]
    collections = {k: v for k, v in variables.items() if k != "params"}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params), collections=collections)
