"""`mla`: Multimodal Learning with Alternating Unimodal Adaptation, Zhang et al., CVPR 2024.

The model has no fusion layer: one linear head is shared by every modality (fusion 'shared_head',
avjax/models/fusion_shared.py; MLA-R's fc_out under --gs_flag, BalanceBenchmark's SharedHead).
Each batch takes one optimizer step per modality, audio then visual (MLA-R main.py:428-470):

  step m:  L_m = task(head(E_m(x_m)))  ->  gradients of encoder m and the head only;
           the head's kernel gradient modified with the projector P (the "GS plugin");
           an optimizer step of encoder m and the head. Each sees the previous step's parameters.

Every module (each encoder, the head) has its own optimizer state, so a modality step advances
only its encoder's and the head's state (the intended behaviour; torch < 2 also stepped the idle
encoder on zero gradients, see docs/deviations.md). BatchNorm statistics of encoder m update in
step m only.

Gradient modification (MLA-R utils/utils.py:24-41; BB MLA_trainer.py:37-53), skipped on the very
first modality step of training:
  alpha_i = 0.1^(1 + i / N_b)           (i: batch index in the epoch, N_b: batches per epoch)
  r = batch mean of stop_grad(features_m) (D,);  k = P r
  P <- P - k k^T / (alpha_i + r . k);   P <- P / |P|_F          (P starts as I_D; never reset)
  head kernel gradient G (D, C) = dL/dW^T:
    gradient_rule 'project' (the paper's OWM projection):  G <- P G   (i.e. g_W <- g_W P^T)
                  'add' (BalanceBenchmark):                 G <- G + P G
                  'none' (the released original: its parameter-name check never matches, so it
                          never modifies anything):         G unchanged, P stays I
The head's bias and the encoders' gradients are never modified.
variant='balancebenchmark' uses 'add' and BB's denominator as its code computes it: the
(D, D) matrix alpha_i + k r^T, divided element-wise (torch.mm(k, r) where r k was meant).

Inference (`predict`, evaluation): inference='entropy' (the paper's dynamic fusion, per sample as
BalanceBenchmark): e_m = entropy(softmax(logits_m)) per example, lambda = softmax_m(-e_m),
logits = sum_m lambda_m logits_m. inference='fixed': audio_weight * logits_a + (1 - audio_weight)
* logits_v (MLA-R main.py:651, 0.55).

Config keys (config.method.*): variant ('original' | 'balancebenchmark'), gradient_rule (None:
the variant's; 'project' | 'add' | 'none'), inference ('entropy' | 'fixed'), audio_weight (0.55).
Logged: loss (0.55 L_a + 0.45 L_v, the original's logged loss), loss_audio, loss_visual,
mla_alpha, mla_grad_ratio_<m> (|modified head kernel gradient| / |raw| in step m),
mla_entropy_weight_audio (the batch mean of lambda_audio on the training forward).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from avjax.methods import base
from avjax.methods.base import METHODS, Method, Metrics, StepContext, scale_updates
from avjax.methods.vavl import ModuleOptimizer, per_module_optimizer
from avjax.models.contract import map_groups, replace, select
from avjax.models.outputs import MODALITIES, ModelOutput
from avjax.optim import make_optimizer
from avjax.registry import ConfigError
from avjax.state import ModelFns, TrainState

VARIANTS = ("original", "balancebenchmark")
RULES = ("project", "add", "none")
INFERENCE = ("entropy", "fixed")
HEAD_GROUP = "fusion"  # The shared head: the model's fusion group with fusion 'shared_head'.
LOGGED_AUDIO_WEIGHT = 0.55  # MLA-R main.py:472 (av_alpha 0.55).


@dataclasses.dataclass(frozen=True)
class MLASettings(base.Settings):
  """variant: 'original' (the paper / MLA-R) or 'balancebenchmark'. gradient_rule: None (the
  variant's: 'project' for the original, 'add' for BB), 'project', 'add' or 'none'. inference:
  'entropy' (the paper's dynamic fusion, MLA-R --dynamic) or 'fixed'; audio_weight: the fixed
  fusion's audio weight (0.55: MLA-R main.py:968)."""

  variant: str = "original"
  gradient_rule: str | None = None
  inference: str = "entropy"
  audio_weight: float = 0.55

  def __post_init__(self):
    super().__post_init__()
    if self.variant not in VARIANTS:
      raise ConfigError(f"config.method.variant={self.variant!r} is not one of {VARIANTS}.")
    if self.gradient_rule is not None and self.gradient_rule not in RULES:
      raise ConfigError(f"config.method.gradient_rule={self.gradient_rule!r} is not one of "
                        f"{RULES} (None: the variant's).")
    if self.inference not in INFERENCE:
      raise ConfigError(f"config.method.inference={self.inference!r} is not one of {INFERENCE}.")
    if not 0 <= self.audio_weight <= 1:
      raise ConfigError(f"config.method.audio_weight={self.audio_weight!r} must be in [0, 1].")


def projector_alpha(batch_index: jax.Array, num_batches: int) -> jax.Array:
  """alpha_i = 0.1^(1 + i / N_b): 0.1 at an epoch's first batch, towards 0.01 at its last."""
  return 0.1 ** (1.0 + batch_index.astype(jnp.float32) / num_batches)


def update_projector(p: jax.Array, r: jax.Array, alpha: jax.Array, *,
                     elementwise: bool = False) -> jax.Array:
  """One recursive-least-squares step of the (D, D) projector with the mean input r (D,), then
  Frobenius normalisation. `elementwise`: BalanceBenchmark's (D, D) denominator alpha + k r^T."""
  k = p @ r
  outer = jnp.outer(k, k)
  denom = alpha + (jnp.outer(k, r) if elementwise else jnp.dot(r, k))
  p = p - outer / denom
  return p / jnp.sqrt(jnp.sum(jnp.square(p)))


def modify_kernel_grad(grad: jax.Array, p: jax.Array, rule: str) -> jax.Array:
  """The head kernel's gradient (D, C) (= g_W^T) under `rule` with projector P (D, D)."""
  if rule == "project":
    return p @ grad
  if rule == "add":
    return grad + p @ grad
  return grad


def entropy_weights(modality_logits: dict[str, jax.Array]) -> jax.Array:
  """(B, M) per-example weights softmax_m(-entropy(softmax(logits_m))), MODALITIES order."""
  entropies = []
  for m in MODALITIES:
    logp = jax.nn.log_softmax(modality_logits[m].astype(jnp.float32), axis=-1)
    entropies.append(-jnp.sum(jnp.exp(logp) * logp, axis=-1))
  return jax.nn.softmax(-jnp.stack(entropies, axis=-1), axis=-1)


def entropy_fusion(modality_logits: dict[str, jax.Array]) -> jax.Array:
  """sum_m lambda_m logits_m with per-example entropy weights (`entropy_weights`). -> (B, C)."""
  w = entropy_weights(modality_logits)
  return sum(w[:, i:i + 1] * modality_logits[m].astype(jnp.float32)
             for i, m in enumerate(MODALITIES))


@METHODS.register("mla")
class MLA(Method):
  """Alternating uni-modal steps through one shared head (see the module docstring)."""

  Settings = MLASettings
  requires = frozenset({"modality_logits", "modality_encoders"})
  diagnostics = ("mla_alpha", "mla_grad_ratio_audio", "mla_grad_ratio_visual",
                 "mla_entropy_weight_audio", "loss_audio", "loss_visual")

  def __init__(self, config: ml_collections.ConfigDict, model: Any = None):
    super().__init__(config, model)
    s = self.settings
    self.rule = s.gradient_rule or ("add" if s.variant == "balancebenchmark" else "project")
    self.elementwise = s.variant == "balancebenchmark"

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    super().validate(config)
    if config.model.fusion != "shared_head":
      raise ConfigError("method 'mla' trains one classifier head shared by all modalities; set "
                        f"config.model.fusion='shared_head' (not {config.model.fusion!r}).")
    if config.train.grad_accum_steps != 1:
      raise ConfigError("method 'mla' takes one optimizer step per modality and batch and does "
                        "not accumulate gradients; set config.train.grad_accum_steps=1.")

  def optimizer(self, steps_per_epoch: int) -> ModuleOptimizer:
    tx = make_optimizer(self.config.optimizer, steps_per_epoch, self.config.train.num_epochs,
                        unit_rate=True)
    return per_module_optimizer(tx)

  def init_state(self, params: Any) -> Any:
    kernels = [x for x in jax.tree.leaves(select(params, self.model.paths(HEAD_GROUP)))
               if x.ndim == 2]
    dim = kernels[0].shape[0]
    return {"projector": jnp.eye(dim, dtype=jnp.float32)}

  def fuse(self, modality_logits: dict[str, jax.Array]) -> jax.Array:
    """The inference rule on per-modality logits -> (B, C)."""
    if self.settings.inference == "fixed":
      w = self.settings.audio_weight
      return w * modality_logits["audio"] + (1 - w) * modality_logits["visual"]
    return entropy_fusion(modality_logits)

  def predict(self, output: ModelOutput, state: Any) -> ModelOutput:
    del state
    return output.replace(logits=self.fuse(output.modality_logits))

  def modality_step(self, modality: str, first: jax.Array, model: ModelFns, tx: ModuleOptimizer,
                    params: Any, model_state: Any, opt_state: dict[str, Any], projector: jax.Array,
                    batch: dict[str, jax.Array], ctx: StepContext, alpha: jax.Array):
    """One uni-modal step: (params, model_state, opt_state, projector, logits, features, loss,
    gradient ratio)."""
    encoder = self.model.paths(f"encoder/{modality}")
    trained = self.model.paths(f"encoder/{modality}", HEAD_GROUP)

    def objective(sub):
      output, new_model_state = model.forward(replace(params, sub), model_state, batch)
      loss, _ = self.task.loss(output.modality_logits[modality], batch)
      return loss, (output, new_model_state)

    (loss, (output, new_model_state)), grads = jax.value_and_grad(objective, has_aux=True)(
        select(params, trained))
    features = output.features[modality]
    active = jnp.logical_not(first) & (self.rule != "none")
    r = jnp.mean(jax.lax.stop_gradient(features).astype(jnp.float32), axis=0)
    updated = update_projector(projector, r, alpha, elementwise=self.elementwise)
    projector = jnp.where(active, updated, projector)
    norms = []

    def modify(group, _, g):
      if group != HEAD_GROUP or g.ndim != 2:
        return g
      new = jnp.where(active, modify_kernel_grad(g, projector, self.rule), g)
      norms.append((jnp.linalg.norm(new), jnp.linalg.norm(g)))
      return new

    grads = map_groups(grads, self.model, modify)
    ratio = norms[0][0] / jnp.maximum(norms[0][1], 1e-30)
    new_opt, new_params = dict(opt_state), {}
    for p in trained:
      updates, new_opt[p] = tx.module_tx.update(grads[p], opt_state[p], params[p])
      new_params[p] = optax.apply_updates(params[p], scale_updates(updates, ctx.learning_rate))
    stats = {p: new_model_state[p] for p in encoder if p in new_model_state.raw_mapping}
    return (replace(params, new_params), replace(model_state, stats), new_opt, projector,
            output.modality_logits[modality], features, loss, ratio)

  def update(self, model: ModelFns, tx: ModuleOptimizer, state: TrainState,
             batch: dict[str, jax.Array], ctx: StepContext
             ) -> tuple[TrainState, ModelOutput, Metrics]:
    params, model_state, opt_state = state.params, state.model_state, state.opt_state
    projector = state.method_state["projector"]
    batch_index = jnp.clip(ctx.step - ctx.epoch * ctx.steps_per_epoch, 0, ctx.steps_per_epoch - 1)
    alpha = projector_alpha(batch_index, ctx.steps_per_epoch)
    logits, features, metrics = {}, {}, {"mla_alpha": alpha}
    for i, m in enumerate(MODALITIES):
      first = (ctx.step == 0) & (i == 0)  # MLA-R skips the very first modality step.
      (params, model_state, opt_state, projector, logits[m], features[m], loss,
       ratio) = self.modality_step(m, first, model, tx, params, model_state, opt_state,
                                   projector, batch, ctx, alpha)
      metrics[f"loss_{m}"] = loss
      metrics[f"mla_grad_ratio_{m}"] = ratio
    metrics["loss"] = (LOGGED_AUDIO_WEIGHT * metrics["loss_audio"]
                       + (1 - LOGGED_AUDIO_WEIGHT) * metrics["loss_visual"])
    metrics["mla_entropy_weight_audio"] = jnp.mean(entropy_weights(logits)[:, 0])
    output = ModelOutput(logits=self.fuse(logits), modality_logits=logits, features=features,
                         head_inputs=features)
    new_state = state.replace(params=params, model_state=model_state, opt_state=opt_state,
                              method_state={"projector": projector})
    return new_state, output, metrics


__all__ = ["MLA", "entropy_fusion", "entropy_weights", "modify_kernel_grad", "projector_alpha",
           "update_projector"]
