"""The runs an experiment trains: a config of ``configs/`` with overrides, trained once into a
run directory of its own and reused by every later call (:func:`lipxai.train.train` resumes a
finished run without a step).

``fast`` runs (``lipxai reproduce NAME --fast``) take :data:`FAST_OVERRIDES` on top: a few
small steps, enough to exercise the whole experiment in CI, in run directories apart from the
full runs'.
"""

from __future__ import annotations

import dataclasses
import os
import re

from lipxai.train import config as config_lib
from lipxai.train import rundir, train

#: What ``--fast`` changes in every config: 12 steps of 32 images, one evaluation at the end.
FAST_OVERRIDES = ("train.num_steps=12", "train.batch_size=32", "train.log_every=12",
                  "train.eval_every=12", "train.checkpoint_every=12", "train.eval_examples=64",
                  "optim.warmup_steps=2")


def configs_dir() -> str:
    """``configs/`` of the working directory, else of the repository that holds lipxai."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in ("configs", os.path.join(here, os.pardir, os.pardir, os.pardir, "configs")):
        if os.path.isdir(candidate):
            return os.path.normpath(candidate)
    raise config_lib.ConfigError("configs/ not found: run from the lipxai repository")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run of an experiment: ``config`` a file of ``configs/`` (``"file.py"`` or
    ``"file.py:arg"``), ``overrides`` its ``key=value`` changes, ``label`` its name in tables."""

    config: str
    overrides: tuple[str, ...] = ()
    label: str = ""

    @property
    def slug(self) -> str:
        """The run directory's name: the config argument and the overridden leaf keys with their
        values (``certified_explanation-mnist-fcn_eps=0.01``), file-name safe."""
        stem = self.config.split(":", 1)[-1]
        leaves = (o.split("=", 1)[0].rsplit(".", 1)[-1] + "=" + o.split("=", 1)[-1] for o in self.overrides)
        text = "_".join([stem, *leaves])
        return re.sub(r"[^A-Za-z0-9_.=-]+", "-", text).strip("-")

    def resolved(self, *, fast: bool):
        """The config with the overrides (and :data:`FAST_OVERRIDES` when ``fast``) applied."""
        config = config_lib.load_config(os.path.join(configs_dir(), self.config))
        extra = FAST_OVERRIDES if fast else ()
        return config_lib.apply_overrides(config, [*self.overrides, *extra])


def trained(spec: RunSpec, runs_dir: str, *, fast: bool, verbose: bool = False) -> rundir.Run:
    """Train ``spec`` into ``runs_dir/<slug>`` unless it is already trained, and load it."""
    workdir = os.path.join(runs_dir, spec.slug)
    train(spec.resolved(fast=fast), workdir, verbose=verbose)
    return rundir.load_run(workdir)
