import glob

import jax
import jax.numpy as jnp
import pytest

from lipxai.train import config as config_lib
from lipxai.train import build

CONFIG = "configs/mnist_lip.py"


def test_overrides_parse_types_and_nested_keys():
    cfg = config_lib.apply_overrides(config_lib.load_config(CONFIG), [
        "--config.optim.lr=1e-3", "--config.model.channels=(8, 16)", "--config.train.num_steps=7",
        "--config.loss.name=multiclass_hinge", "--config.loss.alpha=1"])
    assert cfg.optim.lr == 1e-3 and cfg.model.channels == (8, 16) and cfg.train.num_steps == 7
    assert cfg.loss.name == "multiclass_hinge"
    assert isinstance(cfg.loss.alpha, float)


def test_overrides_do_not_mutate_the_original():
    base = config_lib.load_config(CONFIG)
    config_lib.apply_overrides(base, ["--config.optim.lr=0.5"])
    assert base.optim.lr != 0.5


@pytest.mark.parametrize("override,match", [
    ("--config.optim.lrr=1", "unknown config key optim.lrr"),
    ("--config.nothing.lr=1", "unknown config key nothing"),
    ("--config.train.num_steps=abc", "holds a int"),
    ("--config.optim.lr", "must look like"),
])
def test_bad_overrides_are_one_line_errors(override, match):
    with pytest.raises(config_lib.ConfigError, match=match) as info:
        config_lib.apply_overrides(config_lib.load_config(CONFIG), [override])
    assert "\n" not in str(info.value)


def test_json_round_trip_keeps_tuples(tmp_path):
    cfg = config_lib.load_config(CONFIG)
    path = tmp_path / "config.json"
    config_lib.save_json(cfg, str(path))
    assert config_lib.load_json(str(path)).to_dict() == config_lib.load_json_from_dict(cfg.to_dict())
    assert config_lib.load_json(str(path)).model.channels == (32, 64)


def test_missing_config_file_is_reported():
    with pytest.raises(config_lib.ConfigError, match="not found"):
        config_lib.load_config("configs/does_not_exist.py")


@pytest.mark.parametrize("path", sorted(glob.glob("configs/*.py")))
def test_every_config_builds_and_runs_a_loss(path):
    cfg = config_lib.load_config(path)
    model = build.build_model(cfg.model)
    loss = build.build_loss(cfg.loss)
    build.build_optimizer(cfg.optim, cfg.train.num_steps)
    x = jnp.zeros((2, 28, 28, 1))
    logits = model.apply(model.init(jax.random.PRNGKey(0), x), x)
    assert logits.shape == (2, cfg.model.num_classes)
    assert jnp.isfinite(loss(logits, jnp.array([0, 1])))
