"""`lfm`: Learning the modality gap dynamically (Yang et al., NeurIPS 2024; njustkmg/NeurIPS24-LFM).

Two uni-modal heads (separate, as the original's cls_a / cls_v) whose logits are averaged; the
supervised term is traded off against an unsupervised alignment of the two modalities' class
distributions by time-varying weights (alpha_cls, alpha_align), alpha_cls + alpha_align = 1:

  L = 2 (alpha_cls CE((z_a + z_v) / 2, y) + alpha_align A(p_a, p_v))      (Crema_epoch.py:56-77)
  A = 1/2 [KL(m || p_a) + KL(m || p_v)],  m = (p_a + p_v) / 2,  p = softmax(z)  (:38-45)

A as coded puts the mixture first (it is not the Jensen-Shannon divergence, 1/2 [KL(p_a || m) +
KL(p_v || m)]); `alignment='js'` uses the true JS. Prediction: (z_a + z_v) / 2 (:113-114).

Schedules of alpha, set at each epoch start (0-indexed epoch e):
  'learnable' (default; Crema_epoch_learnable.py:55-97): alpha starts at (0.05, 0.95), lr_alpha at
    1e-4 (:246-250). Before each epoch, on the same 8 held-out training examples: g_cls = grad
    L_cls, hvp = H(alpha_cls L_cls + alpha_align A) g_cls (reverse-over-reverse), s = the mean of
    hvp over the audio encoder's input convolution kernel (the original's first parameter tensor;
    here the 4-D kernel of group 'encoder/audio' whose input channels are the audio channels; the
    element mean does not depend on the kernel layout); lr_alpha halves when e % 20 == 0, e > 0;
    alpha_align <- clip(alpha_align - lr_alpha s, 0.05, 0.95), alpha_cls = 1 - alpha_align.
    The original holds 16 random training examples out of training and uses the first 8; avjax holds
    out a seeded fold of 16 (`heldout_fold`), excluded from every epoch's plan, and uses its first
    8, in eval mode (the original is in train mode at e = 0 only; BB uses 8 TEST examples in train
    mode).
  'fitted' (Crema_epoch.py:47-53): alpha_cls(e) the original's degree-5 polynomial fit of learnable
    trajectories, alpha_align = 1 - alpha_cls; all training data is trained on.
  'heuristic' (the original's deleted Crema_batch.py @ 62da84a:68-71): alpha_align(e) =
    clip(exp(-0.3 e), 0.05, 0.95), alpha_cls = 1 - alpha_align, applied to the loss above.

variant='balancebenchmark' (BB LFM_trainer.py): fused logits z of the fusion head for CE and
prediction, A on its slices (z_a + z_v = z), alpha starting at (0.95, 0.05) (reversed); the rest as
the chosen schedule. Config keys (config.method.*): schedule, variant, alignment ('mixture': as
coded / 'js'), lr_alpha (1e-4). Logged: loss_cls, lfm_align, lfm_alpha_cls, lfm_alpha_align,
lfm_lr_alpha, lfm_hvp (the last s).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from avjax.data.pipeline import EpochPlan, shuffled_plan
from avjax.methods import base
from avjax.methods.base import (METHODS, EpochContext, EpochUpdate, Method, Metrics, StepContext,
                                heldout_fold)
from avjax.models import modality_heads
from avjax.models.contract import ModelInfo, map_groups
from avjax.models.outputs import ModelOutput
from avjax.registry import ConfigError
from avjax.state import model_inputs

SCHEDULES = ("learnable", "fitted", "heuristic")
ALIGNMENTS = ("mixture", "js")
# alpha_cls(e) of Crema_epoch.py:47-53, constant term first.
FITTED = (0.204623704, 3.35472727e-3, 1.22989557e-4, -2.92947416e-6, 2.23835486e-8,
          -5.39717505e-11)
HELD_OUT, ALPHA_BATCH = 16, 8  # Crema_epoch_learnable.py:216-233 / :59-62.
ALPHA_BOUNDS = (0.05, 0.95)
HALVING_EPOCHS = 20  # :90-91.


@dataclasses.dataclass(frozen=True)
class LFMSettings(base.Settings):
  """schedule: 'learnable' / 'fitted' / 'heuristic'; variant: 'intended' / BB's; alignment:
  'mixture' (as coded) / 'js'; lr_alpha: the learnable schedule's step (1e-4: :246)."""

  schedule: str = "learnable"
  variant: str = "intended"
  alignment: str = "mixture"
  lr_alpha: float = 1e-4

  def __post_init__(self):
    super().__post_init__()
    modality_heads.check_variant(self.variant)
    if self.schedule not in SCHEDULES or self.alignment not in ALIGNMENTS:
      raise ConfigError(f"config.method.schedule={self.schedule!r} must be one of {SCHEDULES} and "
                        f"config.method.alignment={self.alignment!r} one of {ALIGNMENTS}.")
    if not self.lr_alpha >= 0:
      raise ConfigError(f"config.method.lr_alpha={self.lr_alpha!r} must be >= 0.")


