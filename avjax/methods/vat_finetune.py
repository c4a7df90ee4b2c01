"""VAT fine-tuning with momentum pseudo-targets (`vat_finetune`, model 'vat_classifier').

  L = (1 - alpha) CE(p, y) + alpha * (-sum softmax(p_m) log softmax(p))        (classification)
  L = (1 - alpha) MSE(r, t) + alpha * MSE(r, r_m)                                (regression)
  with p_m, r_m from the momentum copy of the whole model (EMA updated before the forward), alpha
  ramped as in pre-training; config.task 'classification_regression' adds both (regression
  weighted by config.task.regression_weight; targets, their columns and range from config.task).
  Per-modality heads get their own CE / MSE (weight `modality_weight`; at 0 they are linear probes on stop-gradient [CLS] features that leave the encoders untouched).

Config keys: see FinetuneSettings (config.method.<key>, defaults when absent).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from avjax.methods import base
from avjax.methods.base import METHODS, Metrics, StepContext, apply_gradients, cross_entropy
from avjax.methods.vat import VATSchedule, check_common, momentum_copy
from avjax.models import vat_objectives as L
from avjax.models.contract import ModelInfo
from avjax.models.outputs import MODALITIES, ModelOutput
from avjax.registry import ConfigError
from avjax.state import ModelFns, TrainState

@dataclasses.dataclass(frozen=True)
class FinetuneSettings(base.Settings):
  """vat_finetune's settings (../shared/reference/vat.md; ALBEF's fine-tuning recipe)."""

  momentum: float = 0.995  # EMA of the pseudo-target model.
  alpha: float = 0.4  # Pseudo-target weight, ramped over epoch 0.
  modality_weight: float = 0.0  # Per-modality head losses; 0: detached linear probes.
  min_learning_rate: float = 0.0  # Cosine end value.

  def __post_init__(self):
    super().__post_init__()
    if not 0 <= self.momentum < 1 or not 0 <= self.alpha <= 1:
      raise ConfigError(f"config.method.momentum={self.momentum!r} must be in [0, 1) and "
                        f"config.method.alpha={self.alpha!r} in [0, 1].")
    if self.modality_weight < 0:
      raise ConfigError("config.method.modality_weight must be >= 0.")


class VATFinetune(VATSchedule):
  """Fine-tuning with momentum pseudo-targets: classification, regression, or both (module doc)."""

  Settings = FinetuneSettings
  requires = frozenset({"modality_logits", "encode_fuse", "tokens", "regression"})
  tasks = frozenset({"classification", "regression", "classification_regression"})

  def __init__(self, config: ml_collections.ConfigDict, model: ModelInfo | None = None):
    super().__init__(config, model)
    get = lambda k: getattr(self.settings, k)
    self.momentum, self.alpha = float(get("momentum")), float(get("alpha"))
    t = config.task
    self.target_names = tuple(t.targets)
    self.target_range = tuple(float(x) for x in t.target_range)
    self.regression_weight = float(t.regression_weight)
    self.modality_weight = float(get("modality_weight"))
    self.min_learning_rate = float(get("min_learning_rate"))
    self.classify = t.name in ("classification", "classification_regression")
    self.regress = t.name in ("regression", "classification_regression")

  @classmethod
  def report_keys(cls, config: ml_collections.ConfigDict) -> set[str]:
    """The main validation metrics eval_report gives (per-modality variants omitted)."""
    task, names = config.task.name, tuple(config.task.targets)
    keys = {"loss"}
    if task != "regression":
      keys |= {"accuracy", "macro_f1", "weighted_f1"}
    if task != "classification":
      keys |= {"pearson", "ccc_mean", "mse"} | {f"{p}_{n}" for p in ("pearson", "ccc", "mse")
                                                 for n in names}
      if task == "classification_regression" and "valence" in names:
        keys.add("mer_score")
    return keys

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    super().validate(config)
    if config.task.name == "classification" and tuple(config.task.target_indices):
      raise ConfigError("config.task.target_indices is set but config.task.name="
                        "'classification' ignores it; use 'classification_regression' or clear it.")
    if config.task.regression_weight < 0:
      raise ConfigError("config.task.regression_weight must be >= 0.")
    check_common(config, "vat_finetune", cls.report_keys(config))

  def model_overrides(self) -> dict[str, Any]:
    out = {"num_targets": len(self.target_names) if self.regress else 0,
           "target_range": self.target_range,
           "detach_modality_heads": self.modality_weight == 0}
    if not self.classify:
      out["num_classes"] = 0
    return out

  def init_state(self, params: nnx.State) -> dict[str, Any]:
    return {"momentum": momentum_copy(params)} if self.alpha > 0 else {}

  def targets(self, batch: dict[str, jax.Array]) -> jax.Array:
    """(B, R) regression targets: the configured columns of batch['attributes']."""
    return self.task.regression_targets(batch)

  def update(self, model: ModelFns, tx: optax.GradientTransformation, state: TrainState,
             batch: dict[str, jax.Array], ctx: StepContext
             ) -> tuple[TrainState, ModelOutput, Metrics]:
    alpha = L.ramped_alpha(self.alpha, ctx.step, ctx.steps_per_epoch)
    method_state, teacher = state.method_state, None
    if self.alpha > 0:
      momentum = L.ema(method_state["momentum"], state.params, self.momentum)
      teacher, _ = model.forward(momentum, state.model_state, batch)
      teacher = jax.lax.stop_gradient(teacher)
      method_state = {"momentum": momentum}

    def loss_fn(p):
      output, model_state = model.forward(p, state.model_state, batch)
      loss, metrics = self.finetune_loss(output, teacher, batch, alpha)
      return loss, (output, model_state, metrics)

    (_, (output, model_state, metrics)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    new_state = apply_gradients(tx, state, grads, learning_rate=ctx.learning_rate,
                                model_state=model_state, method_state=method_state)
    return new_state, output, {**metrics, "alpha": alpha}

  def finetune_loss(self, output: ModelOutput, teacher: ModelOutput | None,
                    batch: dict[str, jax.Array], alpha: jax.Array | float
                    ) -> tuple[jax.Array, Metrics]:
    """The fused loss with pseudo-targets plus the per-modality head losses (module doc)."""
    metrics, main = {}, 0.0
    if self.classify:
      ce = cross_entropy(output.logits, batch["label"])
      kd = L.distillation(output.logits, teacher.logits) if teacher is not None else 0.0
      main = (1.0 - alpha) * ce + alpha * kd
      metrics["loss_ce"] = ce
    if self.regress:
      t = self.targets(batch)
      mse = jnp.mean(jnp.square(output.regression - t))
      mse_m = (jnp.mean(jnp.square(output.regression
                                   - jax.lax.stop_gradient(teacher.regression)))
               if teacher is not None else 0.0)
      reg = (1.0 - alpha) * mse + alpha * mse_m
      main = main + (self.regression_weight if self.classify else 1.0) * reg
      metrics["loss_mse"] = mse
    modality = 0.0
    for m in MODALITIES:
      term = 0.0
      if self.classify:
        term = cross_entropy(output.modality_logits[m], batch["label"])
      if self.regress:
        mse_m = jnp.mean(jnp.square(output.modality_regression[m] - self.targets(batch)))
        term = term + (self.regression_weight if self.classify else 1.0) * mse_m
      metrics[f"loss_{m}"] = term
      modality = modality + term
    loss = main + (self.modality_weight or 1.0) * modality  # Weight 0: detached probes (weight 1).
    metrics.update(loss=loss, loss_main=main)
    return loss, metrics

  def train_metrics(self, output: ModelOutput, batch: dict[str, jax.Array]) -> Metrics:
    return super().train_metrics(output, batch) if self.classify else {}


METHODS.register("vat_finetune")(VATFinetune)
