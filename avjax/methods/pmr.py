"""`pmr`: Prototypical Modal Rebalance, Fan et al. CVPR 2023 (fanyunfeng-bit/Modal-Imbalance-PMR
@ 3615e48, main_Prototype_grad.py).

Per-modality class prototypes P_m (C, D) are the class means of the pooled encoder features h_m
(the fusion's inputs), computed at the start of every epoch by an eval-mode pass over the first
max(1, floor(n_batches / 10)) batches of a shuffled order of the training split (`ctx.run`):

  epoch 0 and 1: P = the pass's means (the original's initial pass, then its first post-epoch
                 update, which skips the EMA);
  epoch k >= 2:  P = (1 - m) means + m P_previous      (variant 'balancebenchmark': from k >= 1)

A class absent from the pass keeps its previous prototype (zeros before the first; the original
divides 0 by 0). Each step, with Euclidean distances d_m[i, c] = |h_m,i - P_m[c]| and sim = -d:

  rho = sum_i softmax(sim_a)_i[y_i] / sum_i softmax(sim_v)_i[y_i]          (batch sums)
  L   = CE(logits, y) + alpha k_a CE(sim_a, y) + alpha k_v CE(sim_v, y)
  binary (released code): k_v = 1[rho > 1], k_a = 1[rho < 1] (rho = 1: neither);
  continuous (BB commit 01458a1, perhaps the paper's equation, UNVERIFIED): k_v = clip(rho - 1,
  0, 1), k_a = clip(1 / rho - 1, 0, 1)

inside the inclusive window modulation_starts <= epoch <= modulation_ends (0-indexed), plain CE
outside. The prototypes are constants (no gradient); the square root's gradient is taken as 0 at
a zero distance (the original's is NaN there).

PER, the prototype entropy regulariser the paper describes and the released code never had
(issues #4, #7, #9), is an option (entropy_weight mu > 0, NOT in the authors' code; its form follows
BB commit 01458a1): for epochs modulation_starts .. modulation_starts + entropy_epochs,
L -= mu (k_v H_a + k_a H_v), H_m = sum_i entropy(softmax(sim_m,i)) (batch sum): the leading
modality's prototype posteriors are pushed towards uniform, which slows it.

Config keys (config.method.*): alpha, momentum, modulation_starts, modulation_ends,
prototype_fraction, coefficients, entropy_weight, entropy_epochs, variant.
Logged: pmr_ratio (rho), pmr_coeff_<m> (alpha k_m applied), pmr_loss_proto_<m> (CE(sim_m)),
pmr_entropy_<m> (H_m / B), loss_ce.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from avjax.methods import base
from avjax.methods.base import (METHODS, EpochContext, EpochUpdate, Method, Metrics, StepContext,
                                cross_entropy)
from avjax.models.contract import ModelInfo
from avjax.models.outputs import MODALITIES, ModelOutput
from avjax.registry import ConfigError
from avjax.state import model_inputs

VARIANTS = ("original", "balancebenchmark")
COEFFICIENTS = ("binary", "continuous")


@dataclasses.dataclass(frozen=True)
class PMRSettings(base.Settings):
  """alpha: prototype CE weight (1.0: main_Prototype_grad.py:49; bash.sh runs CREMA-D concat at 2).
  momentum: m, the old prototypes' share in the EMA (0.2: :39; bash.sh mostly 0).
  modulation_starts / modulation_ends: inclusive 0-indexed epoch window (0 / 100: :47-48).
  prototype_fraction: share of the epoch's batches the prototype pass reads (0.1: :429-430).
  coefficients: 'binary' (the released code) or 'continuous' (BB 01458a1).
  entropy_weight: PER's mu (0: off, the released code; BB 01458a1 used 0.01), for entropy_epochs
  (10: BB 01458a1's norm_epoch) epochs from modulation_starts. NOT in the authors' code.
  variant: 'original' or 'balancebenchmark' (the EMA from the second epoch start on)."""

  alpha: float = 1.0
  momentum: float = 0.2
  modulation_starts: int = 0
  modulation_ends: int = 100
  prototype_fraction: float = 0.1
  coefficients: str = "binary"
  entropy_weight: float = 0.0
  entropy_epochs: int = 10
  variant: str = "original"

  def __post_init__(self):
    super().__post_init__()
    if self.variant not in VARIANTS:
      raise ConfigError(f"config.method.variant={self.variant!r} must be one of {VARIANTS}.")
    if self.coefficients not in COEFFICIENTS:
      raise ConfigError(f"config.method.coefficients={self.coefficients!r} must be one of "
                        f"{COEFFICIENTS}.")
    if not self.alpha >= 0 or not self.entropy_weight >= 0 or self.entropy_epochs < 0:
      raise ConfigError(f"config.method.alpha={self.alpha!r}, entropy_weight="
                        f"{self.entropy_weight!r} and entropy_epochs={self.entropy_epochs!r} "
                        "must be >= 0.")
    if not 0 <= self.momentum <= 1:
      raise ConfigError(f"config.method.momentum={self.momentum!r} must lie in [0, 1].")
    if not 0 < self.prototype_fraction <= 1:
      raise ConfigError(f"config.method.prototype_fraction={self.prototype_fraction!r} must lie "
                        "in (0, 1].")
    if self.modulation_starts < 0 or self.modulation_ends < self.modulation_starts:
      raise ConfigError(
          f"config.method.modulation_starts={self.modulation_starts} / modulation_ends="
          f"{self.modulation_ends}: the inclusive window of 0-indexed epochs needs "
          "0 <= modulation_starts <= modulation_ends.")


def euclidean_distances(features: jax.Array, prototypes: jax.Array) -> jax.Array:
  """|h_i - P_c| from differences (B, D), (C, D) -> (B, C); zero gradient at a zero distance."""
  diff = features[:, None, :].astype(jnp.float32) - prototypes[None].astype(jnp.float32)
  squared = jnp.sum(diff * diff, axis=-1)
  positive = squared > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


def prototype_score(similarity: jax.Array, labels: jax.Array) -> jax.Array:
  """sum_i softmax(sim)_i[y_i] (no gradient). (B, C), (B,) -> ()."""
  probs = jax.nn.softmax(jax.lax.stop_gradient(similarity), axis=-1)
  return jnp.sum(jnp.take_along_axis(probs, labels[:, None].astype(jnp.int32), axis=-1))


def modality_weights(ratio: jax.Array, coefficients: str = "binary") -> dict[str, jax.Array]:
  """k_a, k_v from rho = score_a / score_v: which modality's prototype CE is added (see module)."""
  if coefficients == "binary":
    return {"audio": (ratio < 1).astype(jnp.float32), "visual": (ratio > 1).astype(jnp.float32)}
  return {"audio": jnp.clip(1.0 / ratio - 1.0, 0.0, 1.0),
          "visual": jnp.clip(ratio - 1.0, 0.0, 1.0)}


def prototype_entropy(similarity: jax.Array) -> jax.Array:
  """sum_i entropy(softmax(sim_i)) over the batch. (B, C) -> ()."""
  log_p = jax.nn.log_softmax(similarity, axis=-1)
  return -jnp.sum(jnp.exp(log_p) * log_p)


def class_means(features: np.ndarray, labels: np.ndarray, previous: np.ndarray) -> np.ndarray:
  """Per-class means (C, D) of features (N, D); a class with no example keeps `previous[c]`."""
  out = previous.copy()
  for c in range(previous.shape[0]):
    chosen = labels == c
    if np.any(chosen):
      out[c] = features[chosen].mean(0)
  return out


def blend(means: np.ndarray, previous: np.ndarray, epoch: int, momentum: float,
          variant: str = "original") -> np.ndarray:
  """The prototypes epoch `epoch` trains with: raw means while epoch < 2 (original) or < 1 (BB),
  else (1 - m) means + m previous."""
  first_ema = 2 if variant == "original" else 1
  if epoch < first_ema:
    return means
  return (1.0 - momentum) * means + momentum * previous


def pooled_features(model, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Per-example pooled features of every modality and the label (the prototype pass)."""
  features = model(model_inputs(batch)).features
  return {**{m: features[m] for m in MODALITIES}, "label": batch["label"]}


class PMR(Method):
  """PMR: cross-entropy plus the trailing modality's prototype cross-entropy (module)."""

  Settings = PMRSettings
  requires = frozenset({"modality_encoders"})
  diagnostics = ("pmr_ratio", "pmr_coeff_audio", "pmr_coeff_visual", "pmr_loss_proto_audio",
                 "pmr_loss_proto_visual")

  def __init__(self, config: ml_collections.ConfigDict, model: ModelInfo | None = None):
    super().__init__(config, model)
    if self.settings.entropy_weight > 0:
      self.diagnostics = self.diagnostics + ("pmr_entropy_audio", "pmr_entropy_visual")

  def init_state(self, params):
    del params
    shape = (self.model.num_outputs, self.model.feature_dim)
    return {"prototypes": {m: jnp.zeros(shape, jnp.float32) for m in MODALITIES}}

  def prototype_examples(self, ctx: EpochContext) -> np.ndarray:
    """The first max(1, floor(n_batches * fraction)) batches of a shuffled order of the training
    split, seeded by (seed, epoch) apart from the epoch's training order. Sorted indices."""
    batch = self.config.train.batch_size
    num_batches = -(-ctx.num_examples // batch)  # The original's loader keeps the last batch.
    count = min(max(int(num_batches * self.settings.prototype_fraction), 1) * batch,
                ctx.num_examples)
    order = np.random.default_rng([ctx.seed, ctx.epoch, 0x504D52]).permutation(ctx.num_examples)
    return np.sort(order[:count])

  def on_epoch_start(self, ctx: EpochContext) -> EpochUpdate:
    plan = super().on_epoch_start(ctx).plan
    out = ctx.run(pooled_features, "train", self.prototype_examples(ctx))
    previous = jax.device_get(ctx.state.method_state["prototypes"])
    prototypes = {}
    for m in MODALITIES:
      old = np.asarray(previous[m], np.float32)
      means = class_means(np.asarray(out[m], np.float32), np.asarray(out["label"]), old)
      prototypes[m] = jnp.asarray(blend(means, old, ctx.epoch, self.settings.momentum,
                                        self.settings.variant), jnp.float32)
    return EpochUpdate(plan=plan, method_state={"prototypes": prototypes})

  def loss(self, output: ModelOutput, batch: dict[str, jax.Array], state: Any,
           ctx: StepContext) -> tuple[jax.Array, Metrics]:
    s, labels = self.settings, batch["label"]
    ce, metrics = self.task.loss(output.logits, batch)
    sims = {m: -euclidean_distances(output.features[m], state["prototypes"][m])
            for m in MODALITIES}
    ratio = prototype_score(sims["audio"], labels) / prototype_score(sims["visual"], labels)
    active = (ctx.epoch >= s.modulation_starts) & (ctx.epoch <= s.modulation_ends)
    weights = {m: jnp.where(active, k, 0.0)
               for m, k in modality_weights(ratio, s.coefficients).items()}
    proto = {m: cross_entropy(sims[m], labels) for m in MODALITIES}
    loss = ce + s.alpha * sum(weights[m] * proto[m] for m in MODALITIES)
    metrics = {**metrics, "loss_ce": ce, "pmr_ratio": ratio}
    if s.entropy_weight > 0:
      entropy = {m: prototype_entropy(sims[m]) for m in MODALITIES}
      regularised = active & (ctx.epoch <= s.modulation_starts + s.entropy_epochs)
      per = weights["visual"] * entropy["audio"] + weights["audio"] * entropy["visual"]
      loss = loss - jnp.where(regularised, s.entropy_weight * per, 0.0)
      metrics.update({f"pmr_entropy_{m}": entropy[m] / labels.shape[0] for m in MODALITIES})
    for m in MODALITIES:
      metrics.update({f"pmr_coeff_{m}": s.alpha * weights[m], f"pmr_loss_proto_{m}": proto[m]})
    return loss, {**metrics, "loss": loss}


METHODS.register("pmr")(PMR)