def alignment(logits_a: jax.Array, logits_v: jax.Array, kind: str = "mixture") -> jax.Array:
  """(B,) A of the module docstring ('mixture') or the Jensen-Shannon divergence ('js')."""
  log_p = jax.nn.log_softmax(logits_a.astype(jnp.float32), -1)
  log_q = jax.nn.log_softmax(logits_v.astype(jnp.float32), -1)
  p, q = jnp.exp(log_p), jnp.exp(log_q)
  m = (p + q) / 2
  log_m = jnp.log(m)
  if kind == "js":
    return 0.5 * (jnp.sum(p * (log_p - log_m), -1) + jnp.sum(q * (log_q - log_m), -1))
  return 0.5 * (jnp.sum(m * (log_m - log_p), -1) + jnp.sum(m * (log_m - log_q), -1))


def class_logits(output: ModelOutput, variant: str) -> jax.Array:
  """The logits LFM classifies with: the heads' average, or BB's fused logits."""
  if variant == "balancebenchmark":
    return output.logits
  return (output.modality_logits["audio"] + output.modality_logits["visual"]) / 2


def lfm_terms(output: ModelOutput, labels: jax.Array, variant: str, kind: str
              ) -> tuple[jax.Array, jax.Array]:
  """(B,) per-example CE of the classification logits and (B,) alignment A."""
  ce = optax.softmax_cross_entropy_with_integer_labels(
      class_logits(output, variant).astype(jnp.float32), labels)
  return ce, alignment(output.modality_logits["audio"], output.modality_logits["visual"], kind)


def lfm_loss(output: ModelOutput, labels: jax.Array, alpha: jax.Array, variant: str = "intended",
             kind: str = "mixture") -> tuple[jax.Array, Metrics]:
  """2 (alpha_cls CE + alpha_align A), batch means; alpha = (alpha_cls, alpha_align)."""
  ce, align = (jnp.mean(t) for t in lfm_terms(output, labels, variant, kind))
  loss = 2 * (alpha[0] * ce + alpha[1] * align)
  return loss, {"loss": loss, "loss_cls": ce, "lfm_align": align}


def fitted_alpha(epoch: int) -> tuple[float, float]:
  """(alpha_cls, alpha_align) of the original's polynomial at 0-indexed `epoch`."""
  cls = sum(c * float(epoch) ** i for i, c in enumerate(FITTED))
  return cls, 1.0 - cls


def heuristic_alpha(epoch: int) -> tuple[float, float]:
  align = min(max(math.exp(-0.3 * epoch), ALPHA_BOUNDS[0]), ALPHA_BOUNDS[1])
  return 1.0 - align, align


def learnable_step(alpha_align: float, lr_alpha: float, hvp_mean: float, epoch: int
                   ) -> tuple[float, float, float]:
  """One epoch-start update: (alpha_cls, alpha_align, lr_alpha) from the HVP mean `hvp_mean`."""
  if epoch % HALVING_EPOCHS == 0 and epoch != 0:
    lr_alpha = lr_alpha / 2
  align = min(max(alpha_align - lr_alpha * hvp_mean, ALPHA_BOUNDS[0]), ALPHA_BOUNDS[1])
  return 1.0 - align, align, lr_alpha


def hvp_of(loss_fn, params: Any, tangent: Any) -> Any:
  """H(loss_fn) at params times tangent: grad of <grad loss_fn, tangent> with the tangent held
  constant, as the original (reverse-over-reverse: the model's custom-gradient max-pool has no
  forward-mode rule)."""
  tangent = jax.lax.stop_gradient(tangent)
  inner = lambda p: sum(jnp.vdot(g, t) for g, t in zip(jax.tree.leaves(jax.grad(loss_fn)(p)),
                                                       jax.tree.leaves(tangent)))
  return jax.grad(inner)(params)


