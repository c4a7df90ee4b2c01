"""The robustness and ground_truth evaluators: noise that depends only on the example, the noisy /
missing-modality predictions, and their reports on hand-made predictions."""

import types

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from avjax.config import base_config
from avjax.evaluators import ground_truth, robustness
from avjax.registry import ConfigError
from avjax.tasks import make_task


def _evaluator(**settings):
  config = base_config()
  return robustness.Robustness(config, make_task(config),
                               robustness.RobustnessSettings(**settings))


def test_noise_depends_on_the_example_not_its_batch():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3, 5)) * 3.0, jnp.float32)
  noisy = robustness.add_noise(x, jnp.asarray([7, 8, 9, 10]), 1.0, salt=0)
  shuffled = robustness.add_noise(x[::-1], jnp.asarray([10, 9, 8, 7]), 1.0, salt=0)
  np.testing.assert_allclose(noisy, shuffled[::-1], rtol=1e-6)
  other_modality = robustness.add_noise(x, jnp.asarray([7, 8, 9, 10]), 1.0, salt=1)
  assert not np.allclose(noisy, other_modality)
  # The noise's size follows the level and each example's own spread.
  big = robustness.add_noise(x, jnp.arange(4), 4.0, salt=0) - x
  small = robustness.add_noise(x, jnp.arange(4), 1.0, salt=0) - x
  np.testing.assert_allclose(big, 4.0 * small, rtol=1e-5)
  assert float(jnp.std(small)) == pytest.approx(float(jnp.std(x)), rel=0.5)


def test_outputs_perturb_one_modality_and_mask_one():
  seen = []

  def model(inputs, modality_mask):
    seen.append((inputs, modality_mask))
    score = jnp.stack([inputs["audio"].mean((1, 2)), inputs["visual"].mean((1, 2))], -1)
    return types.SimpleNamespace(logits=score * modality_mask)

  batch = {"audio": jnp.ones((2, 4, 4)), "visual": jnp.zeros((2, 4, 4)) + 0.5,
           "index": jnp.arange(2)}
  out = _evaluator(levels=(0.5, 2.0)).outputs(model, batch, types.SimpleNamespace(
      logits=jnp.zeros((2, 2))))
  assert sorted(out) == ["robust_pred_missing_audio", "robust_pred_missing_visual",
                         "robust_pred_noise_audio_0.5", "robust_pred_noise_audio_2",
                         "robust_pred_noise_visual_0.5", "robust_pred_noise_visual_2"]
  np.testing.assert_array_equal(out["robust_pred_missing_audio"], [1, 1])  # Visual alone.
  np.testing.assert_array_equal(out["robust_pred_missing_visual"], [0, 0])
  noisy_audio = seen[0][0]
  assert np.all(noisy_audio["audio"] == 1.0)  # Constant inputs: std 0, no noise added.


def test_report_accuracies_and_relative_robustness():
  target = np.array([0, 1, 1, 0])
  predictions = {"target": target,
                 "robust_pred_noise_audio_1": np.array([0, 1, 1, 0]),   # 1.0
                 "robust_pred_noise_audio_2": np.array([0, 0, 1, 1]),   # 0.5
                 "robust_pred_noise_visual_1": np.array([1, 1, 1, 1]),  # 0.5
                 "robust_pred_noise_visual_2": np.array([1, 0, 0, 1]),  # 0.0
                 "robust_pred_missing_audio": np.array([0, 1, 0, 0])}   # 0.75
  report = _evaluator(levels=(1.0, 2.0)).report(predictions)
  assert report["robust_accuracy_noise_audio_2"] == 0.5
  assert report["robust_accuracy_missing_audio"] == 0.75
  assert report["relative_robustness_audio"] == pytest.approx(0.75)
  assert report["relative_robustness_visual"] == pytest.approx(0.25)
  assert report["relative_robustness"] == pytest.approx(0.5)


def test_bad_levels_are_config_errors():
  with pytest.raises(ConfigError, match="levels"):
    robustness.RobustnessSettings(levels=(0.0,))


def test_ground_truth_subsets_and_report():
  config = base_config()
  evaluator = ground_truth.GroundTruth(config, make_task(config), None)
  audio = np.array([1, 1, 0, 0, 1], bool)
  visual = np.array([1, 0, 1, 0, 0], bool)
  logits = np.eye(3)[[0, 1, 2, 0, 0]]
  target = np.array([0, 1, 1, 2, 2])
  report = evaluator.report({"logits": logits, "target": target, "gt_audio_informative": audio,
                             "gt_visual_informative": visual})
  assert report["gt_count_only_audio"] == 2 and report["gt_accuracy_only_audio"] == 0.5
  assert report["gt_count_only_visual"] == 1 and report["gt_accuracy_only_visual"] == 0.0
  assert report["gt_count_both"] == 1 and report["gt_accuracy_both"] == 1.0
  assert evaluator.report({"logits": logits, "target": target}) == {}  # No ground truth.
  batch = {"audio_informative": jnp.asarray(audio), "label": jnp.asarray(target)}
  assert sorted(evaluator.outputs(None, batch, None)) == ["gt_audio_informative"]


def test_evaluators_validate_in_a_config():
  from avjax import config as config_lib
  c = base_config()
  c.evals.robustness = ml_collections.ConfigDict(dict(levels=(1.0,)))
  c.evals.ground_truth = ml_collections.ConfigDict()
  config_lib.validate(c)


def test_masked_and_noisy_passes_use_the_methods_inference_rule(data_dir, tmp_path):
  """A frames-alone `unimodal` run predicts with its visual head: masking the audio (ablation,
  robustness's missing audio) or adding noise to it changes nothing, and masking the frames
  leaves chance; its Shapley shares add up to its own accuracy (efficiency, value 'correct').
  Without the method's rule these passes would read the untrained fusion head."""
  from avjax.train import train_and_evaluate  # pylint: disable=import-outside-toplevel
  from tests.helpers import tiny_config  # pylint: disable=import-outside-toplevel
  config = tiny_config(data_dir, **{"method.name": "unimodal", "train.num_epochs": 1,
                                    "dataset.val_split": ""})
  with config.unlocked():
    config.method.modality = "visual"
    config.evals.ablation = ml_collections.ConfigDict()
    config.evals.robustness = ml_collections.ConfigDict(dict(levels=(1.0,)))
    config.evals.contributions = ml_collections.ConfigDict(dict(value_fn="correct"))
  final = train_and_evaluate(config, str(tmp_path / "run"))
  assert final["accuracy_only_visual"] == final["accuracy"]
  assert final["robust_accuracy_missing_audio"] == final["accuracy"]
  assert final["robust_accuracy_noise_audio_1"] == final["accuracy"]
  shares = final["shapley_audio"] + final["shapley_visual"]
  assert abs(shares - final["accuracy"]) < 1e-6
