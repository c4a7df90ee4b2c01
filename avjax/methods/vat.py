"""VAT pre-training (`vat_pretrain`), and the pieces fine-tuning (methods/vat_finetune.py) shares.

The ALBEF recipe applied to video frames and audio (../shared/reference/vat.md; the losses are in
avjax/models/vat_objectives.py). Pre-training and fine-tuning keep momentum (EMA) copies of parameters
in their method state, so they are checkpointed with the run and resume bit-exactly.

vat_pretrain (model 'vat'), one step:
  1. clamp the temperature param to [0.001, 0.5];
  2. EMA update of the momentum encoders + projections, BEFORE the forward (m = `momentum`);
  3. momentum embeddings a_m, v_m (no gradient); online tokens and embeddings a, v;
  4. VAC: contrastive loss against [momentum batch; queue] with soft targets, alpha ramped over
     epoch 0 (alpha * min(1, step / steps_per_epoch));
  5. VAM: the true pairs plus, for every audio, a video drawn from softmax(s_a2v[:, :B]) and for
     every video an audio drawn from softmax(s_v2a[:, :B]) (diagonal excluded, no gradient through
     the weights), through the fusion encoder and the 2-way head; CE with labels [1]*B + [0]*2B;
  6. loss = VAC + VAM; AdamW step; the momentum embeddings of the batch enter the FIFO queues.
  method_state: {'momentum': params of audio/visual encoders and projections, 'queue_audio',
  'queue_visual': (Q, E), 'queue_ptr': int32}. Queues start as random unit vectors (as ALBEF).

Config keys: see PretrainSettings (config.method.<key>, defaults when absent).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from avjax.methods.base import (METHODS, Method, Metrics, StepContext, apply_gradients,
                                cross_entropy, parse_settings)
from avjax.models import vat_objectives as L
from avjax.models.contract import ModelInfo, select
from avjax.models.fusion import l2_normalize
from avjax.models.outputs import ModelOutput
from avjax.optim import make_optimizer, make_schedule, unit_schedule
from avjax.registry import ConfigError
from avjax.state import ModelFns, TrainState, model_inputs


@dataclasses.dataclass(frozen=True)
class PretrainSettings:
  """vat_pretrain's settings (values: ../shared/reference/vat.md, ALBEF's recipe)."""

  momentum: float = 0.995  # EMA m.
  alpha: float = 0.4  # Distillation weight, ramped over epoch 0.
  queue_size: int = 65536  # Q (ALBEF); a multiple of the global batch size; 0: no queue.
  temperature: float = 0.07  # Initial tau; learnable, clamped to [0.001, 0.5].
  min_learning_rate: float = 1e-5  # Cosine end value (AdamW lr 1e-4 -> 1e-5).

  def __post_init__(self):
    if not 0 <= self.momentum < 1 or not 0 <= self.alpha <= 1:
      raise ConfigError(f"config.method.momentum={self.momentum!r} must be in [0, 1) and "
                        f"config.method.alpha={self.alpha!r} in [0, 1].")


def check_common(config: ml_collections.ConfigDict, name: str, report_keys: set[str]) -> None:
  """Checks shared by both VAT methods: the model's settings, the best metric."""
  from avjax.models.vat import resolve_settings  # pylint: disable=import-outside-toplevel
  resolve_settings(config)
  best = config.train.best_metric
  if best not in report_keys:
    raise ConfigError(f"config.train.best_metric={best!r} is not reported by method {name!r} "
                      f"with these settings; use one of {sorted(report_keys)}.")


def momentum_copy(tree: Any) -> Any:
  """The initial EMA copy of `tree`."""
  return jax.tree.map(jnp.copy, tree)  # Own buffers: the state is donated to the step.


# ------------------------------------------------------------------- optimizer (ALBEF's AdamW)
NO_DECAY = ("bias", "scale")  # Leaf names of the 1-D tensors timm's rule exempts from decay.


def _leaf_name(path: tuple) -> str | None:
  """The last named key of a parameter path (NNX's 'value' leaves skipped)."""
  names = [getattr(e, "key", getattr(e, "name", None)) for e in path]
  names = [n for n in names if n not in (None, "value")]
  return names[-1] if names else None


