"""What a run predicts, chosen by `config.task`, independent of the balancing method.

A task owns the targets, the loss, the step metrics, the split report and the console's headline
columns; methods call it and never branch on it. Tasks (`config.task.name`):

  classification             class targets: batch['label'], or the argmax of batch['soft_label']
                             with task.labels='soft_label' (VAVL's consensus labels); loss CE;
                             reports accuracy, macro / micro / weighted F1, loss.
  regression                 named targets: columns `target_indices` of batch['attributes']
                             (default 0..R-1), names `targets`; loss sum_k (1 - CCC_k) ('ccc', VAVL)
                             or the mean squared error ('mse'); reports ccc_<name>, pearson_<name>,
                             mse_<name>, ccc_mean, pearson, mse, ccc_loss = R - sum CCC, loss.
  classification_regression  both (the model's `regression` outputs next to class logits; MER):
                             loss CE + regression_weight * regression loss; with a 'valence'
                             target the report adds MER2023's mer_score = weighted_f1 - 0.25 *
                             mse_valence.

Every report has the fused result under plain keys and each mode's under `_<mode>` suffixes; which
prediction a mode reads is the caller's `modes` ({'': 'logits', 'audio': 'logits_audio', ...}).
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from avjax import metrics as metrics_lib
from avjax.registry import ConfigError, Registry

Metrics = dict[str, jax.Array]
LABEL_SOURCES = ("label", "soft_label")
REGRESSION_LOSSES = ("ccc", "mse")
# The default modes: fused logits and the model's per-modality logits.
LOGIT_MODES = {"": "logits", "audio": "logits_audio", "visual": "logits_visual"}
MER_VALENCE_WEIGHT = 0.25  # MER2023: mer_score = weighted F1 - 0.25 * MSE(valence).


def _weights(weights: jax.Array | None, n: int) -> jax.Array:
  w = jnp.ones((n,), jnp.float32) if weights is None else weights.astype(jnp.float32)
  return w / jnp.maximum(jnp.sum(w), 1e-12)


def weighted_mean(values: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """Mean of (B,) values over the (global) batch, weighted by (B,) weights (1 = counts)."""
  return jnp.sum(values * _weights(weights, values.shape[0]))


def ccc_per_output(preds: jax.Array, targets: jax.Array,
                   weights: jax.Array | None = None) -> jax.Array:
  """Lin's CCC of each output over the batch with population moments. (B,R), (B,R) -> (R,).

  2 cov / (var_p + var_t + (mean_p - mean_t)^2) (= VAVL's 2 rho s_p s_t / (...)); identical
  constants give 1. `weights` (B,) leave out examples (0) without changing shapes.
  """
  w = _weights(weights, preds.shape[0])[:, None]
  p, t = preds.astype(jnp.float32), targets.astype(jnp.float32)
  mp, mt = jnp.sum(w * p, 0), jnp.sum(w * t, 0)
  dp, dt = p - mp, t - mt
  cov = jnp.sum(w * dp * dt, 0)
  denom = jnp.sum(w * dp * dp, 0) + jnp.sum(w * dt * dt, 0) + (mp - mt) ** 2
  ok = denom > 0
  return jnp.where(ok, 2.0 * cov / jnp.where(ok, denom, 1.0), 1.0)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy over the (global) batch; logits (B, C), integer labels (B,)."""
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                                  labels))


