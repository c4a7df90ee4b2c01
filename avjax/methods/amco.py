"""`amco`: Adaptive Mask Co-optimisation, Zhou et al., ICASSP 2023, as BalanceBenchmark implements
it (balancemm/trainer/AMCo_trainer.py, models/avclassify_model.py BaseClassifier_AMCo at 4c1482f;
the authors published no code).

The model (override logit_map=True, capability 'class_mask', avjax/models/class_mask.py) scores
logits = L*(sum_m mask_m * u_m), u_m the modality's slice logits, L* a learned C x C map. Each step
(batch k of 0-indexed epoch e, inside the inclusive window [modulation_starts, modulation_ends]):

  l = k e / 10  (BB: l starts at 0 each epoch and grows by e/10 per batch)
  p = sin(pi/2 min(eps, l) / eps),  N = int(p C)
  mask = C - N ones and N zeros at random positions (one (C,) row for the whole batch)
  mask_m = mask if modality m is flagged dependent, else ones
  L = task(logits) + sum_m task(mask_m * u_m)          (co-optimisation: BB's separate backward
                                                        passes accumulate into one step)
  dependence for the next batch: share_m = (1/B) sum_i sum over m's C entries of
  softmax over all M C masked modality logits; dependent_m = share_m > sigma.
The flags start False at every epoch's first batch. Outside the window: L = task(logits), no mask.
With BB's constants (eps 0.3) the ramp saturates within three batches of every epoch after the
first, after which the dependent modality's logits are entirely zeroed (docs/deviations.md).

N is computed on the host (float64, as BB's numpy) into a table over q = k e, so the traced step
reproduces BB's integer counts exactly. The mask positions come from the step's key.

Evaluation: L*(sum_m u_m), the training definition (BB's evaluation drops L*:
`eval_logit_map=False` reproduces that with logits = sum_m u_m).

Config keys (config.method.*): sigma (0.5), eps (0.3), modulation_starts (0), modulation_ends (80),
eval_logit_map (True). Logged: loss, loss_fused, loss_audio, loss_visual, amco_ramp (p),
amco_masked_classes (N), amco_dependent_<m> (the flags used this step), amco_share_audio.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from avjax.methods import base
from avjax.methods.base import METHODS, Method, Metrics, StepContext, apply_gradients
from avjax.models.outputs import MODALITIES, ModelOutput
from avjax.registry import ConfigError
from avjax.state import ModelFns, TrainState, cast_floats, model_inputs


@dataclasses.dataclass(frozen=True)
class AMCoSettings(base.Settings):
  """BB configs/trainer_config.yaml:20-28: sigma 0.5 (dependence threshold), eps 0.3 (ramp
  length), modulation_starts / modulation_ends 0 / 80 (inclusive, 0-indexed epochs).
  eval_logit_map: evaluate with L* as in training (True) or BB's sum without it (False)."""

  sigma: float = 0.5
  eps: float = 0.3
  modulation_starts: int = 0
  modulation_ends: int = 80
  eval_logit_map: bool = True

  def __post_init__(self):
    super().__post_init__()
    if not 0 < self.sigma < 1:
      raise ConfigError(f"config.method.sigma={self.sigma!r} must be in (0, 1) (BB uses 0.5).")
    if not self.eps > 0:
      raise ConfigError(f"config.method.eps={self.eps!r} must be > 0 (BB uses 0.3).")
    if self.modulation_starts < 0 or self.modulation_ends < self.modulation_starts:
      raise ConfigError(
          f"config.method.modulation_starts={self.modulation_starts} / modulation_ends="
          f"{self.modulation_ends}: need 0 <= modulation_starts <= modulation_ends.")


def masked_counts(eps: float, num_classes: int) -> np.ndarray:
  """N for q = k e = 0, 1, ... until the ramp saturates (l = q / 10 >= eps; later q: N = C),
  in float64 as BB's numpy: int(sin(pi/2 min(eps, l) / eps) C)."""
  size = int(math.ceil(10.0 * eps)) + 1
  q = np.arange(size, dtype=np.float64)
  ramp = np.sin(np.pi / 2 * (np.minimum(eps, q / 10) / eps))
  return (ramp * num_classes).astype(np.int32)


def masked_count(q: jax.Array, eps: float, num_classes: int) -> jax.Array:
  """N at q = k e (int32 scalar): the host table's value, C once the ramp has saturated."""
  table = jnp.asarray(masked_counts(eps, num_classes))
  inside = q < table.shape[0]
  return jnp.where(inside, table[jnp.clip(q, 0, table.shape[0] - 1)], num_classes)


def ramp_value(q: jax.Array, eps: float) -> jax.Array:
  """p = sin(pi/2 min(eps, q/10) / eps) (float32; logged)."""
  l = q.astype(jnp.float32) / 10.0
  return jnp.sin(jnp.pi / 2 * jnp.minimum(eps, l) / eps)


