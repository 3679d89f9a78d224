"""``lipxai reproduce NAME [--fast]``: the headline experiment of each paper lipxai comes from,
regenerated with lipxai's own training objectives, certificates, attacks and metrics.

An experiment module holds ``NAME``, ``TITLE``, its ``FULL`` and ``FAST`` settings and
``run(settings, trained) -> result``, where ``trained(RunSpec) -> Run`` trains a run once and
reuses it afterwards (:mod:`lipxai.apps.reproduce.runs`).  The result (tables, figure panels,
findings checked against the numbers, and the raw numbers) is written by
:func:`lipxai.apps.report.write_experiment` into ``OUT/NAME/``: ``NAME.md``, ``NAME.json`` and
``NAME.png`` (``NAME_fast.*`` for ``--fast``), with the command, date, commit and machine.
"""

from __future__ import annotations

import functools
import os

from lipxai.apps import names, report
from lipxai.apps.reproduce import boundary_attributions, certified_explanations, lipschitz_saliency, scaat
from lipxai.apps.reproduce.provenance import provenance
from lipxai.apps.reproduce.runs import RunSpec, trained
from lipxai.train.config import ConfigError

#: The experiments by name.
EXPERIMENTS = {module.NAME: module for module in (certified_explanations, scaat, lipschitz_saliency,
                                                  boundary_attributions)}
assert tuple(EXPERIMENTS) == names.EXPERIMENTS, "apps.names.EXPERIMENTS lists the experiments"

__all__ = ["EXPERIMENTS", "RunSpec", "reproduce"]


def reproduce(name: str, out_dir: str = "results", *, fast: bool = False, runs_dir: str | None = None,
              verbose: bool = False) -> dict[str, str]:
    """Run experiment ``name`` (its ``FAST`` settings when ``fast``), training what it needs
    into ``runs_dir`` (default ``OUT/NAME/runs`` or ``runs-fast``); returns the written paths."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; known: {', '.join(sorted(EXPERIMENTS))}")
    experiment = EXPERIMENTS[name]
    folder = os.path.join(out_dir, name)
    runs_dir = runs_dir or os.path.join(folder, "runs-fast" if fast else "runs")
    settings = experiment.FAST if fast else experiment.FULL
    result = experiment.run(settings, functools.partial(trained, runs_dir=runs_dir, fast=fast,
                                                        verbose=verbose))
    command = f"lipxai reproduce {name}" + (" --fast" if fast else "")
    stem = f"{name}_fast" if fast else name
    return report.write_experiment(folder, stem, result, provenance(command))
