"""`gblending`: online Gradient-Blending (Wang, Tran, Feiszli, CVPR 2020, arXiv 1905.12681).

Every head k in {audio, visual, fused} gets its own cross-entropy, weighted by how much that head
generalises per unit of overfitting, measured by short trial trainings:

  L = sum_k w_k CE(z_k, y)          z_audio / z_visual: separate uni-modal heads, z_fused: fusion

Estimation of w (at the start of each super-epoch, from the current model): throw-away copies of the
model train for `estimate_epochs` epochs on the fit part of the training split (a uni-modal copy on
CE(z_audio) + CE(z_visual): the two encoder+head pathways are disjoint, so with an element-wise
optimizer this is two independent uni-modal models in one; a multimodal copy on CE(z_fused)), each
with a fresh optimizer at the optimizer's initial rate (BB resets its copy's optimizer to the
initial state). With T / V the per-example mean CE of a head on the fit / held-out fold before (0)
and after (n) that training (clean eval-mode passes):

  dG_k = V_0 - V_n,   dO_k = (V_n - T_n) - (V_0 - T_0),   w_k ~ max(dG_k, 0) / max(dO_k^2, 1e-8)

normalised to sum 1 (uniform when every raw weight is 0). The held-out fold is
`EpochContext.heldout` (a seeded 20 % of the TRAINING split, never validation or test; BB estimates
on the test set), and its examples are excluded from training: every epoch's plan is a shuffled pass
over the fit fold.

Trainer epochs: each super-epoch is `estimate_epochs` estimation epochs (the copies train, the model
is untouched) followed by `super_epoch` epochs training the model with the new weights, so
config.train.num_epochs counts both (BB's 30 epochs with super_epoch 10: 3 x (10 + 10) = 60). The
model's learning-rate schedule counts only its own epochs (BB steps its StepLR per main epoch).
Evaluation after an estimation epoch sees the unchanged model; train metrics of those epochs are the
copies'.

Config keys (config.method.*): super_epoch (10: BB trainer_config.yaml:34-39), estimate_epochs
(None: super_epoch, as BB and the paper train the copies n epochs). Logged: loss_audio / loss_visual
/ loss_fused, gb_weight_<head> (the weights in use), gb_gain_<head> / gb_overfit_<head> (the last
estimate's dG and dO), gb_estimating.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from avjax.data.pipeline import EpochPlan
from avjax.methods import base
from avjax.methods.base import (METHODS, EpochContext, EpochUpdate, Method, Metrics, StepContext,
                                apply_gradients, cross_entropy, scale_updates)
from avjax.models import build_model
from avjax.models.outputs import ModelOutput
from avjax.registry import ConfigError
from avjax.state import ModelFns, TrainState, model_inputs

HEADS = ("audio", "visual", "fused")
OVERFIT_FLOOR = 1e-8  # Guards dO^2 = 0.


@dataclasses.dataclass(frozen=True)
class GBlendingSettings(base.Settings):
  """super_epoch: model epochs per estimate (BB 10); estimate_epochs: epochs the copies train per
  estimate (None: super_epoch)."""

  super_epoch: int = 10
  estimate_epochs: int | None = None

  def __post_init__(self):
    super().__post_init__()
    if self.super_epoch < 1 or (self.estimate_epochs is not None and self.estimate_epochs < 1):
      raise ConfigError(f"config.method.super_epoch={self.super_epoch!r} and estimate_epochs="
                        f"{self.estimate_epochs!r} must be >= 1 (None: super_epoch).")


def blending_weights(train_start, val_start, train_end, val_end) -> dict[str, np.ndarray]:
  """G-Blending weights from per-head mean losses (arrays over heads) before / after training.

  Returns {'weights' (normalised, sum 1), 'raw', 'gain' (dG), 'overfit' (dO)}."""
  t0, v0, tn, vn = (np.asarray(x, np.float64) for x in (train_start, val_start, train_end,
                                                         val_end))
  gain = v0 - vn
  overfit = (vn - tn) - (v0 - t0)
  raw = np.maximum(gain, 0.0) / np.maximum(overfit ** 2, OVERFIT_FLOOR)
  total = raw.sum()
  weights = raw / total if total > 0 else np.full_like(raw, 1.0 / len(raw))
  return {"weights": weights, "raw": raw, "gain": gain, "overfit": overfit}


def head_losses(output: ModelOutput, labels: jax.Array) -> dict[str, jax.Array]:
  """Per-example CE (B,) of each head."""
  ce = lambda z: optax.softmax_cross_entropy_with_integer_labels(z.astype(jnp.float32), labels)
  return {"audio": ce(output.modality_logits["audio"]),
          "visual": ce(output.modality_logits["visual"]), "fused": ce(output.logits)}


@dataclasses.dataclass(frozen=True)
class HeadLossPass:
  """The per-example pass behind an estimate (hashable: `EpochContext.run` compiles it once)."""

  label_key: str = "label"

  def __call__(self, model: nnx.Module, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    labels = batch[self.label_key]
    if labels.ndim == 2:  # Soft labels: their argmax, as the classification task does.
      labels = jnp.argmax(labels, -1)
    return head_losses(model(model_inputs(batch)), labels.astype(jnp.int32))


class GBlending(Method):
  """Blended per-head cross-entropies; weights re-estimated by trial trainings (see module)."""

  Settings = GBlendingSettings
  requires = frozenset({"modality_logits", "modality_heads"})
  diagnostics = tuple(f"gb_weight_{k}" for k in HEADS)

  def __init__(self, config: ml_collections.ConfigDict, model: Any = None):
    super().__init__(config, model)
    self.train_epochs = int(self.settings.super_epoch)
    self.estimate_epochs = int(self.settings.estimate_epochs or self.settings.super_epoch)
    self.cycle = self.estimate_epochs + self.train_epochs
    self.copy_rate = float(config.optimizer.learning_rate)

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    super().validate(config)
    if config.optimizer.grad_clip_norm:
      raise ConfigError("method 'gblending' trains both uni-modal copies with one optimizer, which "
                        "global-norm clipping would couple; set config.optimizer.grad_clip_norm=0.")

  def model_overrides(self) -> dict[str, Any]:
    return {"modality_heads": "separate"}

  def estimating(self, epoch: Any) -> Any:
    """Whether a trainer epoch trains the copies (the first `estimate_epochs` of each cycle)."""
    return epoch % self.cycle < self.estimate_epochs

  def learning_rate(self, schedule_step: Any, steps_per_epoch: int) -> Any:
    """The model's schedule over its own (training) epochs only."""
    epoch = schedule_step // steps_per_epoch
    within = schedule_step - epoch * steps_per_epoch
    position = epoch % self.cycle
    trained = (epoch // self.cycle) * self.train_epochs + jnp.maximum(
        position - self.estimate_epochs, 0)
    step = trained * steps_per_epoch + jnp.where(position >= self.estimate_epochs, within, 0)
    return super().learning_rate(step, steps_per_epoch)

  # ---------------------------------------------------------------------------------- state
  def init_state(self, params: nnx.State) -> Any:
    abstract = nnx.eval_shape(lambda: build_model(self.config, self.model.num_outputs,
                                                  self.model_overrides()))
    abstract.train()
    _, _, model_state = nnx.split(abstract, nnx.Param, ...)
    model_state = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), model_state)
    copy = {"params": jax.tree.map(jnp.copy, params), "model_state": model_state,
            "opt_state": self.optimizer(1).init(params)}
    third = jnp.full((len(HEADS),), 1.0 / len(HEADS), jnp.float32)
    zeros = lambda: jnp.zeros((len(HEADS),), jnp.float32)  # Distinct buffers (donated).
    return {"weights": third, "gain": zeros(), "overfit": zeros(),
            "start": jnp.zeros((2, len(HEADS)), jnp.float32),  # (T_0, V_0) per head.
            "unimodal": copy, "multimodal": jax.tree.map(jnp.copy, copy)}

  def measure(self, ctx: EpochContext, variables: tuple[Any, Any]) -> np.ndarray:
    """(2, heads): mean per-example CE on the fit fold (T) and the held-out fold (V)."""
    _, held = ctx.heldout()
    out = ctx.run(HeadLossPass(self.config.task.labels), "train", None, variables=variables)
    is_held = np.isin(out["index"], held)
    return np.array([[out[k][~is_held].mean() for k in HEADS],
                     [out[k][is_held].mean() for k in HEADS]], np.float64)

  def on_epoch_start(self, ctx: EpochContext) -> EpochUpdate:
    fit, _ = ctx.heldout()
    plan = EpochPlan(fit[np.random.default_rng([ctx.seed, ctx.epoch]).permutation(len(fit))])
    position = ctx.epoch % self.cycle
    state, method_state = ctx.state, ctx.state.method_state
    if position == 0:  # An estimate starts: copies of the model, fresh optimizers.
      start = self.measure(ctx, (state.params, state.model_state))
      fresh = lambda: {"params": jax.tree.map(jnp.copy, state.params),
                       "model_state": jax.tree.map(jnp.copy, state.model_state),
                       "opt_state": self.optimizer(1).init(state.params)}
      method_state = {**method_state, "start": jnp.asarray(start, jnp.float32),
                      "unimodal": fresh(), "multimodal": fresh()}
    elif position == self.estimate_epochs:  # The copies are trained: new weights.
      uni, multi = method_state["unimodal"], method_state["multimodal"]
      end_uni = self.measure(ctx, (uni["params"], uni["model_state"]))
      end_multi = self.measure(ctx, (multi["params"], multi["model_state"]))
      end = np.concatenate([end_uni[:, :2], end_multi[:, 2:]], axis=1)
      start = np.asarray(jax.device_get(method_state["start"]), np.float64)
      blend = blending_weights(start[0], start[1], end[0], end[1])
      method_state = {**method_state, **{k: jnp.asarray(blend[k], jnp.float32)
                                         for k in ("weights", "gain", "overfit")}}
    else:
      method_state = None  # Unchanged.
    return EpochUpdate(plan=plan, method_state=method_state)

  # ---------------------------------------------------------------------------------- steps
  def update(self, model: ModelFns, tx: optax.GradientTransformation, state: TrainState,
             batch: dict[str, jax.Array], ctx: StepContext
             ) -> tuple[TrainState, ModelOutput, Metrics]:
    labels = self.task.class_targets(batch)
    new_state, output, metrics = jax.lax.cond(
        self.estimating(ctx.epoch), lambda: self.estimate_step(model, tx, state, batch, labels),
        lambda: self.blended_step(model, tx, state, batch, labels, ctx))
    ms = new_state.method_state
    for i, k in enumerate(HEADS):
      metrics.update({f"gb_weight_{k}": ms["weights"][i], f"gb_gain_{k}": ms["gain"][i],
                      f"gb_overfit_{k}": ms["overfit"][i]})
    metrics["gb_estimating"] = self.estimating(ctx.epoch).astype(jnp.float32)
    return new_state, output, metrics

  def blended_step(self, model, tx, state, batch, labels, ctx):
    """One step of the model on sum_k w_k CE_k."""
    weights = state.method_state["weights"]

    def loss_fn(params):
      output, model_state = model.forward(params, state.model_state, batch)
      losses = {k: jnp.mean(v) for k, v in head_losses(output, labels).items()}
      loss = sum(weights[i] * losses[k] for i, k in enumerate(HEADS))
      return loss, (output, losses, model_state)

    (loss, (output, losses, model_state)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    new_state = apply_gradients(tx, state, grads, learning_rate=ctx.learning_rate,
                                model_state=model_state)
    return new_state, output, {"loss": loss, **{f"loss_{k}": v for k, v in losses.items()}}

  def estimate_step(self, model, tx, state, batch, labels):
    """One step of each copy on its own loss; the model is untouched."""

    def train_copy(copy, loss_of):
      def loss_fn(params):
        output, model_state = model.forward(params, copy["model_state"], batch)
        return loss_of(output), (output, model_state)

      (loss, (output, model_state)), grads = jax.value_and_grad(
          loss_fn, has_aux=True)(copy["params"])
      updates, opt_state = tx.update(grads, copy["opt_state"], copy["params"])
      updates = scale_updates(updates, jnp.float32(self.copy_rate))
      return {"params": optax.apply_updates(copy["params"], updates), "model_state": model_state,
              "opt_state": opt_state}, output

    ms = state.method_state
    uni, uni_out = train_copy(ms["unimodal"], lambda o: cross_entropy(
        o.modality_logits["audio"], labels) + cross_entropy(o.modality_logits["visual"], labels))
    multi, multi_out = train_copy(ms["multimodal"], lambda o: cross_entropy(o.logits, labels))
    output = multi_out.replace(modality_logits=uni_out.modality_logits)
    losses = {k: jnp.mean(v) for k, v in head_losses(output, labels).items()}
    new_state = state.replace(method_state={**ms, "unimodal": uni, "multimodal": multi})
    return new_state, output, {"loss": sum(losses.values()),
                               **{f"loss_{k}": v for k, v in losses.items()}}


METHODS.register("gblending")(GBlending)
