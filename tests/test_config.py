"""Config contract and validation, checked before anything is read or compiled."""

import importlib.util
import json
import os

import pytest

from avjax import cli
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
    ("train", "eval_every_epochs", 0, "eval_every_epochs=0 must be >= 1"),
    ("train", "checkpoint_every_epochs", 0, "checkpoint_every_epochs=0 must be >= 1"),
    ("train", "checkpoint_every_steps", -1, "checkpoint_every_steps must be >= 0"),
    ("input", "crop_scale", (0.0, 1.0), "crop_scale"),
    ("input", "num_frames", -1, r"config.input.num_frames=-1 must be >= 0"),
    ("input", "num_workers", -1, r"config.input.num_workers=-1 must be >= 0"),
    ("input", "modality_dropout", 1.0, r"modality_dropout=1.0 must be in \[0, 1\)"),
])
def test_validation_errors_name_the_problem(section, key, value, match):
  config = config_lib.base_config()
  config[section][key] = value
  with pytest.raises(ConfigError, match=match):
    config_lib.validate(config)


def test_method_settings_are_checked_against_the_method():
  config = config_lib.base_config()
  config.method.name = "ogm_ge"
  config.method.alpha = 0.1
  assert config_lib.validate(config).method.alpha == 0.1
  config.method.part_ratio = 0.2  # A valuation setting: OGM-GE would silently ignore it.
  with pytest.raises(ConfigError, match=r"config.method has key\(s\) \['part_ratio'\] that method "
                     r"'ogm_ge' does not take; its settings are \['alpha', 'modulation_ends'"):
    config_lib.validate(config)


def test_sections_carry_other_methods_settings():
  config = _load("compare_balancing.py").get_config()
  assert config_lib.validate(config).method.to_dict() == {"name": "baseline"}
  runs = {m: config_lib.with_method(config, m).method.to_dict() for m in ("ogm_ge", "mmcosine")}
  assert runs["ogm_ge"] == {"name": "ogm_ge", "alpha": 0.8, "modulation_starts": 0,
                            "modulation_ends": 1_000_000}
  assert runs["mmcosine"] == {"name": "mmcosine", "scaling": 5.0, "nce_weight": 0.0,
                              "nce_temperature": 0.1}
  config.method.name = "mmcosine"
  assert config_lib.validate(config).method.scaling == 5.0  # The chosen method's section.
  config.method.mmcosine.scalling = 10.0
  with pytest.raises(ConfigError, match=r"config.method.mmcosine has key\(s\) \['scalling'\]"):
    config_lib.validate(config)
  del config.method.mmcosine["scalling"]
  config.method.name = "baseline"
  config.method.mmcosine.scaling = -1.0  # Checked before the runs, not when mmcosine's turn comes.
  with pytest.raises(ConfigError, match=r"config.method.mmcosine \(used when method 'mmcosine' "
                                        r"runs\): config.method.scaling=-1.0 must be > 0"):
    config_lib.validate(config)


def test_switching_method_on_the_command_line_drops_the_files_settings():
  path = os.path.join(CONFIG_DIR, "valuation_modality_ucf101.py")
  assert cli.file_method(path + ":smoke") == "valuation_modality"
  config = _load("valuation_modality_ucf101.py").get_config("smoke")
  config.method.name = "ogm_ge"
  # Valuation's alpha (1.0, the re-sampling strength) must not become OGM-GE's alpha (default 0.8).
  run = cli.method_from_command_line(config, "valuation_modality", {"method.name": "ogm_ge"})
  assert run.method.to_dict() == {"name": "ogm_ge"}
  config_lib.validate(run)
  run = cli.method_from_command_line(config, "valuation_modality",
                                     {"method.name": "ogm_ge", "method.alpha": 1.0})
  assert run.method.to_dict() == {"name": "ogm_ge", "alpha": 1.0}  # Given on the command line.
  config.method.name = "valuation_modality"  # The file's own method: nothing changes.
  assert cli.method_from_command_line(config, "valuation_modality",
                                      {"method.name": "valuation_modality"}) is config


@pytest.mark.parametrize("key,value,match", [
    ("av_resnet.init", "torch", "init"),
    ("fusion_kwargs", {"form": "symmetric"}, "form"),
])
def test_model_values_the_constructor_refuses_are_config_errors(key, value, match):
  from avjax.models import build_model  # pylint: disable=import-outside-toplevel
  config = config_lib.base_config()
  config.model.fusion = "film"
  *section, name = key.split(".")
  (config.model[section[0]] if section else config.model)[name] = value
  with pytest.raises(ConfigError, match=f"do not fit model 'av_resnet'.*{match}"):
    build_model(config, 6)


def _old_model_layout(saved: dict) -> dict:
  """A config.json as written before model settings moved under config.model.<model name>."""
  model = saved["model"]
  model.update(model.pop("av_resnet"))
  model.get("av_resnetse", {}).pop("init", None)
  model.get("cmvqvae", {}).pop("widths", None)
  return saved


@pytest.mark.parametrize("name,arg", [("demo.py", "smoke"), ("cmvqvae_cremad.py", "smoke"),
                                      ("cmvqvae_cremad.py", None), ("mmcosine_vox.py", None),
                                      ("mmcosine_vox.py", "smoke"), ("greedy_cremad.py", None)])
def test_saved_configs_with_top_level_model_keys_upgrade_to_todays(name, arg, tmp_path):
  """An old workdir's config.json (av_resnet's widths, init, ... as config.model keys) reads as
  today's config, so the run resumes under the same config file."""
  from avjax import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  config = config_lib.validate(_load(name).get_config(arg))
  now = json.loads(config.to_json())
  old = _old_model_layout(json.loads(config.to_json()))
  assert "widths" in old["model"] and "av_resnet" not in old["model"]
  assert config_lib.upgrade_saved(old) == now
  (tmp_path / "config.json").write_text(json.dumps(old))
  workdir_lib.check_resume(config, str(tmp_path), write=False)  # Same experiment: no error.
  assert workdir_lib.read_config(str(tmp_path)).model.av_resnet.widths == list(
      config.model.av_resnet.widths)


def test_old_model_override_names_the_new_key():
  argv = ["--config=configs/demo.py:smoke", "--config.model.widths=(4,8,8,8)"]
  assert "--config.model.av_resnet.widths" in config_lib.moved_key_hint(argv)
  assert config_lib.moved_key_hint(["--config.model.av_resnet.widths=(4,8,8,8)"]) is None
  assert "--config.model.av_resnetse.init" in config_lib.moved_key_hint(["--config.model.init=x"])
