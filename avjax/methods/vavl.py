"""`vavl`: VAVL's training schedule (ilucasgoncalves/VAVL train.py, net/modelWrapper.py).

Three optimisation steps per batch, inside the one jitted train step, each differentiating and
updating only its own parameter groups (the model's 'unimodal_branches' capability):

  1. visual:   rep_v = Shared(Visual(x_v)); L = task(head_visual(rep_v))
               + w_rec MSE(recon_visual(rep_v), masked time-mean of x_v)
               -> encoder/visual, shared, head/visual, recon/visual
  2. acoustic: the same with audio      -> encoder/audio, shared, head/audio, recon/audio
  3. fusion:   encoders, shared and uni-modal heads in eval mode (no dropout, BatchNorm running
               statistics, no statistics update); L = task(fusion(rep_a, rep_v)) -> fusion only

task = CE (classification; w_rec = 2) or sum_k (1 - CCC_k) (regression; w_rec = 1), see
avjax/tasks.py. Each step sees the parameters the previous one produced. Every module has its
own optimizer state (the reference's separate torch Adam per module: Adam(lr, betas (0.95, 0.999),
weight_decay 5e-7 as L2 = `config.optimizer` adam with weight_decay), so `shared` is stepped twice
per batch with one state, as there. The learning rate follows the run's schedule at the step's
position (the reference uses a constant rate).

Missing modalities: the batch's modality_mask (B, 2) weights each example's loss in the uni-modal
steps (an example without visual frames does not train the visual branch) and zeroes the missing
representation before the fusion head.

Config keys (config.method.*, defaults when absent): recon_weight (None: 2 for classification, 1
for regression, as the reference's categorical / dimensional). The task is config.task.
Logged: loss (the fusion step's), loss_visual / loss_audio (task terms), recon_visual / recon_audio,
and ccc_* of the fusion step for regression.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import ml_collections
import optax
from flax import nnx

from avjax import tasks
from avjax.methods import base
from avjax.methods.base import METHODS, Method, Metrics, StepContext, scale_updates
from avjax.models.contract import ModelInfo, replace, set_mode
from avjax.models.outputs import MODALITIES, ModelOutput
from avjax.optim import make_optimizer
from avjax.registry import ConfigError
from avjax.state import ModelFns, TrainState, model_inputs

# Parameter groups each step trains (the model's 'unimodal_branches' groups).
STEP_GROUPS = {
    "visual": ("encoder/visual", "shared", "head/visual", "recon/visual"),
    "audio": ("encoder/audio", "shared", "head/audio", "recon/audio"),
    "fusion": ("fusion",),
}
# Groups in eval mode during the fusion step (the fusion head itself trains, with dropout).
FROZEN_IN_FUSION = ("encoder/audio", "encoder/visual", "shared", "head/audio", "head/visual")
MODALITY_INDEX = {m: i for i, m in enumerate(MODALITIES)}


@dataclasses.dataclass(frozen=True)
class VAVLSettings(base.Settings):
  """recon_weight: weight of the reconstruction MSE (None: train.py's 2 for classification
  ('categorical'), 1 for regression ('dimensional'))."""

  recon_weight: float | None = None

  def __post_init__(self):
    super().__post_init__()
    if self.recon_weight is not None and not self.recon_weight >= 0:
      raise ConfigError(f"config.method.recon_weight={self.recon_weight!r} must be >= 0 (None: "
                        "the reference's 2 for categorical, 1 for dimensional).")


class ModuleOptimizer(NamedTuple):
  """The optimizer of a per-module schedule: `init(params)` -> {module: state}; `module_tx` updates
  one module; `update` (all modules at once) exists for generic callers."""

  init: Callable[[Any], Any]
  update: Callable[..., Any]
  module_tx: optax.GradientTransformation


def per_module_optimizer(module_tx: optax.GradientTransformation) -> ModuleOptimizer:
  """One independent `module_tx` state per top-level module (parameter path) of the params."""

  def init(params):
    return {m: module_tx.init(params[m]) for m in params}

  def update(grads, state, params=None):
    out, new_state = {}, {}
    for m in state:
      out[m], new_state[m] = module_tx.update(grads[m], state[m],
                                              None if params is None else params[m])
    return replace(grads, out), new_state

  return ModuleOptimizer(init=init, update=update, module_tx=module_tx)


class StepResult(NamedTuple):
  params: nnx.State
  model_state: nnx.State
  opt_state: dict[str, Any]
  loss: jax.Array
  aux: Any


@METHODS.register("vavl")
class VAVLMethod(Method):
  """Three steps per batch (visual, acoustic, fusion), per-module optimizer states."""

  Settings = VAVLSettings
  requires = frozenset({"unimodal_branches"})
  tasks = frozenset({"classification", "regression"})

  def __init__(self, config: ml_collections.ConfigDict, model: ModelInfo | None = None):
    super().__init__(config, model)
    weight = self.settings.recon_weight
    self.recon_weight = float(weight if weight is not None else
                              (2.0 if config.task.name == "classification" else 1.0))

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    super().validate(config)
    if config.train.grad_accum_steps != 1:
      raise ConfigError("method 'vavl' takes three optimizer steps per batch and does not "
                        "accumulate gradients; set config.train.grad_accum_steps=1.")
    check_inputs(config, "vavl")

  def optimizer(self, steps_per_epoch: int) -> ModuleOptimizer:
    tx = make_optimizer(self.config.optimizer, steps_per_epoch, self.config.train.num_epochs,
                        unit_rate=True)
    return per_module_optimizer(tx)

  # --------------------------------------------------------------------------------- the steps
  def _step(self, model: ModelFns, tx: ModuleOptimizer, params: nnx.State, model_state: nnx.State,
            opt_state: dict[str, Any], group: tuple[str, ...],
            loss_fn: Callable[[Any], tuple[jax.Array, Any]], *, train: bool = True,
            learning_rate: jax.Array | None = None) -> StepResult:
    """Gradients of loss_fn(model) w.r.t. the `group` modules only; one update per module, scaled
    by the step's `learning_rate` (the optimizer runs at unit rate)."""

    def objective(sub):
      full = replace(params, sub)
      (loss, aux), new_model_state = model.apply(full, model_state, loss_fn, train=train)
      return loss, (aux, new_model_state)

    sub = {m: params[m] for m in group}
    (loss, (aux, new_model_state)), grads = jax.value_and_grad(objective, has_aux=True)(sub)
    new_opt = dict(opt_state)
    updated = {}
    for m in group:
      updates, new_opt[m] = tx.module_tx.update(grads[m], opt_state[m], params[m])
      updated[m] = optax.apply_updates(params[m], scale_updates(updates, learning_rate))
    return StepResult(replace(params, updated), new_model_state, new_opt, loss, aux)

  def unimodal_step(self, modality: str, model: ModelFns, tx: ModuleOptimizer, params: nnx.State,
                    model_state: nnx.State, opt_state: dict[str, Any],
                    batch: dict[str, jax.Array],
                    learning_rate: jax.Array | None = None) -> StepResult:
    """VAVL's 'visual' / 'acoustic' step (train mode)."""
    inputs = model_inputs(batch)
    weights = _presence(batch, modality)

    def loss_fn(m):
      out = m.unimodal(inputs, modality)
      task, metrics = self.task.loss(out["logits"], batch, weights)
      recon = tasks.mse(out["recon"], out["target"], weights)
      return task + self.recon_weight * recon, {"task": task, "recon": recon, **metrics}

    return self._step(model, tx, params, model_state, opt_state,
                      self.model.paths(*STEP_GROUPS[modality]), loss_fn,
                      learning_rate=learning_rate)

  def fusion_step(self, model: ModelFns, tx: ModuleOptimizer, params: nnx.State,
                  model_state: nnx.State, opt_state: dict[str, Any],
                  batch: dict[str, jax.Array],
                  learning_rate: jax.Array | None = None) -> StepResult:
    """VAVL's 'weights' step: encoders / shared / uni-modal heads in eval mode, fusion trains."""
    inputs = model_inputs(batch)
    mask = batch.get("modality_mask")

    def loss_fn(m):
      set_mode(m, self.model.paths(*FROZEN_IN_FUSION), train=False)
      out = m(inputs, modality_mask=mask)
      loss, metrics = self.task.loss(out.logits, batch)
      return loss, (out, metrics)

    return self._step(model, tx, params, model_state, opt_state,
                      self.model.paths(*STEP_GROUPS["fusion"]), loss_fn,
                      learning_rate=learning_rate)

  def update(self, model: ModelFns, tx: ModuleOptimizer, state: TrainState,
             batch: dict[str, jax.Array], ctx: StepContext
             ) -> tuple[TrainState, ModelOutput, Metrics]:
    params, model_state, opt_state = state.params, state.model_state, state.opt_state
    metrics: Metrics = {}
    for modality in ("visual", "audio"):  # The reference's order: visual, acoustic, fusion.
      r = self.unimodal_step(modality, model, tx, params, model_state, opt_state, batch,
                             ctx.learning_rate)
      params, model_state, opt_state = r.params, r.model_state, r.opt_state
      metrics[f"loss_{modality}"] = r.aux["task"]
      metrics[f"recon_{modality}"] = r.aux["recon"]
    r = self.fusion_step(model, tx, params, model_state, opt_state, batch, ctx.learning_rate)
    output, fusion_metrics = r.aux
    metrics.update({"loss": r.loss, **fusion_metrics})
    new_state = state.replace(params=r.params, model_state=r.model_state, opt_state=r.opt_state)
    return new_state, output, metrics


