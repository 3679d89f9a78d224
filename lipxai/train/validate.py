"""Validation of a training config's values, before anything is loaded, built or written.

:func:`lipxai.train.train` calls :func:`validate_config` first, so a bad value is one
:class:`~lipxai.train.config.ConfigError` naming its dotted key, the expected and the received value,
and no run directory is created.  Model and loss hyperparameters are checked where they are
built (:mod:`lipxai.train.build`); the objective (task and terms) is built here once, so its
bad values are found before anything is loaded.
"""

from __future__ import annotations

import math
import numbers

from lipxai import data
from lipxai.train.build import build_objective
from lipxai.train.config import ConfigError

#: ``train.divergence_factor`` when a config has no such key (see :mod:`lipxai.train.divergence`).
DEFAULT_DIVERGENCE_FACTOR = 1e3


def validate_config(config) -> None:
    """Raise :class:`ConfigError` for the first invalid seed, data, optim, train or objective
    value (the objective's task and terms are made once: :func:`lipxai.train.build.build_objective`)."""
    _int(config, "seed", minimum=0)
    _dataset(config)
    _int(config, "train.num_steps", minimum=1)
    for key in ("train.batch_size", "train.log_every", "train.eval_every", "train.checkpoint_every"):
        _int(config, key, minimum=1)
    _int(config, "train.eval_examples", minimum=0)
    _eikonal(config)
    factor = _number(config, "train.divergence_factor", default=DEFAULT_DIVERGENCE_FACTOR)
    if factor != 0 and factor <= 1:
        raise ConfigError(f"train.divergence_factor must be 0 (no check) or > 1, got {factor!r}")
    _number(config, "optim.lr", positive=True)
    _int(config, "optim.warmup_steps", minimum=0)
    _number(config, "optim.final_lr_fraction")
    _number(config, "optim.weight_decay", default=0.0)
    build_objective(config, eikonal_weight=eikonal_phase(config)[0])


def eikonal_phase(config) -> tuple[float, int]:
    """``train.eikonal_weight`` and ``train.eikonal_steps`` (the last steps that add the
    margin's eikonal penalty); both absent or 0 in configs that do not use it."""
    return float(config.train.get("eikonal_weight", 0.0)), int(config.train.get("eikonal_steps", 0))


def divergence_factor(config) -> float:
    """``train.divergence_factor``, :data:`DEFAULT_DIVERGENCE_FACTOR` when absent (0: no check)."""
    return float(config.train.get("divergence_factor", DEFAULT_DIVERGENCE_FACTOR))


def _eikonal(config) -> None:
    weight = _number(config, "train.eikonal_weight", default=0.0)
    steps = _int(config, "train.eikonal_steps", minimum=0, default=0)
    if (weight > 0) != (steps > 0):
        raise ConfigError("set train.eikonal_weight and train.eikonal_steps together "
                          f"(got {weight} and {steps})")
    if steps >= config.train.num_steps:
        raise ConfigError(
            f"train.eikonal_steps ({steps}) must be smaller than train.num_steps ({config.train.num_steps}): "
            "the eikonal phase fine-tunes a trained model (from initialisation it diverged on a small "
            "CNN); set both eikonal keys to 0 for short runs")


def _dataset(config) -> None:
    name = _get(config, "data.name")
    if not isinstance(name, str) or name not in data.DATASETS:
        raise ConfigError(f"data.name must be one of {sorted(data.DATASETS)}, got {name!r}")
    for key in ("data.train_split", "data.test_split"):
        try:
            data.check_split(name, _get(config, key))
        except ValueError as err:
            raise ConfigError(f"{key}: {err}") from None


_MISSING = object()


def _get(config, key: str, default=_MISSING):
    node = config
    for part in key.split("."):
        if part not in node:
            if default is _MISSING:
                raise ConfigError(f"the config has no {key}")
            return default
        node = node[part]
    return node


def _int(config, key: str, *, minimum: int, default=_MISSING) -> int:
    value = _get(config, key, default)
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _number(config, key: str, *, positive: bool = False, default=_MISSING) -> float:
    """A finite real number >= 0, or > 0 when ``positive`` (every float of a training config is one)."""
    value = _get(config, key, default)
    if (not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value)
            or value < 0 or (positive and value == 0)):
        raise ConfigError(f"{key} must be a finite number {'>' if positive else '>='} 0, got {value!r}")
    return float(value)