@dataclasses.dataclass(frozen=True)
class HVPPass:
  """The epoch-start pass of the learnable schedule over the alpha batch (one batch, hashable):
  returns the means of H_cls g_cls and H_align g_cls over the audio input kernel, per example
  (the same value in every row); alpha combines them on the host (the HVP is linear in alpha)."""

  model_info: ModelInfo
  audio_channels: int
  variant: str
  kind: str
  label_key: str = "label"

  def __call__(self, model: nnx.Module, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    graph, params, rest = nnx.split(model, nnx.Param, ...)
    labels = batch[self.label_key]
    labels = (jnp.argmax(labels, -1) if labels.ndim == 2 else labels).astype(jnp.int32)
    valid = batch["valid"].astype(jnp.float32)
    count = jnp.maximum(jnp.sum(valid), 1.0)

    def term(index):
      def fn(p):
        out = nnx.merge(graph, p, rest)(model_inputs(batch))
        return jnp.sum(lfm_terms(out, labels, self.variant, self.kind)[index] * valid) / count
      return fn

    g_cls = jax.grad(term(0))(params)
    stem = lambda tree: input_kernel(tree, self.model_info, self.audio_channels)
    rows = valid.shape[0]
    return {f"hvp_{name}": jnp.full((rows,), jnp.mean(stem(hvp_of(term(i), params, g_cls))))
            for i, name in enumerate(("cls", "align"))}


def input_kernel(tree: Any, info: ModelInfo, audio_channels: int) -> jax.Array:
  """The 4-D leaf of group 'encoder/audio' that reads the input (in-channels = audio channels)."""
  found = []
  def pick(group, index, leaf):
    if group == "encoder/audio" and leaf.ndim == 4 and leaf.shape[-2] == audio_channels:
      found.append(leaf)
    return leaf
  map_groups(tree, info, pick)
  if len(found) != 1:
    raise ConfigError(f"method 'lfm' (schedule 'learnable') needs exactly one audio input "
                      f"convolution kernel, found {len(found)}; use schedule='fitted'.")
  return found[0]


class LFM(Method):
  """Averaged uni-modal heads; CE traded off against modality alignment by a schedule of alpha."""

  Settings = LFMSettings
  requires = frozenset({"modality_logits", "modality_heads", "modality_encoders"})
  diagnostics = ("lfm_alpha_cls", "lfm_alpha_align", "lfm_align")

  @property
  def heads(self) -> str:
    return modality_heads.resolve(self.settings.variant, None)

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    super().validate(config)
    s = base.parse_settings(cls.Settings, config)
    modality_heads.check_fusion(config, modality_heads.resolve(s.variant, None))
    eval_batch = config.train.eval_batch_size or config.train.batch_size
    if s.schedule == "learnable" and eval_batch < ALPHA_BATCH:
      raise ConfigError(f"method 'lfm' (schedule 'learnable') reads its {ALPHA_BATCH}-example "
                        f"alpha batch in one evaluation batch; set config.train.eval_batch_size >= "
                        f"{ALPHA_BATCH}.")

  def model_overrides(self) -> dict[str, Any]:
    return {"modality_heads": self.heads}

  def initial_alpha(self) -> tuple[float, float]:
    if self.settings.schedule == "fitted":
      return fitted_alpha(0)
    if self.settings.schedule == "heuristic":
      return heuristic_alpha(0)
    return (0.95, 0.05) if self.settings.variant == "balancebenchmark" else (0.05, 0.95)

  def init_state(self, params: Any) -> Any:
    if self.settings.schedule == "learnable":  # Fails here (before compiling) if it is missing.
      input_kernel(params, self.model, dict(self.model.input_channels)["audio"])
    return {"alpha": jnp.asarray(self.initial_alpha(), jnp.float32),
            "lr_alpha": jnp.asarray(self.settings.lr_alpha, jnp.float32),
            "hvp": jnp.zeros((), jnp.float32)}

  def on_epoch_start(self, ctx: EpochContext) -> EpochUpdate:
    e, schedule = ctx.epoch, self.settings.schedule
    if schedule != "learnable":
      alpha = fitted_alpha(e) if schedule == "fitted" else heuristic_alpha(e)
      state = {"alpha": jnp.asarray(alpha, jnp.float32), "lr_alpha": jnp.asarray(
          self.settings.lr_alpha, jnp.float32), "hvp": jnp.zeros((), jnp.float32)}
      return EpochUpdate(plan=shuffled_plan(ctx.num_examples, ctx.seed, e), method_state=state)
    fit, held = heldout_fold(ctx.seed, ctx.num_examples, HELD_OUT / ctx.num_examples)
    plan = EpochPlan(fit[np.random.default_rng([ctx.seed, e]).permutation(len(fit))])
    previous = jax.device_get(ctx.state.method_state)
    alpha = np.asarray(previous["alpha"], np.float64)
    audio_channels = dict(self.model.input_channels)["audio"]
    out = ctx.run(HVPPass(self.model, audio_channels, self.settings.variant,
                          self.settings.alignment, self.config.task.labels), "train",
                  held[:ALPHA_BATCH])
    s = float(alpha[0] * out["hvp_cls"][0] + alpha[1] * out["hvp_align"][0])
    cls, align, lr = learnable_step(float(alpha[1]), float(previous["lr_alpha"]), s, e)
    return EpochUpdate(plan=plan, method_state={
        "alpha": jnp.asarray([cls, align], jnp.float32), "lr_alpha": jnp.asarray(lr, jnp.float32),
        "hvp": jnp.asarray(s, jnp.float32)})

  def loss(self, output: ModelOutput, batch: dict[str, jax.Array], state: Any,
           ctx: StepContext) -> tuple[jax.Array, Metrics]:
    alpha = state["alpha"]
    loss, metrics = lfm_loss(output, self.task.class_targets(batch), alpha,
                             self.settings.variant, self.settings.alignment)
    return loss, {**metrics, "lfm_alpha_cls": alpha[0], "lfm_alpha_align": alpha[1],
                  "lfm_lr_alpha": state["lr_alpha"], "lfm_hvp": state["hvp"]}

  def predict(self, output: ModelOutput, state: Any) -> ModelOutput:
    return output.replace(logits=class_logits(output, self.settings.variant))

  def train_metrics(self, output: ModelOutput, batch: dict[str, jax.Array]) -> Metrics:
    return super().train_metrics(self.predict(output, None), batch)


METHODS.register("lfm")(LFM)
