"""avjax.recipes: each recipe sets what its docstring says and nothing else.

Every configs/*.py validating (with and without :smoke) is tests/test_config.py's check.
"""

import pytest

from avjax import config as config_lib
from avjax import recipes


def _flat(c, prefix=""):
  out = {}
  for key, value in c.items():
    if hasattr(value, "items"):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def _changed(recipe, *args, **kwargs):
  """The keys `recipe` changes on a base_config(), with their new values; the config after."""
  c = config_lib.base_config()
  before = _flat(c)
  recipe(c, *args, **kwargs)
  after = _flat(c)
  assert after.keys() == before.keys()  # A recipe never adds a key.
  return {k: v for k, v in after.items() if v != before[k]}, c


def test_kinetics_sounds_input_takes_the_ks_frame_rule_and_the_heldout_fold():
  changed, c = _changed(recipes.audio_visual_input, "kinetics_sounds", 3)
  assert changed == {"dataset.name": "kinetics_sounds", "dataset.config": "ogm_ge",
                     "dataset.val_split": "heldout", "input.num_frames": 3,
                     "input.frame_sampling": "ks", "input.image_size": 224}
  assert c.dataset.test_split == "test"
  config_lib.validate(c)


def test_other_datasets_keep_their_frame_sampling_and_explicit_values_win():
  base = config_lib.base_config().input.frame_sampling
  changed, c = _changed(recipes.audio_visual_input, "crema_d", 1)
  assert "input.frame_sampling" not in changed and c.input.frame_sampling == base
  _, c = _changed(recipes.audio_visual_input, "kinetics_sounds", 1, frame_sampling="segment",
                  image_size=112, build_config="mm_debiased", val_split="validation")
  assert (c.input.frame_sampling, c.input.image_size) == ("segment", 112)
  assert (c.dataset.config, c.dataset.val_split) == ("mm_debiased", "validation")


def test_resnet18_pair_sets_widths_fusion_and_only_a_given_init():
  c = config_lib.base_config()
  c.model.av_resnet.widths = (8, 8, 8, 8)
  c.model.fusion = "film"
  c.model.av_resnet.init = "mmcosine"
  recipes.resnet18_pair(c)  # init None: left as it is.
  assert (c.model.name, c.model.fusion) == ("av_resnet", "concat")
  assert tuple(c.model.av_resnet.widths) == (64, 128, 256, 512)
  assert c.model.av_resnet.init == "mmcosine"
  recipes.resnet18_pair(c, model="av_resnet_mmtm", fusion="shared_head", init="ogm_ge")
  assert (c.model.name, c.model.fusion, c.model.av_resnet.init) == (
      "av_resnet_mmtm", "shared_head", "ogm_ge")


@pytest.mark.parametrize("recipe,keys", [
    (lambda c: recipes.audio_visual_input(c, "crema_d", num_frames=1),
     {"dataset.name", "dataset.config", "dataset.val_split", "dataset.test_split",
      "input.num_frames", "input.image_size"}),
    (recipes.resnet18_pair, {"model.name", "model.fusion", "model.av_resnet.widths"}),
    (recipes.balancebenchmark_training,
     {"seed", "optimizer.name", "optimizer.learning_rate", "optimizer.weight_decay",
      "optimizer.schedule", "optimizer.step_epochs", "optimizer.gamma", "train.batch_size",
      "train.num_epochs"}),
])
def test_recipes_write_their_whole_block_and_nothing_else(recipe, keys):
  c = config_lib.base_config()
  before, junk = _flat(c), {}
  for key in keys:  # Another value in every key of the block, so that each write shows.
    section, _, name = key.rpartition(".")
    node = c
    for part in filter(None, section.split(".")):
      node = node[part]
    node[name] = junk[key] = {str: "x", int: 7, float: 0.5, tuple: (1, 1, 1, 1)}[type(node[name])]
  recipe(c)
  after = _flat(c)
  assert [k for k in keys if after[k] == junk[k]] == []
  assert [k for k in after if k not in keys and after[k] != before[k]] == []


def test_balancebenchmark_training_is_bbs_global_recipe():
  changed, c = _changed(recipes.balancebenchmark_training)
  assert changed == {"seed": 42, "optimizer.name": "adamw", "optimizer.weight_decay": 0.01,
                     "optimizer.step_epochs": 10, "train.batch_size": 32, "train.num_epochs": 30}
  # Values base_config already has: lr 1e-3, StepLR gamma 0.1 per epoch; momentum untouched.
  assert (c.optimizer.learning_rate, c.optimizer.schedule, c.optimizer.gamma) == (
      1e-3, "step", 0.1)
  assert c.optimizer.momentum == config_lib.base_config().optimizer.momentum
  config_lib.validate(c)