def class_mask(rng: jax.Array, num_masked: jax.Array, num_classes: int) -> jax.Array:
  """(C,) float mask with `num_masked` zeros at uniformly random positions."""
  ranks = jnp.argsort(jax.random.permutation(rng, num_classes))
  return (ranks >= num_masked).astype(jnp.float32)


def dependence_shares(modality_logits: dict[str, jax.Array]) -> jax.Array:
  """(M,) each modality's share of the softmax over the concatenated (B, M C) logits, averaged
  over the batch (the shares sum to 1)."""
  joint = jnp.concatenate([modality_logits[m].astype(jnp.float32) for m in MODALITIES], axis=-1)
  probs = jax.nn.softmax(joint, axis=-1).reshape(joint.shape[0], len(MODALITIES), -1)
  return jnp.mean(jnp.sum(probs, axis=-1), axis=0)


@METHODS.register("amco")
class AMCo(Method):
  """Class-logit mask on the dependent modality, fused + uni-modal losses (module docstring)."""

  Settings = AMCoSettings
  requires = frozenset({"class_mask", "modality_logits"})
  diagnostics = ("amco_ramp", "amco_masked_classes", "amco_dependent_audio",
                 "amco_dependent_visual", "amco_share_audio")

  def __init__(self, config: ml_collections.ConfigDict, model: Any = None):
    super().__init__(config, model)
    self.num_classes = model.num_outputs if model is not None else 0

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    super().validate(config)
    if config.model.fusion_kwargs.get("cosine_scale") is not None:
      raise ConfigError("method 'amco' masks and maps linear class logits; remove "
                        "config.model.fusion_kwargs.cosine_scale.")

  def model_overrides(self) -> dict[str, Any]:
    return {"logit_map": True}

  def init_state(self, params: Any) -> Any:
    del params
    return {"dependent": jnp.zeros((len(MODALITIES),), jnp.int32)}

  def predict(self, output: ModelOutput, state: Any) -> ModelOutput:
    del state
    if self.settings.eval_logit_map:
      return output
    return output.replace(logits=sum(output.modality_logits[m] for m in MODALITIES))

  def update(self, model: ModelFns, tx: Any, state: TrainState, batch: dict[str, jax.Array],
             ctx: StepContext) -> tuple[TrainState, ModelOutput, Metrics]:
    s = self.settings
    c = self.num_classes
    # The batch's index in its epoch (plain epochs: AMCo keeps the shuffled plan).
    batch_index = jnp.maximum(ctx.step - ctx.epoch * ctx.steps_per_epoch, 0)
    active = (ctx.epoch >= s.modulation_starts) & (ctx.epoch <= s.modulation_ends)
    q = batch_index * ctx.epoch
    num_masked = jnp.where(active, masked_count(q, s.eps, c), 0)
    mask = class_mask(ctx.rng, num_masked, c)
    dependent = jnp.where(batch_index == 0, 0, state.method_state["dependent"])  # Epoch reset.
    rows = jnp.where(dependent[:, None] > 0, mask[None, :], 1.0)
    inputs = model_inputs(batch)
    if model.compute_dtype != "float32":
      inputs = cast_floats(inputs, model.compute_dtype)
    weight = active.astype(jnp.float32)

    def loss_fn(params):
      output, model_state = model.apply(
          params, state.model_state,
          lambda m: m(inputs, modality_mask=batch.get("modality_mask"), class_mask=rows))
      fused, _ = self.task.loss(output.logits, batch)
      own = [self.task.loss(output.modality_logits[m], batch)[0] for m in MODALITIES]
      loss = fused + weight * sum(own)
      return loss, (output, model_state, fused, own)

    (loss, (output, model_state, fused, own)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    shares = dependence_shares(jax.lax.stop_gradient(output.modality_logits))
    new_dependent = jnp.where(active, (shares > s.sigma).astype(jnp.int32), dependent)
    new_state = apply_gradients(tx, state, grads, learning_rate=ctx.learning_rate,
                                model_state=model_state,
                                method_state={"dependent": new_dependent})
    metrics = {"loss": loss, "loss_fused": fused,
               **{f"loss_{m}": own[i] for i, m in enumerate(MODALITIES)},
               "amco_ramp": jnp.where(active, ramp_value(q, s.eps), 0.0),
               "amco_masked_classes": num_masked.astype(jnp.float32),
               **{f"amco_dependent_{m}": dependent[i].astype(jnp.float32)
                  for i, m in enumerate(MODALITIES)},
               "amco_share_audio": shares[0]}
    return new_state, output, metrics


__all__ = ["AMCo", "class_mask", "dependence_shares", "masked_count", "masked_counts",
           "ramp_value"]