def mse(preds: jax.Array, targets: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """Mean squared error over all elements (torch MSELoss), examples weighted by (B,) weights."""
  err = jnp.mean(jnp.square(preds.astype(jnp.float32) - targets.astype(jnp.float32)), axis=-1)
  return weighted_mean(err, weights)


def _ce(logits: np.ndarray, targets: np.ndarray) -> float:
  """Mean cross-entropy in float64 on the host."""
  z = logits.astype(np.float64)
  z = z - z.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  return float(-np.mean(logp[np.arange(len(targets)), targets])) if len(targets) else 0.0


class Task:
  """A prediction task; `config` is the whole experiment config (its `task` section)."""

  needs_classes: ClassVar[bool] = True
  # Model capabilities the task cannot run without (checked with the method's).
  requires: ClassVar[frozenset[str]] = frozenset()

  def __init__(self, config: ml_collections.ConfigDict):
    self.settings = config.task

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for task settings that cannot run (before compiling)."""

  def num_outputs(self, num_classes: int) -> int:
    """The width of the model's logits."""
    return num_classes

  def loss(self, preds: jax.Array, batch: dict[str, jax.Array],
           weights: jax.Array | None = None) -> tuple[jax.Array, Metrics]:
    raise NotImplementedError

  def step_metrics(self, output: Any, batch: dict[str, jax.Array]) -> Metrics:
    """Metrics of one training step's forward output (scalars)."""
    return {}

  def eval_outputs(self, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Per-example targets kept with the eval predictions (traced)."""
    return {}

  def report(self, predictions: dict[str, np.ndarray],
             modes: dict[str, str] | None = None) -> dict[str, float]:
    """Split-level metrics from the whole split's predictions (host, numpy)."""
    raise NotImplementedError

  def columns(self) -> tuple[str, ...]:
    """The console's headline metrics for this task."""
    raise NotImplementedError


TASKS: Registry[type[Task]] = Registry("task")


@TASKS.register("classification")
class Classification(Task):
  """Cross-entropy on class targets (see the module docstring)."""

  def class_targets(self, batch: dict[str, jax.Array]) -> jax.Array:
    """(B,) int32 class targets."""
    if self.settings.labels == "soft_label" and "soft_label" in batch:
      return jnp.argmax(batch["soft_label"], axis=-1).astype(jnp.int32)
    return batch["label"].astype(jnp.int32)

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    if config.task.labels not in LABEL_SOURCES:
      raise ConfigError(f"config.task.labels={config.task.labels!r} is not one of "
                        f"{LABEL_SOURCES}.")

  def loss(self, preds, batch, weights=None):
    targets = self.class_targets(batch)
    if weights is None:
      return cross_entropy(preds, targets), {}
    ce = optax.softmax_cross_entropy_with_integer_labels(preds.astype(jnp.float32), targets)
    return weighted_mean(ce, weights), {}

  def step_metrics(self, output, batch):
    if output.logits.ndim != 2 or "label" not in batch:
      return {}
    y = self.class_targets(batch)
    hit = lambda logits: jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32))
    metrics = {"accuracy": hit(output.logits)}
    metrics.update({f"accuracy_{m}": hit(l) for m, l in output.modality_logits.items()})
    return metrics

  def eval_outputs(self, batch):
    return {"target": self.class_targets(batch)} if "label" in batch else {}

  def report(self, predictions, modes=None):
    """accuracy / macro_f1 / micro_f1 / weighted_f1 / loss per mode; examples with a negative
    target (no class) are left out, and a split of such examples only gets no metrics."""
    targets = np.asarray(predictions.get("target", predictions.get("label"))).astype(np.int64)
    keep = targets >= 0
    report: dict[str, float] = {}
    if not keep.any():  # A split of examples outside the classes (voxceleb's trial utterances).
      return report
    for mode, key in (modes or LOGIT_MODES).items():
      if key not in predictions:
        continue
      logits, y = np.asarray(predictions[key])[keep], targets[keep]
      c = logits.shape[-1]
      suffix = f"_{mode}" if mode else ""
      report.update(metrics_lib.classification_metrics(y, {mode: logits}, num_classes=c))
      report[f"micro_f1{suffix}"] = metrics_lib.f1_scores(y, logits, c)["micro_f1"]
      report[f"loss{suffix}"] = _ce(logits, y)
    return report

  def columns(self):
    return ("loss", "accuracy", "accuracy_audio", "accuracy_visual", "macro_f1")


