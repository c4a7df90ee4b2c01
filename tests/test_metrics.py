"""Tests for avjax.metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from avjax import metrics

# Small multiclass example (num_classes=4; class 3 never occurs):
#   labels = [0, 0, 0, 1, 1, 2]
#   preds  = [0, 0, 1, 1, 2, 2]
# class 0: tp=2 fp=0 fn=1 -> F1 = 2*2 / (4+0+1) = 4/5
# class 1: tp=1 fp=1 fn=1 -> F1 = 2 / (2+1+1) = 1/2
# class 2: tp=1 fp=1 fn=0 -> F1 = 2 / (2+1+0) = 2/3
# macro over the present classes {0,1,2}: (4/5 + 1/2 + 2/3) / 3 = 59/90
# weighted by support (3,2,1): (3*4/5 + 2*1/2 + 1*2/3) / 6 = 61/90
# micro = accuracy = 4/6 = 2/3
LABELS = np.array([0, 0, 0, 1, 1, 2])
PREDS = np.array([0, 0, 1, 1, 2, 2])


def test_accuracy_plain_and_weighted():
  assert metrics.accuracy(LABELS, PREDS) == pytest.approx(4 / 6)
  # the last (wrong) example is padding -> 2 of the 3 real examples correct
  assert metrics.accuracy([0, 1, 2, 1], [0, 2, 2, 0], weights=[1, 1, 1, 0]) == pytest.approx(2 / 3)
  assert metrics.accuracy([0, 1], [0, 1], weights=[0, 0]) == 0.0


def test_accuracy_accepts_logits():
  logits = np.array([[2.0, 0.1], [0.3, 0.9], [1.0, 0.0]])
  assert metrics.accuracy([0, 1, 1], logits) == pytest.approx(2 / 3)


def test_confusion_matrix():
  cm = metrics.confusion_matrix(LABELS, PREDS, 4)
  expected = np.array([[2, 1, 0, 0],
                       [0, 1, 1, 0],
                       [0, 0, 1, 0],
                       [0, 0, 0, 0]])
  np.testing.assert_array_equal(cm, expected)
  assert cm.dtype.kind == "i"
  padded = metrics.confusion_matrix(np.r_[LABELS, 3], np.r_[PREDS, 0], 4, weights=[1] * 6 + [0])
  np.testing.assert_array_equal(padded, expected)


def test_confusion_matrix_rejects_out_of_range():
  with pytest.raises(ValueError, match="outside"):
    metrics.confusion_matrix([0, 5], [0, 1], 3)


def test_f1_scores_hand_values():
  f1 = metrics.f1_scores(LABELS, PREDS, 4)
  assert f1["macro_f1"] == pytest.approx(59 / 90)
  assert f1["weighted_f1"] == pytest.approx(61 / 90)
  assert f1["micro_f1"] == pytest.approx(2 / 3)


def test_f1_padding_does_not_add_classes():
  # a padded example of class 3 must not make class 3 "present" (which would add a 0 to the macro mean)
  f1 = metrics.f1_scores(np.r_[LABELS, 3], np.r_[PREDS, 3], 4, weights=[1] * 6 + [0])
  assert f1["macro_f1"] == pytest.approx(59 / 90)


def test_f1_class_only_predicted_counts_in_macro():
  # labels [0,0], preds [0,1]: class 0 F1 = 2/(2+0+1) = 2/3, class 1 (only predicted) F1 = 0
  f1 = metrics.f1_scores([0, 0], [0, 1], 3)
  assert f1["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)
  assert f1["weighted_f1"] == pytest.approx(2 / 3)


def test_per_class_accuracy():
  acc = metrics.per_class_accuracy(LABELS, PREDS, 4)
  np.testing.assert_allclose(acc[:3], [2 / 3, 1 / 2, 1.0])
  assert np.isnan(acc[3])


Y = np.array([1.0, 2.0, 3.0, 4.0])  # mean 2.5, population variance 1.25


def test_ccc_perfect():
  assert metrics.ccc(Y, Y) == pytest.approx(1.0)


def test_ccc_shifted():
  # cov = 1.25, var_t = var_p = 1.25, (mean diff)^2 = 1 -> 2.5 / 3.5 = 5/7
  assert metrics.ccc(Y, Y + 1.0) == pytest.approx(5 / 7)


def test_ccc_negated():
  # cov = -1.25, vars 1.25 each, (2.5 - (-2.5))^2 = 25 -> -2.5 / 27.5 = -1/11
  assert metrics.ccc(Y, -Y) == pytest.approx(-1 / 11)


def test_ccc_constant_prediction():
  assert metrics.ccc(Y, np.full(4, 2.5)) == 0.0
  assert metrics.ccc(Y, np.zeros(4)) == 0.0
  # the only 0/0 case: identical constants is perfect agreement (documented convention)
  assert metrics.ccc(np.full(3, 0.7), np.full(3, 0.7)) == 1.0
  assert metrics.ccc(np.full(3, 0.7), np.full(3, 0.2)) == pytest.approx(0.0)


def test_pearson():
  # x=[1,2,3], y=[1,3,2]: deviations (-1,0,1), (-1,1,0) -> r = 1 / sqrt(2*2) = 0.5
  assert metrics.pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
  assert metrics.pearson(Y, 2 * Y + 3) == pytest.approx(1.0)
  assert metrics.pearson(Y, -Y) == pytest.approx(-1.0)
  assert metrics.pearson(Y, np.ones(4)) == 0.0
  assert metrics.pearson(np.ones(4), np.ones(4)) == 0.0


def test_classification_metrics_keys_and_values():
  num_classes = 4
  fused = np.eye(num_classes)[PREDS] * 3.0
  audio = np.eye(num_classes)[LABELS]  # perfect
  out = metrics.classification_metrics(LABELS, {"": fused, "audio": audio, "visual": fused})
  assert set(out) == {
      "accuracy", "macro_f1", "weighted_f1",
      "accuracy_audio", "macro_f1_audio", "weighted_f1_audio",
      "accuracy_visual", "macro_f1_visual", "weighted_f1_visual",
  }
  assert out["accuracy"] == pytest.approx(2 / 3)
  assert out["macro_f1"] == pytest.approx(59 / 90)
  assert out["weighted_f1"] == pytest.approx(61 / 90)
  assert out["accuracy_audio"] == 1.0 and out["macro_f1_audio"] == 1.0
  assert all(isinstance(v, float) for v in out.values())


def test_classification_metrics_weights_exclude_padding():
  labels = np.r_[LABELS, 0, 0]
  preds = np.r_[PREDS, 3, 3]
  weights = np.r_[np.ones(6), 0, 0]
  out = metrics.classification_metrics(labels, {"": np.eye(4)[preds]}, weights=weights)
  assert out["accuracy"] == pytest.approx(2 / 3)
  assert out["macro_f1"] == pytest.approx(59 / 90)


def test_regression_metrics():
  t = np.stack([Y, Y, Y], axis=1)
  p = np.stack([Y, Y + 1.0, -Y], axis=1)
  out = metrics.regression_metrics(t, p)
  assert out["ccc_arousal"] == pytest.approx(1.0)
  assert out["ccc_valence"] == pytest.approx(5 / 7)
  assert out["ccc_dominance"] == pytest.approx(-1 / 11)
  assert out["pearson_valence"] == pytest.approx(1.0)
  assert out["ccc_mean"] == pytest.approx((1 + 5 / 7 - 1 / 11) / 3)
  assert out["pearson"] == pytest.approx((1 + 1 - 1) / 3)
  audio = metrics.regression_metrics(t[:, :2], p[:, :2], names=("arousal", "valence"), suffix="audio")
  assert set(audio) == {"ccc_arousal_audio", "pearson_arousal_audio", "ccc_valence_audio",
                        "pearson_valence_audio", "ccc_mean_audio", "pearson_audio"}


def test_regression_metrics_weights_and_name_check():
  t = np.r_[Y, 100.0][:, None]
  p = np.r_[Y, -100.0][:, None]
  out = metrics.regression_metrics(t, p, names=("arousal",), weights=[1, 1, 1, 1, 0])
  assert out["ccc_arousal"] == pytest.approx(1.0)
  with pytest.raises(ValueError, match="names"):
    metrics.regression_metrics(t, p)
