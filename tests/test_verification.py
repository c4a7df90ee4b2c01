"""EER and minDCF against hand-computed trial lists and a threshold sweep; cosine trial scores."""

from __future__ import annotations

import numpy as np
import pytest

from avjax.verification import cosine_trial_scores, equal_error_rate, min_detection_cost


def test_hand_computed_interleaved_trials():
  # Ascending: non-target, target, non-target, target. k = 1: FNR 0, FPR 0.5; k = 2: FNR 0.5,
  # FPR 0.5 (the crossing): EER 50%. Costs / 0.01: k=1 49.5, k=2 50, k=3 (FNR .5, FPR 0) 0.5.
  scores, labels = [0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1]
  assert equal_error_rate(scores, labels) == pytest.approx(50.0)
  assert min_detection_cost(scores, labels) == pytest.approx(0.5)
  # P_target 0.5: FNR + FPR, lowest at k = 1 and k = 3 (0.5).
  assert min_detection_cost(scores, labels, p_target=0.5) == pytest.approx(0.5)


def test_separable_and_interpolated():
  assert equal_error_rate([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1]) == pytest.approx(0.0)
  assert min_detection_cost([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1]) == pytest.approx(0.0)
  # Ascending t, n, n, n, t: (FNR, FPR) at k = 2 is (0.5, 2/3), at k = 3 (0.5, 1/3): FNR - FPR
  # goes from -1/6 to +1/6, so the crossing is halfway, at FPR = 0.5: EER 50%.
  assert equal_error_rate([1, 2, 3, 4, 5], [1, 0, 0, 0, 1]) == pytest.approx(50.0)
  # n, t, n, n, t, t (ascending): k=1 (0, 2/3), k=2 (1/3, 2/3), k=3 (1/3, 1/3) -> exactly 1/3.
  assert equal_error_rate([1, 2, 3, 4, 5, 6], [0, 1, 0, 0, 1, 1]) == pytest.approx(100 / 3)


def test_close_to_a_threshold_sweep_on_many_trials():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 20000)
  scores = rng.normal(labels * 1.5, 1.0)
  thresholds = np.sort(scores)
  fnr = np.array([(scores[labels == 1] < t).mean() for t in thresholds[::20]])
  fpr = np.array([(scores[labels == 0] >= t).mean() for t in thresholds[::20]])
  sweep = 100 * fnr[np.argmin(np.abs(fnr - fpr))]
  assert equal_error_rate(scores, labels) == pytest.approx(sweep, abs=0.3)
  assert equal_error_rate(-scores, 1 - labels) == pytest.approx(equal_error_rate(scores, labels),
                                                                abs=0.05)


def test_bad_input_is_refused():
  with pytest.raises(ValueError, match="0/1 label"):
    equal_error_rate([0.1, 0.2], [0, 2])
  with pytest.raises(ValueError, match="target and one non-target"):
    min_detection_cost([0.1, 0.2], [1, 1])


def test_cosine_trial_scores():
  vectors = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
  np.testing.assert_allclose(cosine_trial_scores(vectors, [0, 0, 0], [1, 2, 3]),
                             [1.0, 0.0, np.sqrt(0.5)])
