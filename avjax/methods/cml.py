"""`cml`: Calibrating Multimodal Learning (Ma et al., ICML 2023).

A trustworthy classifier should not grow MORE confident when a modality is removed. With
conf(z) = max_c softmax(z)_c, z the fused logits of all modalities and z_p those with a modality
removed, CML adds a hinge on the confidence increase:

variant='intended' (default; the authors' CPM-Nets code, QingyangZhang/CML cpm/CPM_Nets.py:98-124):
  each example drops a modality drawn at random (uniformly, per example and step),
  mask_i = NOT(argmax z_p,i == y_i AND argmax z_i != y_i)          ("trick 1": no penalty when
                                                                    only the reduced view is right)
  L = CE(z) + lambda * mean_i mask_i * relu(conf(z_p,i) - conf(z_i))     (per-example hinge)
variant='balancebenchmark' (BB CML_trainer.py:170-201, two modalities): one modality, drawn once
  per epoch (BB shuffles the modality list at each epoch start), is dropped for every example;
  no mask (BB computes it and discards it); the hinge is on the BATCH SUM:
  L = (CE(z) + CE(z_p)) / 2 + lambda * relu(sum_i conf(z_p,i) - conf(z_i))
Gradients flow through both confidences in both forms.

Removing a modality: its pooled features are zeroed before the fusion head (`fuse`, capability
'encode_fuse'), so z_p is the network's prediction from the kept modality. For concat fusion this
is W_kept h_kept + b, i.e. BB's algebraic z - z_removed_slice + b/2 exactly; other fusions run their
head on the zeroed feature (BB's variant is refused there: its slices exist only for concat / sum).

Config keys (config.method.*): lam (0.1: BB trainer_config.yaml:32; the CML README's beta = 10 on
a /100 scale), variant. Logged: loss_fused, cml_calibration (the hinge term before lambda),
cml_violations (share of examples whose reduced-view confidence exceeds the full one),
cml_conf_full / cml_conf_partial (mean confidences).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from avjax.methods import base
from avjax.methods.base import (METHODS, EpochContext, EpochUpdate, Method, Metrics, StepContext,
                                apply_gradients, cross_entropy)
from avjax.models import modality_heads
from avjax.models.outputs import MODALITIES, apply_modality_mask
from avjax.registry import ConfigError
from avjax.state import ModelFns, TrainState, cast_floats, model_inputs

REMOVAL_STREAM = 0xC41  # Folded into the step key: the per-example removal draw.


@dataclasses.dataclass(frozen=True)
class CMLSettings(base.Settings):
  """lam: weight of the calibration hinge (0.1: BB's default); variant: 'intended' / BB's."""

  lam: float = 0.1
  variant: str = "intended"

  def __post_init__(self):
    super().__post_init__()
    modality_heads.check_variant(self.variant)
    if not self.lam >= 0:
      raise ConfigError(f"config.method.lam={self.lam!r} must be >= 0 (BB uses 0.1).")


def confidence(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(B, C) logits -> (B,) max softmax probability and (B,) argmax."""
  probs = jax.nn.softmax(logits.astype(jnp.float32), -1)
  return jnp.max(probs, -1), jnp.argmax(logits, -1)


def calibration_penalty(full: jax.Array, partial: jax.Array, labels: jax.Array,
                        variant: str = "intended") -> tuple[jax.Array, dict[str, jax.Array]]:
  """CML's hinge (before lambda) and per-example details. full, partial: (B, C) logits with all
  modalities / with one removed; labels: (B,)."""
  conf_full, pred_full = confidence(full)
  conf_partial, pred_partial = confidence(partial)
  increase = conf_partial - conf_full
  if variant == "balancebenchmark":
    penalty = jax.nn.relu(jnp.sum(increase))
  else:
    only_partial_right = (pred_partial == labels) & (pred_full != labels)
    penalty = jnp.mean(jnp.where(only_partial_right, 0.0, jax.nn.relu(increase)))
  return penalty, {"conf_full": conf_full, "conf_partial": conf_partial,
                   "violation": (increase > 0).astype(jnp.float32)}


def cml_loss(full: jax.Array, partial: jax.Array, labels: jax.Array, lam: float,
             variant: str = "intended") -> tuple[jax.Array, Metrics]:
  """The CML objective of the module docstring and its logged parts."""
  penalty, details = calibration_penalty(full, partial, labels, variant)
  ce = cross_entropy(full, labels)
  task = (ce + cross_entropy(partial, labels)) / 2 if variant == "balancebenchmark" else ce
  loss = task + lam * penalty
  return loss, {"loss": loss, "loss_fused": ce, "cml_calibration": penalty,
                "cml_violations": jnp.mean(details["violation"]),
                "cml_conf_full": jnp.mean(details["conf_full"]),
                "cml_conf_partial": jnp.mean(details["conf_partial"])}


def keep_masks(removed: jax.Array) -> jax.Array:
  """(B,) index of the removed modality (MODALITIES order) -> (B, M) float keep mask."""
  return 1.0 - jax.nn.one_hot(removed, len(MODALITIES), dtype=jnp.float32)


class CML(Method):
  """Cross-entropy plus CML's confidence-calibration hinge (module docstring)."""

  Settings = CMLSettings
  requires = frozenset({"encode_fuse"})
  diagnostics = ("cml_calibration", "cml_violations")

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    super().validate(config)
    if base.parse_settings(cls.Settings, config).variant == "balancebenchmark":
      modality_heads.check_fusion(config, "slices")

  def init_state(self, params: Any) -> Any:
    # BB: the modality every example of the epoch drops (set at each epoch start).
    return {"removed": jnp.zeros((), jnp.int32)}

  def on_epoch_start(self, ctx: EpochContext) -> EpochUpdate:
    update = super().on_epoch_start(ctx)
    if self.settings.variant != "balancebenchmark":
      return update
    order = np.random.default_rng([ctx.seed, ctx.epoch, REMOVAL_STREAM]).permutation(
        len(MODALITIES))
    return EpochUpdate(plan=update.plan, method_state={"removed": jnp.asarray(order[-1],
                                                                              jnp.int32)})

  def removed(self, batch_size: int, state: Any, ctx: StepContext) -> jax.Array:
    """(B,) index of the modality each example drops this step."""
    if self.settings.variant == "balancebenchmark":
      return jnp.broadcast_to(state["removed"], (batch_size,))
    key = jax.random.fold_in(ctx.rng, REMOVAL_STREAM)
    return jax.random.randint(key, (batch_size,), 0, len(MODALITIES))

  def update(self, model: ModelFns, tx: optax.GradientTransformation, state: TrainState,
             batch: dict[str, jax.Array], ctx: StepContext) -> tuple[TrainState, Any, Metrics]:
    labels = self.task.class_targets(batch)
    inputs = model_inputs(batch)
    if model.compute_dtype != "float32":
      inputs = cast_floats(inputs, model.compute_dtype)
    keep = keep_masks(self.removed(labels.shape[0], state.method_state, ctx))

    def forward(m):
      output = m(inputs, modality_mask=batch.get("modality_mask"))
      partial = m.fuse(apply_modality_mask(output.features, keep)).logits
      return output, partial

    def loss_fn(params):
      (output, partial), model_state = model.apply(params, state.model_state, forward)
      loss, metrics = cml_loss(output.logits, partial, labels, self.settings.lam,
                               self.settings.variant)
      return loss, (output, metrics, model_state)

    (_, (output, metrics, model_state)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    new_state = apply_gradients(tx, state, grads, learning_rate=ctx.learning_rate,
                                model_state=model_state)
    return new_state, output, metrics


METHODS.register("cml")(CML)
