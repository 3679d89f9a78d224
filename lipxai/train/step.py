"""Jitted train and eval steps made from ``(model, loss, optimiser)``."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from lipxai.train.state import TrainState


def make_train_step(model, loss_fn: Callable, optimizer: optax.GradientTransformation):
    """``step(state, x, y) -> (state, {"loss", "accuracy"})``, jitted, donating the state.

    Every non-parameter collection of the state is passed as mutable, so
    power-iteration vectors and running means advance once per step.
    """

    def step(state: TrainState, x, y):
        mutable = list(state.collections)

        def objective(params):
            logits, updated = model.apply({"params": params, **state.collections}, x, mutable=mutable)
            return loss_fn(logits, y), (logits, updated)

        (loss, (logits, updated)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                                  opt_state=opt_state, collections={**state.collections, **updated})
        accuracy = jnp.mean(jnp.argmax(logits, -1) == y)
        return new_state, {"loss": loss, "accuracy": accuracy}

    return jax.jit(step, donate_argnums=0)


def make_predict(model):
    """``predict(variables, x) -> logits`` in evaluation mode (no collection mutated), jitted."""
    return jax.jit(model.apply)
