"""The evaluators every kind of run can use.

  report         the task's report (avjax/tasks.py) of the fused and per-modality predictions
                 (`accuracy`, `accuracy_audio`, ...; `_audio` = the model's audio pathway, e.g. a
                 head on the audio features).
  contributions  each modality's Shapley contribution per example (`shapley_<modality>`; Wei et
                 al., CVPR 2024) and its split mean; per-example tables under
                 <workdir>/valuation/ with a plot (classification).
  ablation       the task's report of the model run with every other modality masked out
                 (`accuracy_only_audio`, ...): masked-input uni-modal performance, a different
                 quantity from the head-slice `accuracy_audio`.
  predictions    per-example predictions with the example's index in its split and its id (the
                 clip name, when the dataset has one), as VAVL's train.py writes them:
                 <workdir>/predictions/<split>/{audiovisual,acoustic,visual}/y_pred.csv,
                 y_true.csv (+ confusion.csv for classes), for the listed splits.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import Any

import jax.numpy as jnp
import numpy as np

from avjax import metrics as metrics_lib
from avjax import valuation
from avjax import workdir as workdir_lib
from avjax.evaluators.base import EVALUATORS, TASK_OUTPUTS, EvalContext, Evaluator
from avjax.models.outputs import MODALITIES
from avjax.registry import ConfigError
from avjax.state import model_inputs
from avjax.tasks import LOGIT_MODES

# Report mode -> VAVL's folder name for that mode's predictions.
MODE_DIRS = {"": "audiovisual", "audio": "acoustic", "visual": "visual"}


@EVALUATORS.register("report")
class Report(Evaluator):
  """The task's split report over the fused and per-modality logits."""

  requires = TASK_OUTPUTS

  def outputs(self, model, batch, output):
    return self.task.eval_outputs(batch)

  def report(self, predictions):
    return self.task.report(predictions, LOGIT_MODES)


@dataclasses.dataclass(frozen=True)
class ContributionSettings:
  """value_fn: 'size' (v(S) = |S| 1[correct], Wei et al.'s repository) or 'correct' (1[correct],
  BalanceBenchmark)."""

  value_fn: str = "size"

  def __post_init__(self):
    if self.value_fn not in valuation.VALUE_FNS:
      raise ConfigError(f"config.evals.contributions.value_fn={self.value_fn!r} is not one of "
                        f"{valuation.VALUE_FNS} ('size': v(S) = |S| 1[correct], the paper repo; "
                        "'correct': v(S) = 1[correct], BalanceBenchmark).")


@EVALUATORS.register("contributions")
class Contributions(Evaluator):
  """Per-example Shapley contributions of each modality (skipped for regression and for models
  without an encode / fuse split)."""

  Settings = ContributionSettings
  requires = TASK_OUTPUTS

  def outputs(self, model, batch, output):
    if self.config.task.name == "regression":
      return {}
    return valuation.eval_contributions(model, output, batch, self.settings.value_fn)

  def report(self, predictions):
    return valuation.contribution_report(predictions)

  def write(self, ctx: EvalContext) -> None:
    """<workdir>/valuation/<split>_epoch_<e>_step_<s>.csv (e: epochs completed), summary.jsonl and contributions.png
    (redrawn every valuation.PLOT_EVERY_EPOCHS epochs and at the last; chief only)."""
    if ctx.is_chief:
      plot = (ctx.epoch + 1) % valuation.PLOT_EVERY_EPOCHS == 0 or ctx.last_epoch
      valuation.write_artifacts(ctx.workdir, ctx.split, ctx.epoch + 1, ctx.step, ctx.predictions,
                                plot=plot)


