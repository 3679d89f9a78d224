"""Run directories written by ``lipxai train``: ``config.json``, ``checkpoints/``, ``metrics.jsonl``."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp

from lipxai import config as config_lib
from lipxai import data
from lipxai.train import checkpoint, divergence
from lipxai.train.build import build_model, build_optimizer
from lipxai.train.state import init_state


class RunNotFoundError(FileNotFoundError):
    """``workdir`` is not a (finished or checkpointed) lipxai run directory."""


@dataclasses.dataclass(frozen=True)
class Run:
    """A trained run: ``apply(x) -> logits`` on NHWC images in [0, 1] (normalisation included)."""

    workdir: str
    config: Any
    model: Any
    variables: Any
    step: int

    def apply(self, x: jax.Array) -> jax.Array:
        """Batched logits; a pure function of ``x`` (jit it, differentiate it, vmap it)."""
        return self.apply_variables(self.variables, x)

    def apply_variables(self, variables, x: jax.Array) -> jax.Array:
        """``apply`` with explicit variables: jit this one to keep the weights as arguments
        (a jitted closure over them makes XLA constant-fold the reparametrisations)."""
        return self.model.apply(variables, self.normalize(x))

    def normalize(self, x: jax.Array) -> jax.Array:
        """The run's input normalisation ``(x - mean) / std`` (identity without one)."""
        return data.normalize(x, self.config.data.normalize)

    @property
    def input_lipschitz_factor(self) -> float:
        """Lipschitz constant of the input normalisation (``1 / min std``; 1 without it)."""
        normalize = self.config.data.normalize
        return float(1.0 / min(normalize[1])) if normalize else 1.0


def load_run(workdir: str) -> Run:
    """Load the latest checkpoint of a run directory (see :func:`lipxai.train.train`).

    A broken latest checkpoint is moved aside and the newest one that restores is loaded,
    with one line on stderr (:func:`lipxai.train.checkpoint.restore_latest`).
    """
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise RunNotFoundError(f"{workdir} is not a lipxai run directory (no config.json); "
                               "create one with `lipxai train --config CONFIG --workdir DIR`")
    config = config_lib.load_json(path)
    model = build_model(config.model)
    optimizer = build_optimizer(config.optim, config.train.num_steps)
    sample = jnp.zeros((1, *data.DATASETS[config.data.name].image_shape), jnp.float32)
    template = init_state(model, optimizer, jax.random.PRNGKey(config.seed), sample)
    mngr = checkpoint.manager(os.path.join(workdir, "checkpoints"))
    state = checkpoint.restore_latest(mngr, template, is_sound=lambda s: bool(divergence.all_finite(s)))
    mngr.close()
    if state is None:
        raise RunNotFoundError(f"{workdir} has no checkpoint yet; train it with `lipxai train`")
    return Run(workdir=workdir, config=config, model=model, variables=state.variables, step=int(state.step))
