"""Emotion methods' shared evaluation (VAVL, AuxFormer): modes and test-prediction CSVs.

The task (config.task: 'classification' with labels='soft_label' for VAVL's consensus labels, or
'regression' with targets (arousal, valence, dominance) and the CCC loss; avjax/tasks.py) gives the
loss and the reports. Every report has fused results under plain keys and audio-only / visual-only
results with `_audio` / `_visual` suffixes; which prediction each mode reads is the method's
`MODE_KEYS`. At each evaluation of the test split the predictions of the three modes are written, as
VAVL's train.py does at its best dev epoch, to
<workdir>/predictions/<split>/{audiovisual,acoustic,visual}/y_pred.csv and y_true.csv (+
confusion.csv for classification), rows keyed by the example's index in the split; the trainer
evaluates the test split once, with the best checkpoint restored (checkpoint.json says which).
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any

import numpy as np

from avjax import metrics as metrics_lib
from avjax.methods.base import EvalContext, Method

ATTRIBUTES = ("arousal", "valence", "dominance")  # The dimensional emotion targets.
# Report mode -> the reference's folder name for that mode's predictions.
MODE_DIRS = {"": "audiovisual", "audio": "acoustic", "visual": "visual"}


def _write_csv(path: str, header: list[str], rows: np.ndarray, index: np.ndarray) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["index"] + header)
    for i, row in zip(index, rows):
      writer.writerow([int(i)] + [repr(float(x)) if isinstance(x, (float, np.floating)) else x
                                  for x in np.atleast_1d(row).tolist()])
  os.replace(tmp, path)


def write_predictions(directory: str, target_names: tuple[str, ...] | None,
                      predictions: dict[str, np.ndarray], mode_keys: dict[str, str],
                      info: dict[str, Any]) -> None:
  """y_pred.csv / y_true.csv (+ confusion.csv) per mode under `directory` (see the module doc);
  `target_names` None for classes, else the regression targets' names."""
  order = np.argsort(predictions["index"], kind="stable")
  index = predictions["index"][order]
  classify = target_names is None
  if classify:
    truth = np.asarray(predictions.get("target", predictions["label"]))[order].astype(np.int64)
    true_header = ["label"]
  else:
    truth = np.asarray(predictions["targets"])[order]
    true_header = list(target_names)
  for mode, key in mode_keys.items():
    folder = os.path.join(directory, MODE_DIRS[mode])
    os.makedirs(folder, exist_ok=True)
    preds = np.asarray(predictions[key])[order]
    header = list(target_names) if not classify else [str(c) for c in range(preds.shape[-1])]
    _write_csv(os.path.join(folder, "y_pred.csv"), header, preds, index)
    _write_csv(os.path.join(folder, "y_true.csv"), true_header, truth, index)
    if classify:
      keep = truth >= 0
      cm = metrics_lib.confusion_matrix(truth[keep], preds[keep], preds.shape[-1])
      _write_csv(os.path.join(folder, "confusion.csv"), [f"pred_{c}" for c in range(len(cm))],
                 cm, np.arange(len(cm)))
  with open(os.path.join(directory, "checkpoint.json"), "w") as f:
    json.dump(info, f, indent=2)


class EmotionMethod(Method):
  """Classification or regression (config.task), reports with `_audio` / `_visual` modes and the
  test split's prediction CSVs. Subclasses set MODE_KEYS and may add per-example eval outputs."""

  tasks = frozenset({"classification", "regression"})

  def eval_artifacts(self, ctx: EvalContext) -> None:
    """The base method's files, and for the test split the three modes' predictions as CSV
    (overwritten at each test evaluation)."""
    super().eval_artifacts(ctx)
    if not ctx.is_chief or ctx.split != self.config.dataset.test_split:
      return
    regress = self.config.task.name == "regression"
    names = tuple(self.config.task.targets) if regress else None
    directory = os.path.join(ctx.workdir, "predictions", ctx.split)
    write_predictions(directory, names, ctx.predictions, self.MODE_KEYS,
                      {"step": ctx.step, "split": ctx.split, "task": self.config.task.name})
