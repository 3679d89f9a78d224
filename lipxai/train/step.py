"""Jitted train and eval steps made from ``(model, loss, optimiser)``."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from lipxai import losses
from lipxai.train.state import TrainState


def make_train_step(model, loss_fn: Callable, optimizer: optax.GradientTransformation, *,
                    eikonal_weight: float = 0.0):
    """``step(state, x, y) -> (state, {"loss", "accuracy"})``, jitted, donating the state.

    Every non-parameter collection of the state is passed as mutable, so
    power-iteration vectors and running means advance once per step.  With
    ``eikonal_weight > 0`` the objective adds ``eikonal_weight`` times
    :func:`lipxai.losses.margin_eikonal` at the batch, for the predicted classes (one more
    backward pass, differentiated: about three times the cost of a step).
    """

    def step(state: TrainState, x, y):
        mutable = list(state.collections)

        def objective(params):
            variables = {"params": params, **state.collections}
            logits, updated = model.apply(variables, x, mutable=mutable)
            loss = loss_fn(logits, y)
            if eikonal_weight:
                predicted = jax.lax.stop_gradient(jnp.argmax(logits, -1))

                def apply(inputs):
                    return model.apply(variables, inputs, mutable=mutable)[0]

                loss = loss + eikonal_weight * losses.margin_eikonal(apply, x, predicted)
            return loss, (logits, updated)

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