@EVALUATORS.register("ablation")
class Ablation(Evaluator):
  """The task's report with all modalities but one masked out of the input features."""

  requires = TASK_OUTPUTS

  def outputs(self, model, batch, output):
    inputs = model_inputs(batch)
    b = output.logits.shape[0]
    base = batch.get("modality_mask")
    base = jnp.ones((b, len(MODALITIES)), jnp.float32) if base is None else base
    out = {}
    for i, m in enumerate(MODALITIES):
      keep = jnp.zeros((len(MODALITIES),), jnp.float32).at[i].set(1.0)
      out[f"logits_only_{m}"] = model(inputs, modality_mask=base * keep).logits
    return out

  def report(self, predictions):
    return self.task.report(predictions, {f"only_{m}": f"logits_only_{m}" for m in MODALITIES})


@dataclasses.dataclass(frozen=True)
class PredictionSettings:
  """splits: names of the splits whose predictions are written (each evaluation of a split
  overwrites its files; the trainer evaluates the test split once, at the selected checkpoint)."""

  splits: tuple = ("test",)


def _write_csv(path: str, header: list[str], rows: np.ndarray, index: np.ndarray,
               ids: np.ndarray | None = None) -> None:
  """`index` (and `id` when `ids` is given) then `header`'s columns, one line per row."""
  tmp = path + ".tmp"
  keys = ([[int(i)] for i in index] if ids is None
          else [[int(i), str(e)] for i, e in zip(index, ids)])
  with open(tmp, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["index"] + ([] if ids is None else ["id"]) + header)
    for key, row in zip(keys, rows):
      writer.writerow(key + [repr(float(x)) if isinstance(x, (float, np.floating)) else x
                             for x in np.atleast_1d(row).tolist()])
  os.replace(tmp, path)


def write_predictions(directory: str, target_names: tuple[str, ...] | None,
                      predictions: dict[str, np.ndarray], modes: dict[str, str],
                      info: dict[str, Any]) -> None:
  """y_pred.csv / y_true.csv (+ confusion.csv) per mode under `directory`, rows keyed by the
  example's index in its split and, when the dataset has them, its id (`predictions['id']`, the
  clip name); `target_names` None for classes, else the regression targets."""
  order = np.argsort(predictions["index"], kind="stable")
  index = predictions["index"][order]
  ids = np.asarray(predictions["id"])[order] if "id" in predictions else None
  classify = target_names is None
  if classify:
    truth = np.asarray(predictions.get("target", predictions["label"]))[order].astype(np.int64)
    true_header = ["label"]
  else:
    truth = np.asarray(predictions["targets"])[order]
    true_header = list(target_names)
  for mode, key in modes.items():
    folder = os.path.join(directory, MODE_DIRS[mode])
    os.makedirs(folder, exist_ok=True)
    preds = np.asarray(predictions[key])[order]
    header = [str(c) for c in range(preds.shape[-1])] if classify else list(target_names)
    _write_csv(os.path.join(folder, "y_pred.csv"), header, preds, index, ids)
    _write_csv(os.path.join(folder, "y_true.csv"), true_header, truth, index, ids)
    if classify:
      keep = truth >= 0
      cm = metrics_lib.confusion_matrix(truth[keep], preds[keep], preds.shape[-1])
      _write_csv(os.path.join(folder, "confusion.csv"), [f"pred_{c}" for c in range(len(cm))],
                 cm, np.arange(len(cm)))
  with open(os.path.join(directory, "checkpoint.json"), "w") as f:
    json.dump(info, f, indent=2)


@EVALUATORS.register("predictions")
class Predictions(Evaluator):
  """Per-example predictions of the fused and per-modality outputs as CSV files."""

  Settings = PredictionSettings
  requires = TASK_OUTPUTS

  def outputs(self, model, batch, output):
    return self.task.eval_outputs(batch)

  def write(self, ctx: EvalContext) -> None:
    if not ctx.is_chief or ctx.split not in tuple(self.settings.splits):
      return
    regress = self.config.task.name == "regression"
    write_predictions(workdir_lib.predictions(ctx.workdir, ctx.split),
                      tuple(self.config.task.targets) if regress else None, ctx.predictions,
                      LOGIT_MODES, {"step": ctx.step, "split": ctx.split,
                                    "task": self.config.task.name})
