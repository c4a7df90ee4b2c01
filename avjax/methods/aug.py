"""`aug`: sustained boosting with adaptive classifier assignment (Jiang, Huang, Yang, NeurIPS 2025).

Model `av_resnet_aug` (capability 'residual_classifiers'): per modality a base classifier and K
pre-allocated residual classifiers sharing one last layer F. Method state `active` (2,) counts the
residual classifiers in use per modality (AUG appends them during training; here slot j of
modality m is in use iff j < active[m]). With n = active[m] and r_j the slots' logits:

  o_m = b_m + sum_{j<n} r_j,  prev_m = o_m - r_{n-1},  newest = r_{n-1}
  n = 0:  L_m = CE(o_m, y)
  n > 0:  L_m = CE(o_m, y) + CE(prev_m, y) + CE(newest, y - rw * y * softmax(sg(prev_m)))

(soft-target CE; rw = `residual_weight`, the code's 0.5; AUG-R = njustkmg/NeurIPS25-AUG @
841d079, train_CREMAD.py:33-105). Each batch takes one optimizer step per modality, audio first;
a step updates that modality's encoder, base classifier, ACTIVE residual slots and the shared F
(the released code never gives the residual classifiers to its optimizer; `train_new_classifiers`
= False reproduces that). Slots not in use receive no update at all (their optimizer state, one
per slot, stays as initialised: no weight decay, no momentum), so a slot starts training from
its initialisation with a fresh optimizer state when it is activated.

Adaptive classifier assignment, after epoch e when e == 0 or (e + 1) % assign_every == 0 (applied
at the next epoch's start), from the epoch's training forwards:
  'paper' (default): s_m = mean_i y_i^T sum_j p_m,j,i over the modality's classifiers in use
    (base and active residuals, each its own softmax); Delta = s_a - sigma s_v;
    Delta > tau: a new classifier for visual; Delta < -tau: for audio.
  'code' (AUG-R :96,205-228): S_m = sum_i softmax(o_m)_i[y_i]; rho = S_a / S_v;
    rho > lam + 0.01: visual; rho < lam - 0.01: audio.
Prediction: beta o_a + (1 - beta) o_v on logits (AUG-R --merge_alpha 0.4).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from avjax.methods import base
from avjax.methods.base import METHODS, EpochContext, EpochUpdate, Method, Metrics, StepContext
from avjax.models.contract import ModelInfo, replace
from avjax.models.outputs import MODALITIES, ModelOutput
from avjax.optim import make_optimizer
from avjax.registry import ConfigError
from avjax.state import ModelFns, TrainState, model_inputs

CONFIDENCES = ("paper", "code")


@dataclasses.dataclass(frozen=True)
class AUGSettings(base.Settings):
  """confidence: 'paper' (s_a - sigma s_v vs tau) or 'code' (S_a / S_v vs lam +- 0.01).
  sigma, tau: the paper's (1.0, 0.01). lam: AUG-R --lam (1.0). assign_every: t_N (None: AUG-R's
  epochs / 10 when epochs > 10, else 1; the paper: 20 CREMA-D, 10 KS). residual_weight: AUG-R's
  0.5 (hard-coded, :57,70). beta: AUG-R --merge_alpha 0.4. max_residuals: slots per modality
  (None: the number of assignments the schedule makes). train_new_classifiers: True (the paper);
  False: the release (residual classifiers stay at their initialisation)."""

  confidence: str = "paper"
  sigma: float = 1.0
  tau: float = 0.01
  lam: float = 1.0
  assign_every: int | None = None
  residual_weight: float = 0.5
  beta: float = 0.4
  max_residuals: int | None = None
  train_new_classifiers: bool = True

  def __post_init__(self):
    super().__post_init__()
    if self.confidence not in CONFIDENCES:
      raise ConfigError(f"config.method.confidence={self.confidence!r} must be one of "
                        f"{CONFIDENCES}.")
    if self.assign_every is not None and self.assign_every < 1:
      raise ConfigError("config.method.assign_every must be >= 1 (or None).")
    if self.max_residuals is not None and self.max_residuals < 1:
      raise ConfigError("config.method.max_residuals must be >= 1 (or None).")
    if not 0 <= self.beta <= 1:
      raise ConfigError(f"config.method.beta={self.beta!r} must be in [0, 1].")


def assignment_epochs(num_epochs: int, every: int) -> list[int]:
  """The 0-indexed epochs after which AUG assigns a classifier: 0 and every e with
  (e + 1) % every == 0, except the last epoch (its classifier would never train)."""
  return [e for e in range(num_epochs - 1) if e == 0 or (e + 1) % every == 0]


def compose(base_logits: jax.Array, residual: jax.Array, n: jax.Array
            ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(o, prev, newest) from base (B, C), residual slots (B, K, C) and the count n in use."""
  k = jnp.arange(residual.shape[1])
  in_use = (k < n).astype(residual.dtype)[None, :, None]
  before = (k < n - 1).astype(residual.dtype)[None, :, None]
  o = base_logits + jnp.sum(residual * in_use, axis=1)
  prev = base_logits + jnp.sum(residual * before, axis=1)
  newest = jnp.take(residual, jnp.maximum(n - 1, 0), axis=1)
  return o, prev, newest