def decay_mask(params: Any) -> Any:
  """timm's rule as ALBEF uses it: no weight decay on biases and LayerNorm parameters (its 1-D
  tensors; by name here, since scanned layers stack them to 2-D)."""
  return jax.tree_util.tree_map_with_path(lambda p, x: _leaf_name(p) not in NO_DECAY, params)


def vat_schedule(config: ml_collections.ConfigDict, updates_per_epoch: int,
                 min_learning_rate: float) -> optax.Schedule:
  """The learning rate per update: AdamW's cosine ends at `min_learning_rate` (ALBEF: min_lr), with
  an optional warmup from it; other optimizers and schedules follow avjax.optim."""
  oc, epochs = config.optimizer, config.train.num_epochs
  if oc.name != "adamw" or oc.schedule != "cosine":
    return make_schedule(oc, updates_per_epoch, epochs)
  total = max(epochs * updates_per_epoch, 1)
  warmup = oc.warmup_epochs * updates_per_epoch
  return optax.warmup_cosine_decay_schedule(
      min_learning_rate if warmup else oc.learning_rate, oc.learning_rate, warmup,
      max(total, warmup + 1), end_value=min_learning_rate)


def _single(config: ml_collections.ConfigDict, steps_per_epoch: int, min_learning_rate: float,
            unit_rate: bool) -> optax.GradientTransformation:
  """One update's optimizer (vat_optimizer without gradient accumulation)."""
  oc, epochs = config.optimizer, config.train.num_epochs
  if oc.name != "adamw":
    return make_optimizer(oc, steps_per_epoch, epochs, unit_rate=unit_rate)
  schedule = unit_schedule if unit_rate else vat_schedule(config, steps_per_epoch,
                                                          min_learning_rate)
  opt = optax.adamw(schedule, b1=oc.b1, b2=oc.b2, eps=oc.eps, weight_decay=oc.weight_decay,
                    mask=decay_mask)
  if oc.grad_clip_norm:
    opt = optax.chain(optax.clip_by_global_norm(oc.grad_clip_norm), opt)
  return opt


