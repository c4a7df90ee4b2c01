"""`verification`: speaker verification on the dataset's trial lists (MMCosine's VoxCeleb scoring).

Each evaluated example carries 'utterance', its index in the dataset's trial lists
(`info.metadata['trials']`: list name -> {'label', 'first', 'second'} utterance indices; the
voxceleb builder writes them). A trial is scored by the cosine of its two utterances' class-score
vectors (`avjax.verification`): the fused logits, and each modality's logits for the uni-modal
diagnostic MMCosine does not report. Every trial list whose utterances were all evaluated in this
split gives eer_<list>, min_dcf_<list> (P_target from the settings; MMCosine 0.01) and their
_audio / _visual forms; a split without utterance indices gives nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from avjax import verification
from avjax.data.sources import dataset_metadata
from avjax.evaluators.base import EVALUATORS, Evaluator
from avjax.registry import ConfigError
from avjax.tasks import LOGIT_MODES


@dataclasses.dataclass(frozen=True)
class VerificationSettings:
  """p_target: the minDCF prior (0.01: MMCosine main_vox2.py, C_miss = C_fa = 1)."""

  p_target: float = 0.01

  def __post_init__(self):
    if not 0 < self.p_target < 1:
      raise ConfigError(f"config.evals.verification.p_target={self.p_target!r} must be in (0, 1).")


@EVALUATORS.register("verification")
class Verification(Evaluator):
  """EER and minDCF per trial list, fused and per modality (see the module docstring)."""

  Settings = VerificationSettings

  def __init__(self, config, task, settings):
    super().__init__(config, task, settings)
    self._trials: dict[str, dict[str, np.ndarray]] | None = None

  def outputs(self, model, batch, output):
    return {"utterance": batch["utterance"]} if "utterance" in batch else {}

  def trials(self) -> dict[str, dict[str, np.ndarray]]:
    """The dataset's trial lists (read once from its metadata)."""
    if self._trials is None:
      raw: Any = dataset_metadata(self.config.dataset).get("trials") or {}
      self._trials = {name: {k: np.asarray(v, np.int64) for k, v in lists.items()}
                      for name, lists in raw.items()}
    return self._trials

  def report(self, predictions):
    if "utterance" not in predictions:
      return {}
    utterance = np.asarray(predictions["utterance"]).astype(np.int64)  # Padding already removed.
    if not utterance.size or utterance.min() < 0:
      return {}
    row = np.full(utterance.max() + 1, -1, np.int64)
    row[utterance] = np.arange(utterance.size)
    out: dict[str, float] = {}
    for name, trials in self.trials().items():
      first, second = trials["first"], trials["second"]
      if not first.size or max(first.max(), second.max()) >= row.size:
        continue
      a, b = row[first], row[second]
      if (a < 0).any() or (b < 0).any():
        continue  # This split does not hold the list's utterances.
      for mode, key in LOGIT_MODES.items():
        if key not in predictions:
          continue
        scores = verification.cosine_trial_scores(predictions[key], a, b)
        suffix = f"_{name}" + (f"_{mode}" if mode else "")
        out[f"eer{suffix}"] = verification.equal_error_rate(scores, trials["label"])
        out[f"min_dcf{suffix}"] = verification.min_detection_cost(scores, trials["label"],
                                                                  self.settings.p_target)
    return out
