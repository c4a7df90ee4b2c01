"""`unimodal`: one modality's encoder and head trained alone (the uni-modal baseline).

BalanceBenchmark's `unimodalTrainer` (balancemm/trainer/unimodal_trainer.py) builds a classifier
with a single encoder and trains it with cross-entropy on its own head. avjax keeps the two-modality
model and trains only the chosen modality's pathway:

  L = CE(modality_logits[m], y),   m = config.method.modality ('audio' | 'visual')

where modality_logits[m] comes from that modality's own pathway: on av_resnet a separate linear
head on the modality's pooled features (the method asks for `modality_heads='separate'`; BB's
one-encoder concat head is the same Linear(D -> C)); on VAVL / VAT its own head. The other
modality's features are zeroed by the modality mask in the training forward, and every parameter
outside the pathway (parameter groups 'encoder/<m>', 'head/<m>' and, where the model has one,
'shared') is frozen: its updates are set to zero and it holds no optimizer state, so weight decay
and momentum never move it. The frozen modality's BatchNorm statistics still follow its batches
(its encoder runs in train mode); they never reach the trained modality's prediction.

Inference (`predict`): the fused prediction is the modality's logits, so `accuracy` is the
uni-modal accuracy. A run is also a teacher for `umt` and, through `config.init_from`, the
uni-modal pre-training of `reconboost` (the frozen pathway keeps its initialisation exactly).

Config keys: modality (required: 'audio' or 'visual').
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from avjax import models
from avjax.methods import base
from avjax.methods.base import METHODS, Method, Metrics, StepContext
from avjax.models.contract import map_groups
from avjax.models.outputs import MODALITIES, ModelOutput
from avjax.registry import ConfigError
from avjax.state import ModelFns, TrainState


@dataclasses.dataclass(frozen=True)
class UnimodalSettings(base.Settings):
  """modality: the modality trained ('audio' | 'visual'; no default: BB's unimodalTrainer is run
  once per modality, its model config naming the one encoder)."""

  modality: str = ""

  def __post_init__(self):
    super().__post_init__()
    if self.modality not in MODALITIES:
      raise ConfigError(f"config.method.modality={self.modality!r}: set it to one of {MODALITIES} "
                        "(the modality the uni-modal baseline trains).")


def pathway_groups(modality: str, groups: tuple[str, ...]) -> tuple[str, ...]:
  """The parameter groups one modality's prediction depends on: its encoder, its head and the
  model's shared block if it has one (VAVL)."""
  wanted = (f"encoder/{modality}", "shared", f"head/{modality}")
  return tuple(g for g in wanted if g in groups)


def only_modality_mask(batch: dict[str, jax.Array], modality: str) -> jax.Array:
  """(B, M) mask keeping `modality` only (times the batch's own mask, if any)."""
  size = next(iter(v for k, v in batch.items() if k in MODALITIES)).shape[0]
  keep = jnp.asarray([m == modality for m in MODALITIES], jnp.float32)
  mask = jnp.broadcast_to(keep, (size, len(MODALITIES)))
  given = batch.get("modality_mask")
  return mask if given is None else mask * given.astype(jnp.float32)


@METHODS.register("unimodal")
class Unimodal(Method):
  """Cross-entropy on one modality's own logits; everything else frozen."""

  Settings = UnimodalSettings
  requires = frozenset({"modality_logits"})

  def model_overrides(self) -> dict[str, Any]:
    if "modality_heads" in models.capabilities(self.config):
      return {"modality_heads": "separate"}  # The modality's own Linear(D -> C).
    return {}

  @property
  def modality(self) -> str:
    return self.settings.modality

  def trained_groups(self) -> tuple[str, ...]:
    """The groups trained (ConfigError if the model has no head of the modality's own)."""
    names = tuple(name for name, _ in self.model.groups)
    trained = pathway_groups(self.modality, names)
    missing = [g for g in (f"encoder/{self.modality}", f"head/{self.modality}") if g not in names]
    if missing:
      raise ConfigError(f"method 'unimodal' trains one modality's encoder and head, but model "
                        f"{self.model.name!r} has no parameter group(s) {missing}; use "
                        "config.model.name='av_resnet', 'vavl' or 'vat_classifier'.")
    return trained

  def optimizer(self, steps_per_epoch: int) -> optax.GradientTransformation:
    """config.optimizer on the modality's pathway; zero updates (and no state) elsewhere."""
    trained = set(self.trained_groups())
    labels = lambda params: map_groups(params, self.model,
                                       lambda g, i, x: "train" if g in trained else "frozen")
    return optax.multi_transform({"train": super().optimizer(steps_per_epoch),
                                  "frozen": optax.set_to_zero()}, labels)

  def update(self, model: ModelFns, tx: optax.GradientTransformation, state: TrainState,
             batch: dict[str, jax.Array], ctx: StepContext
             ) -> tuple[TrainState, ModelOutput, Metrics]:
    """The default step with the other modality masked out of the forward."""
    batch = {**batch, "modality_mask": only_modality_mask(batch, self.modality)}
    return super().update(model, tx, state, batch, ctx)

  def loss(self, output: ModelOutput, batch: dict[str, jax.Array], state: Any,
           ctx: StepContext) -> tuple[jax.Array, Metrics]:
    loss, metrics = self.task.loss(output.modality_logits[self.modality], batch)
    return loss, {"loss": loss, **metrics}

  def predict(self, output: ModelOutput, state: Any) -> ModelOutput:
    """The modality's own logits are the prediction."""
    del state
    return output.replace(logits=output.modality_logits[self.modality])

  def train_metrics(self, output: ModelOutput, batch: dict[str, jax.Array]) -> Metrics:
    return self.task.step_metrics(self.predict(output, None), batch)
