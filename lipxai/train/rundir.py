"""A run directory read back: ``config.json``, ``checkpoints/``, ``metrics.jsonl`` (written by
:func:`lipxai.train.train`), as a :class:`Run` that owns what the apps need from it.

A :class:`Run` computes each thing once and keeps it: the exported model behind
:meth:`Run.apply` (:func:`lipxai.nn.export`) and each data split (:meth:`Run.split`), so that a
command that certifies, explains and evaluates a run loads its test split once and exports
its model once.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp

from lipxai import data
from lipxai._core.checks import positive_int
from lipxai.nn import export
from lipxai.train import checkpoint, divergence
from lipxai.train import config as config_lib
from lipxai.train.build import build_model, build_optimizer
from lipxai.train.state import init_state
from lipxai.train.workdir import CONFIG, METRICS


class RunNotFoundError(FileNotFoundError):
    """``workdir`` is not a (finished or checkpointed) lipxai run directory."""


@dataclasses.dataclass(frozen=True, eq=False)
class Run:
    """A trained run: ``apply(x) -> logits`` on NHWC images in [0, 1] (normalisation included).

    Compared and hashed by identity, so that ``run.apply`` can be a static argument of a
    jitted function (the compiled code is reused for as long as the run is).
    """

    workdir: str
    config: Any
    model: Any
    variables: Any
    step: int
    _cache: dict = dataclasses.field(default_factory=dict, init=False, repr=False)

    def apply(self, x: jax.Array) -> jax.Array:
        """Batched logits; a pure function of ``x`` (jit it, differentiate it, vmap it).

        Runs the exported model (:meth:`export`): the same values as ``apply_variables(
        variables, x)`` with every reparametrised layer (Björck, AOL, Cayley, ...) replaced by
        a plain layer holding its effective weights, so that a transformation that compiles
        this function (a boundary search, an explanation) compiles plain layers, not the
        reparametrisations' iterations on constant weights.
        """
        module, variables = self.export()
        return module.apply(variables, self.normalize(x))

    def apply_variables(self, variables, x: jax.Array) -> jax.Array:
        """The trained model with explicit (reparametrised) ``variables``: for gradients with
        respect to the weights; jit this one to keep the weights as arguments."""
        return self.model.apply(variables, self.normalize(x))

    def export(self):
        """``(plain_module, plain_variables)`` of :func:`lipxai.nn.export`, computed once, from
        the concrete weights even when first asked for inside a traced function (``jit`` of
        :meth:`apply`), so that the cached weights are arrays, never a trace's tracers."""
        if "export" not in self._cache:
            with jax.ensure_compile_time_eval():
                self._cache["export"] = export(self.model, self.variables,
                                               input_shape=(1, *self.image_shape))
        return self._cache["export"]

    def split(self, name: str = "test", n: int | None = None):
        """``(x, labels)``: the first ``n`` examples (``None``: all) of split ``name`` of the
        run's dataset, ``x`` float32 ``[n, H, W, C]`` in [0, 1] (the input of :meth:`apply`),
        ``labels`` int ``[n]``; read once per ``(name, n)``.  ``n`` must lie in ``[1, size of
        the split]`` (a negative ``n`` would slice from the end)."""
        key = ("split", name, n)
        if key not in self._cache:
            images, labels = data.load_split(self.config.data.name, name,
                                             data_dir=self.config.data.data_dir or None)
            if n is not None:
                if positive_int("n", n) > len(images):
                    raise ValueError(f"n must be in [1, {len(images)}] (the size of split {name!r}), "
                                     f"got {n}")
                images, labels = images[:n], labels[:n]
            self._cache[key] = (data.preprocess(images), labels)
        return self._cache[key]

    def normalize(self, x: jax.Array) -> jax.Array:
        """The run's input normalisation ``(x - mean) / std`` (identity without one)."""
        return data.normalize(x, self.config.data.normalize)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """``(H, W, C)`` of the run's dataset."""
        return data.DATASETS[self.config.data.name].image_shape

    @property
    def input_lipschitz_factor(self) -> float:
        """Lipschitz constant of the input normalisation (``1 / min std``; 1 without it)."""
        normalize = self.config.data.normalize
        return float(1.0 / min(normalize[1])) if normalize else 1.0

    @property
    def config_path(self) -> str:
        return os.path.join(self.workdir, CONFIG)

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.workdir, METRICS)

    def metrics(self, split: str | None = None) -> list[dict]:
        """The records of ``metrics.jsonl`` (of ``split`` only, e.g. ``"train"``, when given)."""
        if not os.path.exists(self.metrics_path):
            return []
        with open(self.metrics_path) as f:
            records = [json.loads(line) for line in f if line.strip()]
        return [r for r in records if split is None or r.get("split") == split]


def load_run(workdir: str) -> Run:
    """Load the latest checkpoint of a run directory (see :func:`lipxai.train.train`).

    A broken latest checkpoint is moved aside and the newest one that restores is loaded,
    with one line on stderr (:func:`lipxai.train.checkpoint.restore_latest`).
    """
    path = os.path.join(workdir, CONFIG)
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
