"""`mmcosine`: Multi-Modal Cosine loss, Xu et al. ICASSP 2023 (GeWu-Lab/MMCosine_ICASSP23, main_CD.py).

The fusion head scores each modality by the cosine between its head input h_m and the class rows of
its own slice of the final weight, scaled by s (`config.method.scaling`):

  out_m = s * <h_m / |h_m|, w^m_c / |w^m_c|>,   out = out_a + out_v   (no bias)

The method asks the model for that head (`model_overrides() -> {'cosine_scale': s}`); the fusion then
returns cosine logits as its fused and uni-modal logits, in training and evaluation alike (the
reference evaluates with the raw linear head instead; see docs/deviations.md).

  L = CE(out, y) + lambda * NCE(h_a, h_v, y)

NCE (the paper's supplementary; `nce_loss`): with unit vectors a_i = h_a,i / |h_a,i| and
v_j = h_v,j / |h_v,j| over the B examples of the (global) batch,

  cos_ij = 1 - 0.5 |a_i - v_j|^2,   p_ij = softmax_j(cos_ij / tau)   (each audio anchor i against every
                                                                      visual j of the batch)
  P_i = {j : y_j = y_i} (always holds i),  N_i = {j : y_j != y_i}
  loss_i = (1/|P_i|) sum_{j in P_i} -log p_ij  +  (1/|N_i|) sum_{j in N_i} -log(1 - p_ij)
  NCE = (1/B) sum_i loss_i

i.e. per anchor, the positive term is the mean over its same-label pairs and the negative term the
mean over its different-label pairs; the two means are added and averaged over anchors (as the
reference's NCELoss). A row with no negatives (the whole batch one class) contributes 0 as its
negative term (the reference divides by zero there). 1 - p_ij is clamped at 1e-10 inside the log.

Config keys (config.method.*, defaults when absent): scaling (s, 10: the reference's CREMA-D default),
nce_weight (lambda, 0: the reference's default, i.e. no NCE term), nce_temperature (tau, 0.1).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from avjax.methods import base
from avjax.methods.base import METHODS, Method, Metrics, StepContext, cross_entropy
from avjax.models.contract import ModelInfo
from avjax.models.fusion import l2_normalize
from avjax.models.outputs import ModelOutput
from avjax.registry import ConfigError

LOG_CLAMP = 1e-10


@dataclasses.dataclass(frozen=True)
class MMCosineSettings(base.Settings):
  """scaling: s (10: main_CD.py's CREMA-D default); nce_weight: lambda (0: the reference's
  default, no NCE term); nce_temperature: tau (0.1: the reference's NCELoss)."""

  scaling: float = 10.0
  nce_weight: float = 0.0
  nce_temperature: float = 0.1

  def __post_init__(self):
    super().__post_init__()
    if not self.scaling > 0:
      raise ConfigError(f"config.method.scaling={self.scaling!r} must be > 0 (the reference "
                        "uses 10).")
    if not self.nce_weight >= 0 or not self.nce_temperature > 0:
      raise ConfigError(f"config.method.nce_weight={self.nce_weight!r} must be >= 0 and "
                        f"config.method.nce_temperature={self.nce_temperature!r} > 0.")


def pair_cosines(a: jax.Array, v: jax.Array) -> jax.Array:
  """cos_ij = 1 - 0.5 |a_i - v_j|^2 on L2-normalised rows. a: (B,D), v: (B,D) -> (B,B)."""
  a = l2_normalize(a.astype(jnp.float32))
  v = l2_normalize(v.astype(jnp.float32))
  sq_dist = (jnp.sum(a * a, -1)[:, None] + jnp.sum(v * v, -1)[None, :] - 2.0 * a @ v.T)
  return 1.0 - 0.5 * sq_dist


def nce_loss(a: jax.Array, v: jax.Array, labels: jax.Array, temperature: float = 0.1) -> jax.Array:
  """MMCosine's supervised audio-visual NCE (see module docstring). a, v: (B,D), labels: (B,) -> ()."""
  logits = pair_cosines(a, v) / temperature
  log_p = jax.nn.log_softmax(logits, axis=-1)
  p = jnp.exp(log_p)
  positive = (labels[:, None] == labels[None, :]).astype(jnp.float32)
  negative = 1.0 - positive
  pos_term = jnp.sum(-log_p * positive, -1) / jnp.sum(positive, -1)
  # 1 - p_ij without cancellation: for each row's largest p (the only one that can exceed 1/2) it
  # is the sum of the row's other probabilities; elsewhere 1 - p >= 1/2 is exact enough.
  is_top = jnp.arange(p.shape[-1])[None, :] == jnp.argmax(log_p, axis=-1)[:, None]
  rest = jnp.sum(jnp.where(is_top, 0.0, p), -1, keepdims=True)
  neg_log = -jnp.log(jnp.maximum(jnp.where(is_top, rest, 1.0 - p), LOG_CLAMP))
  neg_term = jnp.sum(neg_log * negative, -1) / jnp.maximum(jnp.sum(negative, -1), 1.0)
  return jnp.mean(pos_term + neg_term)


@METHODS.register("mmcosine")
class MMCosine(Method):
  """Cosine logits per modality (scale s), cross-entropy on their sum, optional NCE alignment term."""

  Settings = MMCosineSettings
  requires = frozenset({"cosine_head", "head_inputs"})

  def __init__(self, config: ml_collections.ConfigDict, model: ModelInfo | None = None):
    super().__init__(config, model)
    self.scaling = float(self.settings.scaling)
    self.nce_weight = float(self.settings.nce_weight)
    self.temperature = float(self.settings.nce_temperature)

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    super().validate(config)
    if "cosine_scale" in config.model.fusion_kwargs:
      raise ConfigError("method 'mmcosine' sets the fusion's cosine_scale itself; remove "
                        "config.model.fusion_kwargs.cosine_scale and set config.method.scaling.")

  def model_overrides(self) -> dict[str, Any]:
    return {"cosine_scale": self.scaling}

  def loss(self, output: ModelOutput, batch: dict[str, jax.Array], state: Any,
           ctx: StepContext) -> tuple[jax.Array, Metrics]:
    labels = batch["label"]
    ce = cross_entropy(output.logits, labels)
    a, v = output.head_inputs["audio"], output.head_inputs["visual"]
    if self.nce_weight > 0:
      nce = nce_loss(a, v, labels, self.temperature)
      loss = ce + self.nce_weight * nce
    else:  # Logged only; no gradient flows through it.
      nce = nce_loss(jax.lax.stop_gradient(a), jax.lax.stop_gradient(v), labels, self.temperature)
      loss = ce
    return loss, {"loss": loss, "loss_ce": ce, "loss_nce": nce}
