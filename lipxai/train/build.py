"""Model, loss, objective and optimiser from a run config."""

from __future__ import annotations

import optax

from lipxai.nn import zoo
from lipxai.train import objectives
from lipxai.train.config import ConfigError

MODELS = {"mlp": zoo.mlp, "cnn": zoo.cnn, "liresnet": zoo.liresnet,
          "unconstrained_mlp": zoo.unconstrained_mlp, "unconstrained_cnn": zoo.unconstrained_cnn}
#: ``loss.name``: softmax cross-entropy or a loss of :mod:`lipxai.losses`.
LOSSES = objectives.TASKS


def build_model(cfg):
    """``cfg.name`` in :data:`MODELS`; the other keys are the zoo function's arguments."""
    kwargs = {k: v for k, v in cfg.items() if k != "name"}
    if cfg.name not in MODELS:
        raise ConfigError(f"model.name must be one of {sorted(MODELS)}, got {cfg.name!r}")
    return MODELS[cfg.name](**kwargs)


def build_loss(cfg):
    """``cfg.name`` in :data:`LOSSES` (``"cross_entropy"`` or a function of :mod:`lipxai.losses`);
    the other keys its hyperparameters."""
    if cfg.name not in LOSSES:
        raise ConfigError(f"loss.name must be one of {list(LOSSES)}, got {cfg.name!r}")
    kwargs = {k: v for k, v in cfg.items() if k != "name"}
    try:
        return objectives.task_loss(cfg.name, kwargs)
    except ValueError as err:
        raise ConfigError(f"loss: {err}") from None


def build_objective(config, *, eikonal_weight: float = 0.0):
    """The objective of a run config: the task ``config.loss`` and, when the config has an
    ``objective`` section, its ``task_weight``, ``domain`` (``()`` for none) and ``terms`` (a
    dict term name -> hyperparameters, made in name order, so that each term's key does not
    depend on the order of the keys); plus the ``margin_eikonal`` term when ``eikonal_weight > 0``
    (the eikonal phase).  A bad value is a :class:`ConfigError` naming its dotted key
    (``objective.terms.hessian_norm.lam must be ...``)."""
    section = config.get("objective") or {}
    terms = [_term(name, kwargs) for name, kwargs in sorted(_plain(section.get("terms") or {}).items())]
    if eikonal_weight:
        terms.append(_term("margin_eikonal", dict(weight=eikonal_weight)))
    domain = tuple(section.get("domain", ()) or ()) or None
    task = build_loss(config.loss)
    try:
        return objectives.objective(task, terms, domain=domain,
                                    task_weight=section.get("task_weight", 1.0))
    except ValueError as err:
        raise ConfigError(f"objective.{err}") from None


def _term(name: str, kwargs):
    """The term ``name`` of the config's ``objective.terms``; errors name the dotted key."""
    try:
        return objectives.make_term(name, _plain(kwargs or {}))
    except ValueError as err:
        message = str(err)
        if name not in objectives.TERMS:
            raise ConfigError(f"objective.terms: {message}") from None
        names_key = message.split(" ", 1)[0] in objectives.hyperparameters(name)
        raise ConfigError(f"objective.terms.{name}.{message}" if names_key
                          else f"objective.terms.{name}: {message}") from None


def _plain(tree) -> dict:
    """A config section (a ``ConfigDict`` or a dict) as a plain dict."""
    return tree.to_dict() if hasattr(tree, "to_dict") else dict(tree)


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
