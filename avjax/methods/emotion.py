"""Emotion tasks shared by VAVL and AuxFormer: losses, split reports and test-prediction CSVs.

`config.method.task`:
  'categorical': targets are the argmax of the batch's 'soft_label' (B, C) when present (VAVL's
    consensus soft labels, CE on their argmax), else 'label'. Loss: cross-entropy. Reports:
    accuracy, macro_f1, micro_f1, weighted_f1, loss (CE); the confusion matrix goes to the CSVs.
  'dimensional': targets are batch['attributes'] (B, 3) = (arousal, valence, dominance) in [0, 1];
    the model has 3 outputs. Loss per batch: sum_k (1 - CCC_k) (population moments, as VAVL's
    CCC_loss). Reports over the whole split (avjax.metrics.ccc): ccc_arousal, ccc_valence,
    ccc_dominance, pearson_*, ccc_mean and ccc_loss = 3 - sum_k CCC_k (model selection; = 'loss').

Every report has fused results under plain keys and audio-only / visual-only results with `_audio` /
`_visual` suffixes; which prediction each mode reads is the method's `MODE_KEYS`. At each evaluation
of the test split the predictions of the three modes are written, as VAVL's train.py does at its
best dev epoch, to <workdir>/predictions/<split>/{audiovisual,acoustic,visual}/y_pred.csv and
y_true.csv (+ confusion.csv for 'categorical'), rows keyed by the example's index in the split;
the trainer evaluates the test split once, with the best checkpoint restored (checkpoint.json says
which).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from avjax import metrics as metrics_lib
from avjax import valuation
from avjax.methods import base
from avjax.methods.base import EvalContext, Method, Metrics
from avjax.models.outputs import ModelOutput
from avjax.registry import ConfigError

TASKS = ("categorical", "dimensional")
ATTRIBUTES = ("arousal", "valence", "dominance")
# Report suffix -> the reference's folder name for that mode's predictions.
MODE_DIRS = {"": "audiovisual", "_audio": "acoustic", "_visual": "visual"}


@dataclasses.dataclass(frozen=True)
class EmotionSettings(base.Settings):
  """task: 'categorical' or 'dimensional' (the references' --label_type)."""

  task: str = "categorical"

  def __post_init__(self):
    super().__post_init__()
    if self.task not in TASKS:
      raise ConfigError(f"config.method.task={self.task!r} is not one of {TASKS}.")


# ------------------------------------------------------------------------------------ losses (jax)


def class_targets(batch: dict[str, jax.Array]) -> jax.Array:
  """(B,) int targets: argmax of batch['soft_label'] when present, else batch['label']."""
  if "soft_label" in batch:
    return jnp.argmax(batch["soft_label"], axis=-1).astype(jnp.int32)
  return batch["label"].astype(jnp.int32)


def _normalised(weights: jax.Array | None, n: int) -> jax.Array:
  w = jnp.ones((n,), jnp.float32) if weights is None else weights.astype(jnp.float32)
  return w / jnp.maximum(jnp.sum(w), 1e-12)


def weighted_mean(values: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """Mean of (B,) values over the (global) batch, weighted by (B,) weights (1 = counts)."""
  return jnp.sum(values * _normalised(weights, values.shape[0]))


def cross_entropy(logits: jax.Array, targets: jax.Array,
                  weights: jax.Array | None = None) -> jax.Array:
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
  return weighted_mean(ce, weights)


def ccc_per_output(preds: jax.Array, targets: jax.Array,
                   weights: jax.Array | None = None) -> jax.Array:
  """Lin's CCC of each output over the batch with population moments. (B,R), (B,R) -> (R,).

  2 cov / (var_p + var_t + (mean_p - mean_t)^2) (= VAVL's 2 rho s_p s_t / (...)); identical
  constants give 1. `weights` (B,) leave out examples (0) without changing shapes.
  """
  w = _normalised(weights, preds.shape[0])[:, None]
  p, t = preds.astype(jnp.float32), targets.astype(jnp.float32)
  mp, mt = jnp.sum(w * p, 0), jnp.sum(w * t, 0)
  dp, dt = p - mp, t - mt
  cov = jnp.sum(w * dp * dt, 0)
  denom = jnp.sum(w * dp * dp, 0) + jnp.sum(w * dt * dt, 0) + (mp - mt) ** 2
  ok = denom > 0
  return jnp.where(ok, 2.0 * cov / jnp.where(ok, denom, 1.0), 1.0)


def mse(preds: jax.Array, targets: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """Mean squared error over all elements (torch MSELoss), examples weighted by (B,) weights."""
  err = jnp.mean(jnp.square(preds.astype(jnp.float32) - targets.astype(jnp.float32)), axis=-1)
  return weighted_mean(err, weights)


def task_loss(task: str, preds: jax.Array, batch: dict[str, jax.Array],
              weights: jax.Array | None = None) -> tuple[jax.Array, Metrics]:
  """CE on class targets, or sum_k (1 - CCC_k) on batch['attributes']; (loss, metrics)."""
  if task == "categorical":
    loss = cross_entropy(preds, class_targets(batch), weights)
    return loss, {}
  if "attributes" not in batch:
    raise ConfigError("config.method.task='dimensional' needs emotion attributes in the batch "
                      "('attributes' (B, 3): arousal, valence, dominance), which this dataset's "
                      "records do not have; use a dataset with attributes (msp_improv, "
                      "synthetic_av) or config.method.task='categorical'.")
  ccc = ccc_per_output(preds, batch["attributes"], weights)
  return jnp.sum(1.0 - ccc), {f"ccc_{n}": ccc[i] for i, n in enumerate(ATTRIBUTES)}


# ------------------------------------------------------------------------- split reports (numpy)


def _ce(logits: np.ndarray, targets: np.ndarray) -> float:
  z = logits.astype(np.float64)
  z = z - z.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  return float(-np.mean(logp[np.arange(len(targets)), targets])) if len(targets) else 0.0


def categorical_report(predictions: dict[str, np.ndarray],
                       mode_keys: dict[str, str]) -> dict[str, float]:
  """accuracy / macro_f1 / micro_f1 / weighted_f1 / loss for each mode (suffix -> logits key);
  examples with a negative target (no class) are left out."""
  targets = np.asarray(predictions.get("target", predictions["label"])).astype(np.int64)
  keep = targets >= 0
  report: dict[str, float] = {}
  for suffix, key in mode_keys.items():
    logits = np.asarray(predictions[key])[keep]
    y = targets[keep]
    c = logits.shape[-1]
    report.update(metrics_lib.classification_metrics(y, {suffix: logits}, num_classes=c))
    report[f"micro_f1{suffix}"] = metrics_lib.f1_scores(y, logits, c)["micro_f1"]
    report[f"loss{suffix}"] = _ce(logits, y)
  return report


def dimensional_report(predictions: dict[str, np.ndarray],
                       mode_keys: dict[str, str]) -> dict[str, float]:
  """ccc_<attribute>, pearson_<attribute>, ccc_mean, pearson, ccc_loss (= loss) for each mode."""
  targets = np.asarray(predictions["attributes"])
  report: dict[str, float] = {}
  for suffix, key in mode_keys.items():
    out = metrics_lib.regression_metrics(targets, np.asarray(predictions[key]),
                                         names=ATTRIBUTES, suffix=suffix)
    out[f"ccc_loss{suffix}"] = float(len(ATTRIBUTES) - sum(out[f"ccc_{n}{suffix}"]
                                                           for n in ATTRIBUTES))
    out[f"loss{suffix}"] = out[f"ccc_loss{suffix}"]
    report.update(out)
  return report


def _write_csv(path: str, header: list[str], rows: np.ndarray, index: np.ndarray) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["index"] + header)
    for i, row in zip(index, rows):
      writer.writerow([int(i)] + [repr(float(x)) if isinstance(x, (float, np.floating)) else x
                                  for x in np.atleast_1d(row).tolist()])
  os.replace(tmp, path)


def write_predictions(directory: str, task: str, predictions: dict[str, np.ndarray],
                      mode_keys: dict[str, str], info: dict[str, Any]) -> None:
  """y_pred.csv / y_true.csv (+ confusion.csv) per mode under `directory` (see the module doc)."""
  order = np.argsort(predictions["index"], kind="stable")
  index = predictions["index"][order]
  if task == "categorical":
    truth = np.asarray(predictions.get("target", predictions["label"]))[order].astype(np.int64)
    true_header = ["label"]
  else:
    truth = np.asarray(predictions["attributes"])[order]
    true_header = list(ATTRIBUTES)
  for suffix, key in mode_keys.items():
    folder = os.path.join(directory, MODE_DIRS[suffix])
    os.makedirs(folder, exist_ok=True)
    preds = np.asarray(predictions[key])[order]
    header = (list(ATTRIBUTES) if task == "dimensional" else
              [str(c) for c in range(preds.shape[-1])])
    _write_csv(os.path.join(folder, "y_pred.csv"), header, preds, index)
    _write_csv(os.path.join(folder, "y_true.csv"), true_header, truth, index)
    if task == "categorical":
      keep = truth >= 0
      cm = metrics_lib.confusion_matrix(truth[keep], preds[keep], preds.shape[-1])
      _write_csv(os.path.join(folder, "confusion.csv"), [f"pred_{c}" for c in range(len(cm))],
                 cm, np.arange(len(cm)))
  with open(os.path.join(directory, "checkpoint.json"), "w") as f:
    json.dump(info, f, indent=2)


class EmotionMethod(Method):
  """Task handling (`config.method.task`), reports with `_audio` / `_visual` modes and test CSVs.

  Subclasses set MODE_KEYS (report suffix -> prediction key) and may add per-example eval outputs.
  """

  MODE_KEYS = {"": "logits", "_audio": "logits_audio", "_visual": "logits_visual"}
  Settings = EmotionSettings

  def __init__(self, config: ml_collections.ConfigDict, model: Any = None):
    super().__init__(config, model)
    self.task = self.settings.task

  def model_overrides(self) -> dict[str, Any]:
    return {"num_classes": len(ATTRIBUTES)} if self.task == "dimensional" else {}

  def loss(self, output: ModelOutput, batch: dict[str, jax.Array], state: Any,
           ctx: Any) -> tuple[jax.Array, Metrics]:
    loss, metrics = task_loss(self.task, output.logits, batch)
    return loss, {"loss": loss, **metrics}

  def train_metrics(self, output: ModelOutput, batch: dict[str, jax.Array]) -> Metrics:
    """Categorical: fused / audio / visual accuracy on the class targets of this batch."""
    if self.task != "categorical":
      return {}
    y = class_targets(batch)
    hit = lambda logits: jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32))
    out = {"accuracy": hit(output.logits)}
    out.update({f"accuracy_{m}": hit(l) for m, l in output.modality_logits.items()})
    return out

  def eval_outputs(self, model: Any, batch: dict[str, jax.Array],
                   output: ModelOutput) -> dict[str, jax.Array]:
    """The class targets (categorical) next to the base method's outputs (per-example Shapley
    contributions for classification; none for the attributes)."""
    out = dict(super().eval_outputs(model, batch, output))
    if self.task == "categorical":
      out["target"] = class_targets(batch)
    return out

  def eval_report(self, predictions: dict[str, np.ndarray]) -> dict[str, float]:
    if self.task == "categorical":
      report = categorical_report(predictions, self.MODE_KEYS)
    else:
      report = dimensional_report(predictions, self.MODE_KEYS)
    return {**report, **valuation.contribution_report(predictions)}

  def eval_artifacts(self, ctx: EvalContext) -> None:
    """The base method's files, and for the test split the three modes' predictions as CSV
    (overwritten at each test evaluation)."""
    super().eval_artifacts(ctx)
    if not ctx.is_chief or ctx.split != self.config.dataset.test_split:
      return
    directory = os.path.join(ctx.workdir, "predictions", ctx.split)
    write_predictions(directory, self.task, ctx.predictions, self.MODE_KEYS,
                      {"step": ctx.step, "split": ctx.split, "task": self.task})