@TASKS.register("regression")
class Regression(Task):
  """Named continuous targets from batch['attributes'] (see the module docstring)."""

  needs_classes = False

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(self.settings.targets)

  @property
  def indices(self) -> tuple[int, ...]:
    given = tuple(int(i) for i in self.settings.target_indices)
    return given or tuple(range(len(self.names)))

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    t = config.task
    names, given = tuple(t.targets), tuple(t.target_indices)
    if not names:
      raise ConfigError(f"config.task.name={t.name!r} needs config.task.targets, the names of the "
                        "regression targets (e.g. ('arousal', 'valence', 'dominance')).")
    if given and (len(given) != len(names) or min(given) < 0):
      raise ConfigError(f"config.task.target_indices={given} must give one column of the "
                        f"dataset's 'attributes' per name in config.task.targets={names}.")
    if t.regression_loss not in REGRESSION_LOSSES:
      raise ConfigError(f"config.task.regression_loss={t.regression_loss!r} is not one of "
                        f"{REGRESSION_LOSSES}.")
    lo, hi = t.target_range
    if not lo < hi:
      raise ConfigError(f"config.task.target_range=({lo}, {hi}) must satisfy lo < hi.")

  def num_outputs(self, num_classes):
    return len(self.names)

  def regression_targets(self, batch: dict[str, jax.Array]) -> jax.Array:
    """(B, R) float32 targets."""
    if "attributes" not in batch:
      raise ConfigError("config.task.name='regression' needs continuous attributes in the batch "
                        "('attributes' (B, K)), which this dataset's records do not have; use a "
                        "dataset with attributes (msp_improv, mer2023, muse, synthetic_av) or "
                        "config.task.name='classification'.")
    return batch["attributes"][:, jnp.asarray(self.indices)].astype(jnp.float32)

  def regression_loss(self, preds, batch, weights=None):
    t = self.regression_targets(batch)
    if self.settings.regression_loss == "mse":
      return mse(preds, t, weights), {}
    ccc = ccc_per_output(preds, t, weights)
    return jnp.sum(1.0 - ccc), {f"ccc_{n}": ccc[i] for i, n in enumerate(self.names)}

  def loss(self, preds, batch, weights=None):
    return self.regression_loss(preds, batch, weights)

  def eval_outputs(self, batch):
    return {"targets": self.regression_targets(batch)} if "attributes" in batch else {}

  def regression_report(self, predictions, modes):
    targets = np.asarray(predictions["targets"], np.float64)
    report: dict[str, float] = {}
    for mode, key in modes.items():
      if key not in predictions:
        continue
      preds = np.asarray(predictions[key], np.float64)
      suffix = f"_{mode}" if mode else ""
      report.update(metrics_lib.regression_metrics(targets, preds, self.names, suffix=mode))
      err = np.mean(np.square(preds - targets), axis=0)
      report.update({f"mse_{n}{suffix}": float(e) for n, e in zip(self.names, err)})
      report[f"mse{suffix}"] = float(np.mean(err))
      report[f"ccc_loss{suffix}"] = float(len(self.names) - sum(
          report[f"ccc_{n}{suffix}"] for n in self.names))
      main = "mse" if self.settings.regression_loss == "mse" else "ccc_loss"
      report[f"loss{suffix}"] = report[f"{main}{suffix}"]
    return report

  def report(self, predictions, modes=None):
    return self.regression_report(predictions, modes or LOGIT_MODES)

  def columns(self):
    return ("loss", "ccc_mean") + tuple(f"ccc_{n}" for n in self.names)


@TASKS.register("classification_regression")
class ClassificationRegression(Classification, Regression):
  """Class logits and the model's regression outputs (capability 'regression')."""

  needs_classes = True
  requires = frozenset({"regression"})

  @classmethod
  def validate(cls, config):
    Classification.validate(config)
    Regression.validate(config)

  def num_outputs(self, num_classes):
    return num_classes

  def loss(self, preds, batch, weights=None):
    raise NotImplementedError("classification_regression: combine `Classification.loss` on the "
                              "logits with `regression_loss` on output.regression.")

  def eval_outputs(self, batch):
    return {**Classification.eval_outputs(self, batch), **Regression.eval_outputs(self, batch)}

  def report(self, predictions, modes=None):
    report = Classification.report(self, predictions, modes)
    regression_modes = {m: k.replace("logits", "regression", 1)
                        for m, k in (modes or LOGIT_MODES).items()}
    report.update({k: v for k, v in self.regression_report(predictions, regression_modes).items()
                   if not k.startswith("loss")})
    if "valence" in self.names and "mse_valence" in report:  # MER-MULTI / MER-NOISE's score.
      report["mer_score"] = report["weighted_f1"] - MER_VALENCE_WEIGHT * report["mse_valence"]
    return report

  def columns(self):
    return Classification.columns(self) + ("ccc_mean",)


def make_task(config: ml_collections.ConfigDict) -> Task:
  """The configured task."""
  return TASKS.get(config.task.name)(config)