def _presence(batch: dict[str, jax.Array], modality: str) -> jax.Array | None:
  """(B,) 1 where the example has the modality (batch modality_mask), None when all have it."""
  mask = batch.get("modality_mask")
  return None if mask is None else mask[:, MODALITY_INDEX[modality]]


def check_inputs(config: ml_collections.ConfigDict, section: str) -> None:
  """The model section's `inputs` must fit the dataset config: precomputed-feature builder configs
  ('features', 'features_p<k>') need inputs='features', the others inputs='raw'."""
  model = config.model.get(section)
  inputs = model.get("inputs", "features") if model is not None else "features"
  features_records = str(config.dataset.config).startswith("features")
  if features_records and inputs != "features":
    raise ConfigError(f"dataset {config.dataset.name}/{config.dataset.config} stores precomputed "
                      f"feature sequences; set config.model.{section}.inputs='features'.")
  if not features_records and inputs == "features":
    raise ConfigError(f"dataset {config.dataset.name}/{config.dataset.config} stores spectrograms "
                      f"and frames; set config.model.{section}.inputs='raw' (and "
                      f"config.model.{section}.audio_dim to its number of frequency bins), or use "
                      "a 'features' builder config.")


__all__ = ["STEP_GROUPS", "ModuleOptimizer", "VAVLMethod", "check_inputs",
           "per_module_optimizer"]
