"""The evaluation protocol (avjax/protocol.py): held-out validation folds, selection on validation
by default, and test-split selection only when asked for, labelled and warned about."""

import json
import logging

import ml_collections
import numpy as np
import pytest

from avjax import config as config_lib
from avjax import protocol, writers
from avjax import workdir as workdir_lib
from avjax.methods.base import heldout_fold
from avjax.registry import ConfigError
from avjax.evaluate import evaluate_workdir
from avjax.train import train_and_evaluate
from tests.helpers import tiny_config


def test_fold_is_stratified_and_deterministic():
  labels = np.repeat(np.arange(4), [50, 30, 20, 100])
  fit, held = protocol.validation_fold(labels, None, fraction=0.1, seed=3)
  assert np.array_equal(np.bincount(labels[held]), [5, 3, 2, 10])  # 10% of each class exactly.
  assert np.array_equal(np.sort(np.concatenate([fit, held])), np.arange(len(labels)))
  again = protocol.validation_fold(labels, None, fraction=0.1, seed=3)
  assert np.array_equal(again[1], held)
  other = protocol.validation_fold(labels, None, fraction=0.1, seed=4)[1]
  assert not np.array_equal(other, held)


def test_fold_keeps_groups_on_one_side():
  rng = np.random.default_rng(0)
  speakers = np.repeat(np.arange(40), 15)  # 40 speakers, 15 clips each, every class per speaker.
  labels = rng.integers(0, 3, len(speakers))
  fit, held = protocol.validation_fold(labels, speakers, fraction=0.2, seed=0)
  assert not set(speakers[fit]) & set(speakers[held])
  assert len(set(speakers[held])) == 8  # 20% of the speakers (equal-sized groups).
  share = np.bincount(labels[held], minlength=3) / np.bincount(labels, minlength=3)
  assert np.all(np.abs(share - 0.2) < 0.06)


def test_method_fold_nests_inside_the_training_fold():
  """A method's own held-out fold indexes the examples the run trains on: never validation."""
  labels = np.arange(200) % 5
  fit, held = protocol.validation_fold(labels, None, fraction=0.1)
  method_fit, method_held = heldout_fold(0, len(fit))
  assert not set(fit[method_held]) & set(held)
  assert len(method_fit) + len(method_held) == len(fit)


@pytest.mark.parametrize("overrides,message", [
    ({"dataset.val_split": "test"}, "select_on='test'"),
    ({"dataset.val_split": "train"}, "training split"),
    ({"train.select_on": "best"}, "select_on"),
    ({"dataset.heldout_fraction": 1.0}, "heldout_fraction"),
])
def test_bad_protocol_settings_are_config_errors(overrides, message):
  c = tiny_config("/tmp/unused", **overrides)
  with pytest.raises(ConfigError, match=message):
    config_lib.validate(c)


def test_old_workdir_that_selected_on_test_reads_as_such():
  saved = config_lib.base_config().to_dict()
  del saved["train"]["select_on"], saved["dataset"]["heldout_fraction"]
  saved["dataset"]["val_split"] = "test"
  upgraded = config_lib.upgrade_saved(saved)
  assert upgraded["train"]["select_on"] == "test"
  assert upgraded["dataset"]["heldout_fraction"] == 0.1


def test_workdir_from_before_the_protocol_keys_resumes(tmp_path):
  config = config_lib.validate(tiny_config(str(tmp_path)))
  old = json.loads(config.to_json())
  del old["train"]["select_on"], old["dataset"]["heldout_seed"], old["dataset"]["heldout_group"]
  (tmp_path / "config.json").write_text(json.dumps(old))
  workdir_lib.check_resume(config, str(tmp_path), write=False)  # Nothing differs.


def test_heldout_selection_and_test_selection_runs(data_dir, tmp_path, caplog):
  """val_split='heldout' selects on a fold of train and reports test once; select_on='test' writes
  its per-epoch rows as test rows, warns at each evaluation and marks the final row."""
  held = tiny_config(data_dir, **{"dataset.val_split": "heldout", "dataset.heldout_fraction": 0.25})
  held.evals.robustness = ml_collections.ConfigDict(dict(levels=(1.0,)))  # And the evaluators
  held.evals.ground_truth = ml_collections.ConfigDict()  # of avjax.sweep's runs, end to end.
  workdir = str(tmp_path / "heldout")
  train_and_evaluate(held, workdir)
  rows = writers.read_metrics(workdir)
  evaluated = [r["split"] for r in rows if r["split"] not in ("train", "train_step")]
  assert evaluated == ["val", "val", "test"]
  assert rows[-1]["selected_on"] == "heldout"
  final = rows[-1]
  for key in ("robust_accuracy_noise_audio_1", "robust_accuracy_missing_visual",
              "relative_robustness"):
    assert 0.0 <= final[key] <= 1.0
  # audio_dominant: the audio always carries the label, the frames in most examples.
  assert final["gt_count_only_visual"] == 0 and final["gt_count_only_audio"] > 0
  assert final["gt_count_only_audio"] + final["gt_count_both"] == 32

  on_test = tiny_config(data_dir, **{"train.select_on": "test", "train.num_epochs": 1})
  with caplog.at_level(logging.WARNING, logger="avjax.protocol"):
    train_and_evaluate(on_test, str(tmp_path / "on_test"))
  rows = writers.read_metrics(str(tmp_path / "on_test"))
  evaluated = [r["split"] for r in rows if r["split"] not in ("train", "train_step")]
  assert evaluated == ["test", "test"]
  assert rows[-1]["selected_on"] == "test"
  warned = [r for r in caplog.records if "selects its checkpoint on the TEST split" in r.message]
  assert len(warned) == 2  # The epoch's evaluation and the final one.
  caplog.clear()
  with caplog.at_level(logging.WARNING, logger="avjax.protocol"):
    evaluate_workdir(str(tmp_path / "on_test"))  # Evaluating the workdir later warns too.
  assert any("TEST split" in r.message for r in caplog.records)
