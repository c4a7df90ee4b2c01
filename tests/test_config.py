"""Config contract and validation, checked before anything is read or compiled."""

import importlib.util
import os

import pytest

from avjax import config as config_lib
from avjax.registry import ConfigError

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs")


def _load(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(CONFIG_DIR, name))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(CONFIG_DIR) if f.endswith(".py")))
@pytest.mark.parametrize("arg", [None, "smoke"])
def test_every_config_validates_and_has_a_smoke_variant(name, arg):
  config = _load(name).get_config(arg)
  config_lib.validate(config)
  for key in ("seed", "dataset", "model", "method", "optimizer", "train", "mesh"):
    assert key in config
  if arg == "smoke":
    assert config.dataset.name == "synthetic_av"


def test_unknown_config_argument_is_refused():
  with pytest.raises(ValueError, match="smoke"):
    _load("demo.py").get_config("smok")


def test_base_config_is_locked_against_typos():
  config = config_lib.base_config()
  config.lock()
  with pytest.raises(AttributeError):
    config.train.batch_sise = 3


@pytest.mark.parametrize("section,key,value,match", [
    ("method", "name", "nope", "Unknown method 'nope'. Known methods:"),
    ("model", "fusion", "nope", "Unknown fusion 'nope'"),
    ("model", "name", "nope", "Unknown model 'nope'"),
    ("optimizer", "schedule", "linear", "optimizer.schedule"),
    ("train", "nonfinite", "ignore", "train.nonfinite"),
    ("input", "crop_scale", (0.0, 1.0), "crop_scale"),
])
def test_validation_errors_name_the_problem(section, key, value, match):
  config = config_lib.base_config()
  config[section][key] = value
  with pytest.raises(ConfigError, match=match):
    config_lib.validate(config)
