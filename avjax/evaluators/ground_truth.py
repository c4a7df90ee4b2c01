"""Accuracy by which modality carries the label, on datasets whose records know it (synthetic_av's
`audio_informative` / `visual_informative`; data_builders/synthetic_av).

  gt_accuracy_only_<m>   fused accuracy on the examples where only modality <m> carries the label
                         (the other shows noise or another class): what a model that ignores <m>
                         cannot get right.
  gt_accuracy_both       fused accuracy where both carry it.
  gt_count_only_<m>, gt_count_both: how many examples each subset has.

On a dataset without these fields the evaluator reports nothing.
"""

from __future__ import annotations

import numpy as np

from avjax.evaluators.base import EVALUATORS, TASK_OUTPUTS, Evaluator
from avjax.models.outputs import MODALITIES

FIELDS = {m: f"{m}_informative" for m in MODALITIES}


def subsets(informative: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """{'only_<m>': mask, 'both': mask} from per-modality 'carries the label' flags (N,)."""
  flags = {m: np.asarray(v).astype(bool) for m, v in informative.items()}
  out = {}
  for m, carries in flags.items():
    others = [f for n, f in flags.items() if n != m]
    out[f"only_{m}"] = carries & ~np.any(others, axis=0) if others else carries
  out["both"] = np.all(list(flags.values()), axis=0)
  return out


@EVALUATORS.register("ground_truth")
class GroundTruth(Evaluator):
  """Fused accuracy on the examples each modality alone carries."""

  requires = TASK_OUTPUTS

  def outputs(self, model, batch, output):
    return {f"gt_{field}": batch[field] for field in FIELDS.values() if field in batch}

  def report(self, predictions):
    if not all(f"gt_{f}" in predictions for f in FIELDS.values()) or "logits" not in predictions:
      return {}
    targets = np.asarray(predictions.get("target", predictions.get("label"))).astype(np.int64)
    correct = np.argmax(np.asarray(predictions["logits"]), -1) == targets
    out = {}
    for name, mask in subsets({m: predictions[f"gt_{f}"] for m, f in FIELDS.items()}).items():
      mask = mask & (targets >= 0)
      out[f"gt_count_{name}"] = int(mask.sum())
      if mask.any():
        out[f"gt_accuracy_{name}"] = float(correct[mask].mean())
    return out