def vat_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int,
                  min_learning_rate: float, unit_rate: bool = False
                  ) -> optax.GradientTransformation:
  """AdamW (decoupled decay, 1-D parameters excluded) with cosine decay to `min_learning_rate`;
  other optimizer names fall back to avjax.optim. Gradient accumulation as avjax.optim.
  `unit_rate`: learning rate 1 (the trainer scales the updates by `vat_schedule`'s rate)."""
  k = config.train.grad_accum_steps
  if k > 1:
    inner = _single(config, max(steps_per_epoch // k, 1), min_learning_rate, unit_rate)
    return optax.MultiSteps(inner, every_k_schedule=k)
  return _single(config, steps_per_epoch, min_learning_rate, unit_rate)


class VATSchedule(Method):
  """Base of both VAT methods: AdamW (unit rate) with VAT's cosine to `min_learning_rate` (set by
  the subclass) as the schedule."""

  min_learning_rate: float

  def optimizer(self, steps_per_epoch: int) -> optax.GradientTransformation:
    return vat_optimizer(self.config, steps_per_epoch, self.min_learning_rate, unit_rate=True)

  def schedule(self, updates_per_epoch: int) -> optax.Schedule:
    return vat_schedule(self.config, updates_per_epoch, self.min_learning_rate)


class VATPretrain(VATSchedule):
  """Contrastive alignment + matching with hard negatives + momentum distillation (see module)."""

  Settings = PretrainSettings  # Not Method's value_fn: pre-training reports no contributions.
  requires = frozenset({"embeddings", "tokens"})

  def __init__(self, config: ml_collections.ConfigDict, model: ModelInfo | None = None):
    super().__init__(config, model)
    s = self.settings
    self.momentum, self.alpha = float(s.momentum), float(s.alpha)
    self.queue_size, self.temperature = int(s.queue_size), float(s.temperature)
    self.min_learning_rate = float(s.min_learning_rate)

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    keys = {"loss", "vac_loss", "vam_loss", "vam_accuracy"}
    check_common(config, "vat_pretrain", keys)
    s = parse_settings(PretrainSettings, config)
    q, b = s.queue_size, config.train.batch_size
    if b < 2:
      raise ConfigError("vat_pretrain needs config.train.batch_size >= 2 (hard negatives are "
                        "drawn from the other examples of the batch).")
    if q < 0 or q % b:
      raise ConfigError(f"config.method.queue_size={q} must be a non-negative multiple of the "
                        f"global batch size config.train.batch_size={b} (ALBEF's FIFO writes whole "
                        "batches).")
    t = s.temperature
    if not L.TEMPERATURE_RANGE[0] <= t <= L.TEMPERATURE_RANGE[1]:
      raise ConfigError(f"config.method.temperature={t!r} must lie in {L.TEMPERATURE_RANGE}.")
    if config.input.modality_dropout:
      raise ConfigError("vat_pretrain aligns both modalities of every clip; set "
                        "config.input.modality_dropout=0.")

  def model_overrides(self) -> dict[str, Any]:
    return {"temperature": self.temperature}

  def init_state(self, params: nnx.State) -> dict[str, Any]:
    from avjax.models.vat import resolve_settings  # pylint: disable=import-outside-toplevel
    dim = resolve_settings(self.config).embed_dim
    key = jax.random.fold_in(jax.random.key(self.config.seed), 0x5A7)
    k_a, k_v = jax.random.split(key)
    unit = lambda k: l2_normalize(jax.random.normal(k, (self.queue_size, dim)))
    return {"momentum": momentum_copy(select(params, self.model.paths("momentum"))),
            "queue_audio": unit(k_a), "queue_visual": unit(k_v),
            "queue_ptr": jnp.zeros((), jnp.int32)}

  def update(self, model: ModelFns, tx: optax.GradientTransformation, state: TrainState,
             batch: dict[str, jax.Array], ctx: StepContext
             ) -> tuple[TrainState, ModelOutput, Metrics]:
    ms = state.method_state
    alpha = L.ramped_alpha(self.alpha, ctx.step, ctx.steps_per_epoch)
    params = L.clamp_temperature(state.params, self.model.paths("temperature"))
    momentum = L.ema(ms["momentum"], select(params, self.model.paths("momentum")), self.momentum)
    inputs = model_inputs(batch)
    feats_m, _ = model.apply(nnx.State({**params, **momentum}), state.model_state,
                             lambda mdl: mdl.embed(mdl.encode(inputs)))
    feats_m = jax.lax.stop_gradient(feats_m)

    def loss_fn(p):
      def run(mdl):
        tokens = mdl.encode(inputs)
        feats = mdl.embed(tokens)
        vac, sims = L.vac_loss(feats["audio"], feats["visual"], feats_m["audio"],
                               feats_m["visual"], ms["queue_audio"], ms["queue_visual"],
                               mdl.temperature(), alpha)
        b = feats["audio"].shape[0]
        neg_video, neg_audio = L.sample_hard_negatives(ctx.rng, sims["a2v"][:, :b],
                                                       sims["v2a"][:, :b])
        audio, visual, labels = L.matching_pairs(tokens["audio"], tokens["visual"], neg_video,
                                                 neg_audio)
        logits = mdl.match(audio, visual)
        return vac, logits, labels

      (vac, logits, labels), model_state = model.apply(p, state.model_state, run)
      vam = cross_entropy(logits, labels)
      hits = jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
      loss = vac + vam
      return loss, (logits, model_state, {"loss": loss, "vac_loss": vac, "vam_loss": vam,
                                          "vam_accuracy": hits})

    (_, (logits, model_state, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    queue_audio, ptr = L.enqueue(ms["queue_audio"], feats_m["audio"], ms["queue_ptr"])
    queue_visual, _ = L.enqueue(ms["queue_visual"], feats_m["visual"], ms["queue_ptr"])
    new_state = apply_gradients(
        tx, state, grads, params, learning_rate=ctx.learning_rate, model_state=model_state,
        method_state={"momentum": momentum, "queue_audio": queue_audio,
                      "queue_visual": queue_visual, "queue_ptr": ptr})
    b = batch["audio"].shape[0]
    output = ModelOutput(logits=logits[:b], modality_logits={}, features={})
    metrics.update(temperature=jax.tree.leaves(select(params, self.model.paths("temperature")))[0],
                   alpha=alpha)
    return new_state, output, metrics

  def train_metrics(self, output: ModelOutput, batch: dict[str, jax.Array]) -> Metrics:
    return {}  # No classes in pre-training; the step's metrics carry vac / vam.


METHODS.register("vat_pretrain")(VATPretrain)
