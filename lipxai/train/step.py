"""Jitted train and eval steps: a train step differentiates an objective
(:mod:`lipxai.train.objectives`) with respect to the parameters and applies the optimiser."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from lipxai._core.xla_cpu import for_train_steps
from lipxai.train.objectives import objective as make_objective
from lipxai.train.state import TrainState


def make_objective_step(model, objective: Callable, optimizer: optax.GradientTransformation, *,
                        num_steps: int, seed: int = 0):
    """``step(state, x, y) -> (state, metrics)``, jitted, donating the state.

    ``objective`` is ``obj(apply, variables, x, y, *, key, progress, logits) -> (loss, aux)``
    (:func:`lipxai.train.objectives.objective`); at step ``t`` it gets ``progress = t /
    num_steps`` and ``key = fold_in(PRNGKey(seed), t)``, both traced, so one compilation serves
    every step and a resumed run draws the same samples.  The clean forward pass runs once,
    with every non-parameter collection mutable (power-iteration vectors and running means
    advance once per step), and its logits go to the objective.  The ``apply`` the terms see
    runs the model the same way (training mode) but discards the collection updates, so it is
    a pure function of ``(variables, x)``.  ``metrics``: ``"loss"``, ``"accuracy"`` and the
    objective's aux scalars.

    On the CPU backend the loss and its gradient run through
    :func:`lipxai._core.xla_cpu.for_train_steps`: the same values, with the weight gradients
    of backward-pass (transposed) convolutions, which bounded or regularised input gradients
    differentiate, in the form XLA:CPU runs many times faster.
    """
    base_key = jax.random.PRNGKey(seed)

    def step(state: TrainState, x, y):
        mutable = list(state.collections)

        def apply(variables, inputs):
            return model.apply(variables, inputs, mutable=mutable)[0]

        def loss_fn(params, collections, x, y, t):
            variables = {"params": params, **collections}
            logits, updated = model.apply(variables, x, mutable=mutable)
            loss, aux = objective(apply, variables, x, y, key=jax.random.fold_in(base_key, t),
                                  progress=t / num_steps, logits=logits)
            return loss, (logits, updated, aux)

        value_and_grad = for_train_steps(jax.value_and_grad(loss_fn, has_aux=True))
        (loss, (logits, updated, aux)), grads = value_and_grad(state.params, state.collections, x, y,
                                                               state.step)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                                  opt_state=opt_state, collections={**state.collections, **updated})
        accuracy = jnp.mean(jnp.argmax(logits, -1) == y)
        return new_state, {"loss": loss, "accuracy": accuracy, **aux}

    return jax.jit(step, donate_argnums=0)


def make_train_step(model, loss_fn: Callable, optimizer: optax.GradientTransformation, *,
                    eikonal_weight: float = 0.0):
    """``step(state, x, y) -> (state, {"loss", "accuracy"})``, jitted, donating the state: the
    objective ``loss_fn(logits, y)``, plus with ``eikonal_weight > 0`` the ``margin_eikonal``
    term (``eikonal_weight`` times :func:`lipxai.losses.margin_eikonal` at the predicted
    classes: one more backward pass, differentiated, about three times the cost of a step).
    :func:`make_objective_step` for any other objective.
    """
    terms = [("margin_eikonal", dict(weight=eikonal_weight))] if eikonal_weight else []
    step_fn = make_objective_step(model, make_objective(loss_fn, terms), optimizer, num_steps=1)

    def step(state: TrainState, x, y):
        state, metrics = step_fn(state, x, y)
        return state, {"loss": metrics["loss"], "accuracy": metrics["accuracy"]}

    return step


def make_predict(model):
    """``predict(variables, x) -> logits`` in evaluation mode (no collection mutated), jitted."""
    return jax.jit(model.apply)