def soft_ce(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """mean_i -sum_c t_ic log softmax(logits)_ic."""
  return jnp.mean(-jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1))


def aug_loss(base_logits: jax.Array, residual: jax.Array, n: jax.Array, labels: jax.Array,
             residual_weight: float) -> tuple[jax.Array, jax.Array]:
  """(L_m, o_m) for one modality (see the module docstring)."""
  o, prev, newest = compose(base_logits, residual, n)
  y = jax.nn.one_hot(labels, o.shape[-1], dtype=o.dtype)
  p = jax.nn.softmax(jax.lax.stop_gradient(prev), axis=-1)
  boost = soft_ce(prev, y) + soft_ce(newest, y - residual_weight * y * p)
  return soft_ce(o, y) + jnp.where(n > 0, boost, 0.0), o


def confidences(base_logits: jax.Array, residual: jax.Array, n: jax.Array, labels: jax.Array
                ) -> tuple[jax.Array, jax.Array]:
  """Batch sums (code's S: softmax of the summed logits at y; paper's: sum over the classifiers
  in use of each one's softmax at y)."""
  o, _, _ = compose(base_logits, residual, n)
  at_y = lambda l: jnp.take_along_axis(jax.nn.softmax(l, -1), labels[:, None], -1)[:, 0]
  each = jax.nn.softmax(residual, -1)  # (B, K, C)
  in_use = (jnp.arange(residual.shape[1]) < n).astype(residual.dtype)
  per_slot = jnp.take_along_axis(each, labels[:, None, None], -1)[..., 0]  # (B, K)
  paper = at_y(base_logits) + jnp.sum(per_slot * in_use[None], axis=1)
  return jnp.sum(at_y(o)), jnp.sum(paper)


def assign(code_sums: np.ndarray, paper_means: np.ndarray, settings: AUGSettings) -> int | None:
  """Index in MODALITIES of the modality that gets the next classifier (None: neither)."""
  if settings.confidence == "code":
    ratio = code_sums[0] / code_sums[1]
    if ratio > settings.lam + 0.01:
      return 1
    return 0 if ratio < settings.lam - 0.01 else None
  delta = paper_means[0] - settings.sigma * paper_means[1]
  if delta > settings.tau:
    return 1
  return 0 if delta < -settings.tau else None


def fresh_sums(active: jax.Array) -> dict[str, jax.Array]:
  """The method state at an epoch's start: the counts in use and zero confidence sums (separate
  buffers: the train step donates every leaf)."""
  return {"active": active, "code_sums": jnp.zeros((2,), jnp.float32),
          "paper_sums": jnp.zeros((2,), jnp.float32), "count": jnp.zeros((), jnp.float32)}


class SlotOptimizer(NamedTuple):
  """A per-module optimizer (one state per top-level module); residual modules get one state per
  slot (vmapped over the slot axis) so a slot's updates and state can be held while unused."""

  init: Callable[[Any], Any]
  module_tx: optax.GradientTransformation
  slotted: tuple[str, ...]


