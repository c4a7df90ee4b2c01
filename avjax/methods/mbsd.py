"""`mbsd`: modality self-distillation, as BalanceBenchmark cites MBSD (Liu et al., WSDM 2023).

The paper (an e-commerce vision-language model) transfers knowledge from the dominant modality to
the weaker one; it has no public code. BalanceBenchmark's trainer (balancemm/trainer/
MBSD_trainer.py:95-231, 2 modalities) is the only audio-visual form. Per example i, with label y,
p_m = softmax(z_m) the uni-modal probabilities, strong / weak the modality with the higher / lower
true-class probability p_m[y]:

  w_i  = p_strong[y] - p_weak[y]   if either modality's argmax is y, else 0
  RS_i = mean_c (z_audio,c - z_visual,c)^2                         (logit matching)
  L    = CE(z) + CE(z_audio) + CE(z_visual) + mean_i w_i RS_i + mean_i w_i D_i

variant='intended' (default): D_i = KL(sg(p_strong) || p_weak) over the C classes, computed from
  log-probabilities, and w_i is a stop-gradient sample weight (the evident intent of BB's code).
variant='balancebenchmark': BB's code as written: D_i = p_weak[y] (log p_weak[y] - p_strong[y])
  (torch's kl_div given a probability where it expects a log-probability, on the true-class
  scalars only; it can be negative), and gradients flow through w, p_strong[y] and p_weak[y].

Uni-modal logits: separate heads for 'intended', slices of the fusion head for BB's variant
(`config.method.modality_heads` overrides; avjax.models.modality_heads). BB's modulation window
(epochs 0-80 of 30) never closes and is not offered.

Logged: loss_fused / loss_audio / loss_visual (the three CEs), mbsd_weight (mean w),
mbsd_distill (mean w D), mbsd_match (mean w RS).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from avjax.methods import base
from avjax.methods.base import METHODS, Method, Metrics, StepContext, cross_entropy
from avjax.models import modality_heads
from avjax.models.outputs import ModelOutput


@dataclasses.dataclass(frozen=True)
class MBSDSettings(base.Settings):
  """variant: 'intended' (KL on log-probabilities, detached weights) or 'balancebenchmark';
  modality_heads: 'separate' / 'slices' (None: the variant's, see avjax.models.modality_heads)."""

  variant: str = "intended"
  modality_heads: str | None = None

  def __post_init__(self):
    super().__post_init__()
    modality_heads.check_variant(self.variant)
    modality_heads.resolve(self.variant, self.modality_heads)


def true_class(probs: jax.Array, labels: jax.Array) -> jax.Array:
  """probs (B, C), labels (B,) -> (B,) the probability of each example's label."""
  return jnp.take_along_axis(probs, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]


def mbsd_terms(logits_audio: jax.Array, logits_visual: jax.Array, labels: jax.Array,
               variant: str = "intended") -> dict[str, jax.Array]:
  """Per-example MBSD terms. logits_*: (B, C), labels: (B,).

  Returns {'weight', 'distill', 'match'}: (B,) w_i, D_i and RS_i of the module docstring (the
  weight already stopped for 'intended')."""
  za, zv = logits_audio.astype(jnp.float32), logits_visual.astype(jnp.float32)
  log_pa, log_pv = jax.nn.log_softmax(za, -1), jax.nn.log_softmax(zv, -1)
  pa_y, pv_y = true_class(jnp.exp(log_pa), labels), true_class(jnp.exp(log_pv), labels)
  correct = (jnp.argmax(za, -1) == labels) | (jnp.argmax(zv, -1) == labels)
  weight = jnp.where(correct, jnp.abs(pa_y - pv_y), 0.0)
  match = jnp.mean(jnp.square(za - zv), -1)
  if variant == "balancebenchmark":
    strong, weak = jnp.maximum(pa_y, pv_y), jnp.minimum(pa_y, pv_y)
    distill = weak * (jnp.log(weak) - strong)
  else:
    audio_strong = (pa_y >= pv_y)[:, None]
    log_strong = jax.lax.stop_gradient(jnp.where(audio_strong, log_pa, log_pv))
    log_weak = jnp.where(audio_strong, log_pv, log_pa)
    distill = jnp.sum(jnp.exp(log_strong) * (log_strong - log_weak), -1)
    weight = jax.lax.stop_gradient(weight)
  return {"weight": weight, "distill": distill, "match": match}


def mbsd_loss(logits: jax.Array, modality_logits: dict[str, jax.Array], labels: jax.Array,
              variant: str = "intended") -> tuple[jax.Array, Metrics]:
  """The MBSD objective (module docstring) and its parts. logits (B, C), labels (B,)."""
  za, zv = modality_logits["audio"], modality_logits["visual"]
  terms = mbsd_terms(za, zv, labels, variant)
  ces = {"loss_fused": cross_entropy(logits, labels), "loss_audio": cross_entropy(za, labels),
         "loss_visual": cross_entropy(zv, labels)}
  distill = jnp.mean(terms["weight"] * terms["distill"])
  match = jnp.mean(terms["weight"] * terms["match"])
  loss = sum(ces.values()) + match + distill
  return loss, {"loss": loss, **ces, "mbsd_weight": jnp.mean(terms["weight"]),
                "mbsd_distill": distill, "mbsd_match": match}


class MBSD(Method):
  """CE on fused and uni-modal logits plus weighted logit matching and self-distillation."""

  Settings = MBSDSettings
  requires = frozenset({"modality_logits", "modality_heads"})
  diagnostics = ("mbsd_weight", "mbsd_distill", "mbsd_match")

  @property
  def heads(self) -> str:
    return modality_heads.resolve(self.settings.variant, self.settings.modality_heads)

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    super().validate(config)
    s = base.parse_settings(cls.Settings, config)
    modality_heads.check_fusion(config, modality_heads.resolve(s.variant, s.modality_heads))

  def model_overrides(self) -> dict[str, Any]:
    return {"modality_heads": self.heads}

  def loss(self, output: ModelOutput, batch: dict[str, jax.Array], state: Any,
           ctx: StepContext) -> tuple[jax.Array, Metrics]:
    labels = self.task.class_targets(batch)
    return mbsd_loss(output.logits, output.modality_logits, labels, self.settings.variant)


METHODS.register("mbsd")(MBSD)
