"""Python config files returning ``ml_collections.ConfigDict``, with ``--config.a.b=value`` overrides."""

from __future__ import annotations

import ast
import importlib.util
import json
import os

import ml_collections


class ConfigError(ValueError):
    """A bad config file, key or value; the message is one line for the command line."""


def load_config(path: str) -> ml_collections.ConfigDict:
    """Execute the config file and return its ``get_config()``; ``"file.py:arg"`` returns
    ``get_config("arg")`` (as ml_collections' ``config_flags`` do), for files that hold a family
    of configs (``configs/explanation_training.py:hessian_norm/mnist/cnn``); a ValueError or
    TypeError of ``get_config(arg)`` becomes a :class:`ConfigError`."""
    arg = None
    if not os.path.isfile(path) and ":" in path:
        path, arg = path.split(":", 1)
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    spec = importlib.util.spec_from_file_location("lipxai_user_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path} defines no get_config()")
    if arg is None:
        return module.get_config()
    try:
        return module.get_config(arg)
    except (TypeError, ValueError) as err:   # no argument taken, or an unknown one
        raise ConfigError(f"config {path}:{arg}: {err}") from None


def apply_overrides(config: ml_collections.ConfigDict, overrides) -> ml_collections.ConfigDict:
    """Apply ``["--config.optim.lr=1e-3", ...]`` (or ``"optim.lr=1e-3"``); unknown keys are errors.

    Values are parsed as Python literals (``1e-3``, ``(32, 64)``, ``True``) and
    otherwise taken as strings; the type must match the existing field's.
    """
    config = ml_collections.ConfigDict(config.to_dict())
    for item in overrides:
        text = item.removeprefix("--config.")
        if "=" not in text:
            raise ConfigError(f"override {item!r} must look like --config.key=value")
        key, raw = text.split("=", 1)
        parent, leaf = _parent(config, key)
        value = _parse(raw)
        current = parent[leaf]
        if current is not None and not _compatible(current, value):
            raise ConfigError(f"config key {key} holds a {type(current).__name__}, got {raw!r}")
        if isinstance(current, float) and isinstance(value, int):
            value = float(value)
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        parent[leaf] = value
    return config


def _parent(config, key: str):
    parts = key.split(".")
    node = config
    for i, part in enumerate(parts[:-1]):
        if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
            raise ConfigError(f"unknown config key {'.'.join(parts[:i + 1])} (in {key})")
        node = node[part]
    if parts[-1] not in node:
        known = ", ".join(sorted(node.keys()))
        raise ConfigError(f"unknown config key {key}; known here: {known}")
    return node, parts[-1]


def _parse(raw: str):
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def _compatible(current, value) -> bool:
    if isinstance(current, bool):
        return isinstance(value, bool)
    if isinstance(current, int):   # a float would not fit (ml_collections casts int to float only)
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(current, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(current, (tuple, list)):
        return isinstance(value, (tuple, list))
    return isinstance(value, type(current))


def save_json(config: ml_collections.ConfigDict, path: str) -> None:
    """Write ``config`` to ``path`` atomically: a reader sees the old file or the whole new one."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(config.to_dict(), f, indent=2, sort_keys=True, default=list)
    os.replace(tmp, path)


def load_json(path: str) -> ml_collections.ConfigDict:
    with open(path) as f:
        return ml_collections.ConfigDict(_tuples(json.load(f)))


def load_json_from_dict(tree: dict) -> dict:
    """``tree`` as it reads back from JSON (lists as tuples), for comparisons with a saved config."""
    return _tuples(json.loads(json.dumps(tree, default=list)))


def differences(saved: dict, new: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """``(dotted key, saved value, new value)`` for every leaf that differs between two
    nested config dicts, in key order; a key missing on one side has the value ``"<absent>"``."""
    changes = []
    for key in sorted(set(saved) | set(new)):
        old_value, new_value = saved.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(old_value, dict) and isinstance(new_value, dict):
            changes += differences(old_value, new_value, f"{prefix}{key}.")
        elif old_value != new_value:
            changes.append((f"{prefix}{key}", old_value, new_value))
    return changes


def _tuples(tree):
    if isinstance(tree, dict):
        return {k: _tuples(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return tuple(_tuples(v) for v in tree)
    return tree
