"""`reconboost`: ReconBoost (Hua et al., ICML 2024; huacong/ReconBoost train.py @ 14ab57a).

Modalities are trained alternately, one per stage, boosting-style, on a head H shared by all
modalities (owned by the method: Linear(D, 256), ReLU, Linear(256, C) as models/dynamic_net.py, or
BB's Linear(D, C)); the ensemble is F(x) = rho * sum_m H(h_m), rho a learnable boost rate. With
epoch e, E1 = epochs_per_stage, E2 = correct_epochs, stage t = e // (E1 + E2):

  phase 1 (the first E1 epochs of a stage), active modality a = (audio, visual)[t % 2]:
    q = softmax(sg(rho * sum_{m != a} H(h_m))),  p = softmax(H(h_a))
    L = mean_i (w1 - w2 q_{i,y_i}) / C * (-log p_{i,y_i})          (train.py:337-340)
    trains a's encoder and H (not rho); the other encoder runs in train mode (BatchNorm statistics
    update) without being trained. The "GA" term the code adds for t > 0 is an MSE between two
    detached softmaxes, i.e. no gradient (train.py:344-351): avjax omits it.
  phase 2 ("global rectification", the next E2 epochs): L = CE(F(x), y), training every encoder,
    H and rho, at `correction_lr_scale` times the rate (e_lr / m_lr).

Optimizers: as the original, `config.optimizer` (SGD, momentum 0.9, weight decay 5e-4) built
anew for every phase (its state reset at the phase's first epoch) over the parameters that phase
trains; the others receive no update. variant='balancebenchmark' (BB ReconBoost_trainer.py): one
optimizer (AdamW) never reset, updating every parameter each step (torch 1.12 keeps zero
gradients, so moments and decoupled decay move the inactive ones too), E1 = E2 = 1 (a BB epoch is
both modalities' phase 1 + phase 2: four avjax epochs), rho from 0.01, a linear H.

Inference (`predict`): logits F = rho * sum_m H(h_m), modality logits H(h_m).

Uni-modal pre-training (the original's --use_pretrain) is a chain of runs through
config.init_from (see configs/reconboost_cremad.py): a `unimodal` audio run, a `unimodal` visual
run initialised from it (it trains only the visual pathway, so it carries both encoders), then
this method initialised from that; H and rho start fresh, as the original replaces each fc.

Config keys: variant ('original' | 'balancebenchmark'), weight1 (w1), weight2 (w2),
epochs_per_stage (E1), correct_epochs (E2), boost_rate_init, head_hidden (0: linear H),
correction_lr_scale; None picks the variant's value.
Logged: boost_rate, stage, phase (1 / 2), loss_boost (phase 1), loss_correct (phase 2).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from avjax.methods import base
from avjax.methods.base import METHODS, EpochContext, EpochUpdate, Method, Metrics, StepContext
from avjax.models.contract import replace, select
from avjax.models.outputs import MODALITIES, ModelOutput
from avjax.optim import make_optimizer
from avjax.registry import ConfigError
from avjax.state import ModelFns, TrainState

VARIANTS = ("original", "balancebenchmark")
# The variant's value of each setting left at None (RB train.py; BB avclassify_model.py:742,
# fusion_arch.py:15-21, ReconBoost_trainer.py:77-87).
DEFAULTS = {"original": dict(epochs_per_stage=4, correct_epochs=4, boost_rate_init=1.0,
                             head_hidden=256),
            "balancebenchmark": dict(epochs_per_stage=1, correct_epochs=1, boost_rate_init=0.01,
                                     head_hidden=0)}


@dataclasses.dataclass(frozen=True)
class ReconBoostSettings(base.Settings):
  """variant: 'original' (RB train.py) or 'balancebenchmark'. weight1 / weight2: w1, w2 (5, 1:
  README's CREMA-D). epochs_per_stage / correct_epochs: E1 / E2. boost_rate_init: rho's start.
  head_hidden: H's hidden width (0: Linear(D, C)). correction_lr_scale: e_lr / m_lr (1)."""

  variant: str = "original"
  weight1: float = 5.0
  weight2: float = 1.0
  epochs_per_stage: int | None = None
  correct_epochs: int | None = None
  boost_rate_init: float | None = None
  head_hidden: int | None = None
  correction_lr_scale: float = 1.0

  def __post_init__(self):
    super().__post_init__()
    if self.variant not in VARIANTS:
      raise ConfigError(f"config.method.variant={self.variant!r} is not one of {VARIANTS}.")
    for key in ("epochs_per_stage", "correct_epochs"):
      value = getattr(self, key)
      if value is not None and value < 1:
        raise ConfigError(f"config.method.{key}={value!r} must be >= 1 (None: the variant's).")
    if self.head_hidden is not None and self.head_hidden < 0:
      raise ConfigError(f"config.method.head_hidden={self.head_hidden!r} must be >= 0.")

  def value(self, key: str) -> Any:
    """The setting, or the variant's default where it is None."""
    given = getattr(self, key)
    return DEFAULTS[self.variant][key] if given is None else given


def stage_position(epoch: Any, epochs_per_stage: int, correct_epochs: int) -> tuple[Any, ...]:
  """(stage, phase 1?, active modality index, first epoch of a phase?) of a 0-indexed epoch
  (traced or host ints)."""
  period = epochs_per_stage + correct_epochs
  stage, within = epoch // period, epoch % period
  return stage, within < epochs_per_stage, stage % 2, (within == 0) | (within == epochs_per_stage)


def boost_loss(active_logits: jax.Array, others_logits: jax.Array, labels: jax.Array,
               weight1: float, weight2: float) -> jax.Array:
  """Phase 1's loss: mean_i (w1 - w2 q_y) / C * (-log p_y), p = softmax(active_logits),
  q = softmax(sg(others_logits)) (the others' ensemble, boost rate included). (B, C) logits."""
  num_classes = active_logits.shape[-1]
  q_y = jnp.take_along_axis(jax.nn.softmax(jax.lax.stop_gradient(others_logits), -1),
                            labels[:, None], -1)[:, 0]
  nll = optax.softmax_cross_entropy_with_integer_labels(active_logits, labels)
  return jnp.mean((weight1 - weight2 * q_y) / num_classes * nll)


def init_head(key: jax.Array, dim: int, hidden: int, num_classes: int) -> dict[str, Any]:
  """H's parameters with PyTorch's Linear init (kernel and bias U(-1/sqrt(in), 1/sqrt(in)))."""
  sizes = [dim, hidden, num_classes] if hidden else [dim, num_classes]
  layers = {}
  for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
    k_w, k_b = jax.random.split(jax.random.fold_in(key, i))
    bound = 1.0 / n_in ** 0.5
    layers[f"layer{i}"] = {"kernel": jax.random.uniform(k_w, (n_in, n_out), jnp.float32, -bound,
                                                        bound),
                           "bias": jax.random.uniform(k_b, (n_out,), jnp.float32, -bound, bound)}
  return layers


def apply_head(head: dict[str, Any], x: jax.Array) -> jax.Array:
  """H(x): (B, D) -> (B, C); ReLU between layers."""
  x = x.astype(jnp.float32)
  for i in range(len(head)):
    if i:
      x = jax.nn.relu(x)
    x = x @ head[f"layer{i}"]["kernel"] + head[f"layer{i}"]["bias"]
  return x


@METHODS.register("reconboost")
class ReconBoost(Method):
  """Alternating boosting stages and global rectification on a shared head (see module)."""

  Settings = ReconBoostSettings
  requires = frozenset({"modality_encoders"})  # Pooled encoder features (feature_dim wide).
  diagnostics = ("boost_rate", "stage", "phase")

  def __init__(self, config: ml_collections.ConfigDict, model: Any = None):
    super().__init__(config, model)
    s = self.settings
    self.e1, self.e2 = s.value("epochs_per_stage"), s.value("correct_epochs")
    self.inner_tx = make_optimizer(config.optimizer, 1, config.train.num_epochs, unit_rate=True)

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    super().validate(config)
    if config.train.grad_accum_steps != 1:
      raise ConfigError("method 'reconboost' steps its own optimizers once per batch; set "
                        "config.train.grad_accum_steps=1.")

  def optimizer(self, steps_per_epoch: int) -> optax.GradientTransformation:
    """Nothing of the model is optimised through TrainState.opt_state: the phase optimizers'
    state lives in the method state (reset at phase starts)."""
    del steps_per_epoch
    return optax.set_to_zero()

  def _encoders(self, params: nnx.State) -> dict[str, Any]:
    return select(params, self.model.paths(*(f"encoder/{m}" for m in MODALITIES)))

  def init_state(self, params: nnx.State) -> Any:
    key = jax.random.fold_in(jax.random.key(self.config.seed), 0x5EB0)
    head = init_head(key, self.model.feature_dim, self.settings.value("head_hidden"),
                     self.model.num_outputs)
    rho = jnp.asarray(self.settings.value("boost_rate_init"), jnp.float32)
    trainables = {"encoders": self._encoders(params), "head": head, "rho": rho}
    return {"head": head, "rho": rho, "opt": self.inner_tx.init(trainables)}

  def on_epoch_start(self, ctx: EpochContext) -> EpochUpdate:
    """A fresh phase optimizer at each phase's first epoch (variant 'original')."""
    update = super().on_epoch_start(ctx)
    _, _, _, first = stage_position(ctx.epoch, self.e1, self.e2)
    if self.settings.variant != "original" or not first or ctx.epoch == 0:
      return update
    state = ctx.state.method_state
    trainables = {"encoders": self._encoders(ctx.state.params), "head": state["head"],
                  "rho": state["rho"]}
    return EpochUpdate(plan=update.plan, method_state={**state,
                                                       "opt": self.inner_tx.init(trainables)})

  def ensemble(self, head: dict[str, Any], rho: jax.Array, features: dict[str, jax.Array]
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(F = rho * sum_m H(h_m) (B, C), {m: H(h_m)})."""
    per_modality = {m: apply_head(head, features[m]) for m in MODALITIES}
    return rho * sum(per_modality.values()), per_modality

  def predict(self, output: ModelOutput, state: Any) -> ModelOutput:
    logits, per_modality = self.ensemble(state["head"], state["rho"], output.features)
    return output.replace(logits=logits, modality_logits=per_modality)

  def update(self, model: ModelFns, tx: optax.GradientTransformation, state: TrainState,
             batch: dict[str, jax.Array], ctx: StepContext
             ) -> tuple[TrainState, ModelOutput, Metrics]:
    stage, phase1, active, _ = stage_position(ctx.epoch, self.e1, self.e2)
    labels = self.task.class_targets(batch)
    s = self.settings

    def loss_fn(trainables):
      params = replace(state.params, trainables["encoders"])
      output, model_state = model.forward(params, state.model_state, batch)
      fused, per_modality = self.ensemble(trainables["head"], trainables["rho"], output.features)
      a, v = per_modality["audio"], per_modality["visual"]
      rho = trainables["rho"]
      boost = boost_loss(jnp.where(active == 0, a, v), rho * jnp.where(active == 0, v, a),
                         labels, s.weight1, s.weight2)
      correct = base.cross_entropy(fused, labels)
      loss = jnp.where(phase1, boost, correct)
      output = output.replace(logits=fused, modality_logits=per_modality)
      return loss, (output, model_state, {"loss_boost": boost, "loss_correct": correct})

    method_state = state.method_state
    trainables = {"encoders": self._encoders(state.params), "head": method_state["head"],
                  "rho": method_state["rho"]}
    (loss, (output, model_state, terms)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(trainables)
    updates, opt = self.inner_tx.update(grads, method_state["opt"], trainables)
    rate = ctx.learning_rate if ctx.learning_rate is not None else jnp.float32(1.0)
    rate = rate * jnp.where(phase1, 1.0, s.correction_lr_scale)
    if s.variant == "original":  # Phase 1 trains the active encoder and H only.
      updates = self._mask_phase1(updates, phase1, active)
    trainables = optax.apply_updates(trainables, base.scale_updates(updates, rate))
    new_state = state.replace(
        params=replace(state.params, trainables["encoders"]), model_state=model_state,
        method_state={"head": trainables["head"], "rho": trainables["rho"], "opt": opt})
    metrics = {"loss": loss, **terms, "boost_rate": trainables["rho"],
               "stage": stage.astype(jnp.float32),
               "phase": jnp.where(phase1, 1.0, 2.0).astype(jnp.float32)}
    return new_state, output, metrics

  def _mask_phase1(self, updates: dict[str, Any], phase1: jax.Array, active: jax.Array
                   ) -> dict[str, Any]:
    """Zero updates in phase 1 for rho and the inactive modality's encoder."""
    encoders = {}
    for i, m in enumerate(MODALITIES):
      keep = (~phase1) | (active == i)
      for path in self.model.paths(f"encoder/{m}"):
        encoders[path] = jax.tree.map(lambda u, k=keep: jnp.where(k, u, jnp.zeros_like(u)),
                                      updates["encoders"][path])
    rho = jnp.where(phase1, jnp.zeros_like(updates["rho"]), updates["rho"])
    return {"encoders": encoders, "head": updates["head"], "rho": rho}
