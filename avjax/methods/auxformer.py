"""`auxformer`: AuxFormer's loss and modality dropout (ilucasgoncalves/AuxFormer, train.py).

Loss: (L(out) + L(out_a) + L(out_v)) / 3 over the main network and the two auxiliary heads, L the
task's loss (avjax/tasks.py: CE on the class targets, or sum_k (1 - CCC_k)); prediction =
(out + out_a + out_v) / 3 (the model's `logits`).

Modality dropout, once per batch (the whole batch loses the modality): r ~ U(0, 1) from the step
key; r < drop_audio zeroes the audio input, drop_audio <= r < drop_audio + drop_visual the visual
input (the model scales that modality's projected sequence by 0). Training only: avjax evaluates the
dev split deterministically (the reference also drops on dev); the `ablation` evaluator (in
configs/auxformer_cremad.py) reports the missing-modality cases separately: `_only_audio` = the
prediction with the visual input removed, `_only_visual` = with the audio input removed, while
`_audio` / `_visual` are the auxiliary heads (the model's per-modality logits).

Config keys (config.method.*, defaults when absent; the task is config.task): drop_audio (0.2),
drop_visual (0.2).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from avjax.methods import base
from avjax.methods.base import METHODS, Method, Metrics, StepContext
from avjax.methods.vavl import check_inputs
from avjax.models.contract import ModelInfo
from avjax.models.outputs import ModelOutput
from avjax.registry import ConfigError
from avjax.state import ModelFns, TrainState


@dataclasses.dataclass(frozen=True)
class AuxFormerSettings(base.Settings):
  """drop_audio / drop_visual: per-batch modality dropout probabilities (train.py: 0.2 each)."""

  drop_audio: float = 0.2
  drop_visual: float = 0.2

  def __post_init__(self):
    super().__post_init__()
    pa, pv = self.drop_audio, self.drop_visual
    if not (pa >= 0 and pv >= 0 and pa + pv <= 1):
      raise ConfigError(f"config.method.drop_audio={pa!r} / drop_visual={pv!r} must be >= 0 and "
                        "sum to at most 1 (one draw per batch picks at most one modality).")


def batch_modality_drop(rng: jax.Array, batch_size: int, drop_audio: float,
                        drop_visual: float) -> jax.Array:
  """(B, 2) mask, the same for the whole batch: audio zeroed with probability drop_audio, else
  visual with probability drop_visual (one uniform draw, as the reference)."""
  r = jax.random.uniform(rng, ())
  keep_audio = jnp.where(r < drop_audio, 0.0, 1.0)
  keep_visual = jnp.where((r >= drop_audio) & (r < drop_audio + drop_visual), 0.0, 1.0)
  return jnp.broadcast_to(jnp.stack([keep_audio, keep_visual]), (batch_size, 2))


@METHODS.register("auxformer")
class AuxFormerMethod(Method):
  """Mean of the main and auxiliary task losses; per-batch modality dropout."""

  Settings = AuxFormerSettings
  requires = frozenset({"joint_logits", "modality_logits"})
  tasks = frozenset({"classification", "regression"})

  def __init__(self, config: ml_collections.ConfigDict, model: ModelInfo | None = None):
    super().__init__(config, model)
    self.drop_audio = float(self.settings.drop_audio)
    self.drop_visual = float(self.settings.drop_visual)

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    super().validate(config)
    check_inputs(config, "auxformer")

  def update(self, model: ModelFns, tx: optax.GradientTransformation, state: TrainState,
             batch: dict[str, jax.Array], ctx: StepContext
             ) -> tuple[TrainState, ModelOutput, Metrics]:
    b = batch["label"].shape[0]
    drop = batch_modality_drop(jax.random.fold_in(ctx.rng, 1), b, self.drop_audio,
                               self.drop_visual)
    mask = batch["modality_mask"] * drop if "modality_mask" in batch else drop
    new_state, output, metrics = super().update(model, tx, state, {**batch, "modality_mask": mask},
                                                ctx)
    metrics["dropped_audio"] = 1.0 - drop[0, 0]
    metrics["dropped_visual"] = 1.0 - drop[0, 1]
    return new_state, output, metrics

  def loss(self, output: ModelOutput, batch: dict[str, jax.Array], state: Any,
           ctx: StepContext) -> tuple[jax.Array, Metrics]:
    main, _ = self.task.loss(output.joint_logits, batch)
    aux_a, _ = self.task.loss(output.modality_logits["audio"], batch)
    aux_v, _ = self.task.loss(output.modality_logits["visual"], batch)
    loss = (main + aux_a + aux_v) / 3.0
    return loss, {"loss": loss, "loss_main": main, "loss_aux_audio": aux_a,
                  "loss_aux_visual": aux_v}