class AUG(Method):
  """One optimizer step per modality per batch; residual classifiers assigned between epochs."""

  Settings = AUGSettings
  requires = frozenset({"residual_classifiers"})
  diagnostics = ("aug_active_audio", "aug_active_visual", "aug_confidence_audio",
                 "aug_confidence_visual")

  def __init__(self, config: ml_collections.ConfigDict, model: ModelInfo | None = None):
    super().__init__(config, model)
    epochs = int(config.train.num_epochs)
    every = self.settings.assign_every
    self.every = int(every) if every is not None else (epochs // 10 if epochs > 10 else 1)
    slots = self.settings.max_residuals
    self.slots = int(slots) if slots is not None else max(
        len(assignment_epochs(epochs, self.every)), 1)

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    super().validate(config)
    if config.model.fusion != "sum":
      raise ConfigError("method 'aug' predicts with a weighted sum of the modalities' classifier "
                        "ensembles (no fusion layer); set config.model.fusion='sum'.")
    if config.train.grad_accum_steps != 1:
      raise ConfigError("method 'aug' takes one optimizer step per modality per batch and does "
                        "not accumulate gradients; set config.train.grad_accum_steps=1.")

  def model_overrides(self) -> dict[str, Any]:
    return {"residual_slots": self.slots}

  def optimizer(self, steps_per_epoch: int) -> SlotOptimizer:
    tx = make_optimizer(self.config.optimizer, steps_per_epoch, self.config.train.num_epochs,
                        unit_rate=True)
    slotted = self.model.paths(*(f"residual/{m}" for m in MODALITIES))

    def init(params):
      return {p: (jax.vmap(tx.init)(params[p]) if p in slotted else tx.init(params[p]))
              for p in params}

    return SlotOptimizer(init=init, module_tx=tx, slotted=slotted)

  def init_state(self, params):
    del params
    return fresh_sums(jnp.zeros((2,), jnp.int32))

  def predict(self, output: ModelOutput, state: Any) -> ModelOutput:
    o = {m: compose(output.modality_logits[m], output.residual_logits[m], state["active"][i])[0]
         for i, m in enumerate(MODALITIES)}
    beta = self.settings.beta
    return output.replace(logits=beta * o["audio"] + (1 - beta) * o["visual"], modality_logits=o)

  def modality_step(self, i: int, model: ModelFns, tx: SlotOptimizer, params, model_state,
                    opt_state, batch, state: Any, learning_rate):
    """One optimizer step on modality MODALITIES[i]'s loss: (params, model_state, opt_state,
    loss, o_m, features, (code sum, paper sum))."""
    m, n = MODALITIES[i], state["active"][i]
    paths = self.model.paths(f"encoder/{m}", f"head/{m}", f"residual/{m}", "shared")
    inputs, mask = model_inputs(batch), batch.get("modality_mask")

    def objective(sub):
      def run(mdl):
        z = mdl.features(inputs, m)
        if mask is not None:
          z = z * mask[:, i:i + 1].astype(z.dtype)
        return z, mdl.classify(z, m)

      (z, (b, r)), new_model_state = model.apply(replace(params, sub), model_state, run)
      loss, o = aug_loss(b, r, n, batch["label"], self.settings.residual_weight)
      return loss, (o, z, confidences(jax.lax.stop_gradient(b), jax.lax.stop_gradient(r), n,
                                      batch["label"]), new_model_state)

    sub = {p: params[p] for p in paths}
    (loss, (o, z, conf, model_state)), grads = jax.value_and_grad(objective, has_aux=True)(sub)
    live = (jnp.arange(self.slots) < n) & self.settings.train_new_classifiers
    new_opt, updated = dict(opt_state), {}
    for p in paths:
      if p in tx.slotted:
        upd, state_p = jax.vmap(tx.module_tx.update)(grads[p], opt_state[p], params[p])
        keep = lambda new, old: jnp.where(live.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
        new_p = optax.apply_updates(params[p], base.scale_updates(upd, learning_rate))
        updated[p] = jax.tree.map(keep, new_p, params[p])
        new_opt[p] = jax.tree.map(keep, state_p, opt_state[p])
      else:
        upd, new_opt[p] = tx.module_tx.update(grads[p], opt_state[p], params[p])
        updated[p] = optax.apply_updates(params[p], base.scale_updates(upd, learning_rate))
    return replace(params, updated), model_state, new_opt, loss, o, z, conf

  def update(self, model: ModelFns, tx: SlotOptimizer, state: TrainState,
             batch: dict[str, jax.Array], ctx: StepContext
             ) -> tuple[TrainState, ModelOutput, Metrics]:
    params, model_state, opt_state = state.params, state.model_state, state.opt_state
    ms = state.method_state
    metrics, logits, features, code, paper = {}, {}, {}, [], []
    for i, m in enumerate(MODALITIES):  # Audio, then visual (AUG-R's order).
      params, model_state, opt_state, loss, logits[m], features[m], conf = self.modality_step(
          i, model, tx, params, model_state, opt_state, batch, ms, ctx.learning_rate)
      metrics[f"loss_{m}"] = loss
      code.append(conf[0])
      paper.append(conf[1])
    count = ms["count"] + batch["label"].shape[0]
    new_ms = {"active": ms["active"], "code_sums": ms["code_sums"] + jnp.stack(code),
              "paper_sums": ms["paper_sums"] + jnp.stack(paper), "count": count}
    beta = self.settings.beta
    output = ModelOutput(logits=beta * logits["audio"] + (1 - beta) * logits["visual"],
                         modality_logits=logits, features=features)
    metrics.update({"loss": metrics["loss_audio"] + metrics["loss_visual"],
                    "aug_active_audio": ms["active"][0].astype(jnp.float32),
                    "aug_active_visual": ms["active"][1].astype(jnp.float32),
                    "aug_confidence_audio": new_ms["paper_sums"][0] / count,
                    "aug_confidence_visual": new_ms["paper_sums"][1] / count})
    new_state = state.replace(params=params, model_state=model_state, opt_state=opt_state,
                              method_state=new_ms)
    return new_state, output, metrics

  def on_epoch_start(self, ctx: EpochContext) -> EpochUpdate:
    """Assigns a classifier from the finished epoch's confidences (at its assignment epochs) and
    starts the new epoch's sums from zero."""
    plan = super().on_epoch_start(ctx).plan
    ms = jax.device_get(ctx.state.method_state)
    active = np.asarray(ms["active"]).copy()
    finished = ctx.epoch - 1
    if finished >= 0 and (finished == 0 or (finished + 1) % self.every == 0):
      count = max(float(ms["count"]), 1.0)
      winner = assign(np.asarray(ms["code_sums"]), np.asarray(ms["paper_sums"]) / count,
                      self.settings)
      if winner is not None and active[winner] < self.slots:
        active[winner] += 1
    return EpochUpdate(plan=plan, method_state=fresh_sums(jnp.asarray(active, jnp.int32)))


METHODS.register("aug")(AUG)
