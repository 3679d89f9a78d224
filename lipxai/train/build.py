"""Model, loss and optimiser from a run config."""

from __future__ import annotations

import functools

import optax

from lipxai import losses
from lipxai.train.config import ConfigError
from lipxai.nn import zoo

MODELS = {"mlp": zoo.mlp, "cnn": zoo.cnn, "liresnet": zoo.liresnet}
LOSSES = ("kr", "hinge_margin", "hkr", "multiclass_kr", "multiclass_hinge", "multiclass_hkr",
          "soft_hkr", "tau_cross_entropy")


def build_model(cfg):
    """``cfg.name`` in :data:`MODELS`; the other keys are the zoo function's arguments."""
    kwargs = {k: v for k, v in cfg.items() if k != "name"}
    if cfg.name not in MODELS:
        raise ConfigError(f"model.name must be one of {sorted(MODELS)}, got {cfg.name!r}")
    return MODELS[cfg.name](**kwargs)


def build_loss(cfg):
    """``cfg.name`` a function of :mod:`lipxai.losses`; the other keys its hyperparameters."""
    if cfg.name not in LOSSES:
        raise ConfigError(f"loss.name must be one of {list(LOSSES)}, got {cfg.name!r}")
    kwargs = {k: v for k, v in cfg.items() if k != "name"}
    return functools.partial(getattr(losses, cfg.name), **kwargs)


def build_optimizer(cfg, num_steps: int) -> optax.GradientTransformation:
    """Adam(W) with linear warm-up then cosine decay to ``lr * final_lr_fraction``."""
    if cfg.name not in ("adam", "adamw"):
        raise ConfigError(f"optim.name must be 'adam' or 'adamw', got {cfg.name!r}")
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, cfg.lr, warmup_steps=min(cfg.warmup_steps, max(num_steps - 1, 0)),
        decay_steps=max(num_steps, 1), end_value=cfg.lr * cfg.final_lr_fraction)
    if cfg.name == "adamw":
        return optax.adamw(schedule, weight_decay=cfg.weight_decay)
    return optax.adam(schedule)
