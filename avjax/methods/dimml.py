r"""`dimml`: Detached and Interactive Multimodal Learning (Fan, Xu, Wang, Liu, Guo, ACM MM 2024).

Two runs ("stages", `config.method.stage`), as the authors' two scripts (DIM =
fanyunfeng-bit/DI-MML @ 83b9b7a):

Stage 1 (DIM main_CFT.py): every encoder trains with its own objective; the model's fusion head is
not trained (its parameters get no update at all). With f_m each modality's own head
(av_resnet's separate heads) and h a head shared by the modalities ('shared_head'):

  L = CE(f_a(z_a)) + CE(f_v(z_v)) + w CE(h(z_a)) + w CE(h(z_v)) + 1[epoch >= duc_start] L_DUC

  L_DUC = mean_i -log softmax_j(<v_i, sg(a_j)>_{D_a} / tau)_i + (the same with a, v and D_v)

where <x, y>_D sums over the dimensions in D only (boolean masks: static shapes), sg stops the
gradient (the teacher side), z_m the pooled features. D_a, D_v are picked once, at the start of
epoch `duc_start` (DIM: 20), by a pass over the training split in eval mode
(`select_dimensions`): per dimension, a nearest-class-mean classifier's accuracy; T_m = the
dimensions above the mean accuracy; D_a = T_a \ T_v, D_v = T_v \ T_a (DIM main_CFT.py:154-210).

Stage 2 (DIM main_CFT_stage2.py, `config.init_from` = the stage-1 run): the encoders and heads are
frozen (eval mode, no gradient); only the fusion head (config.model.fusion; DIM: concat) trains on
CE of the fused logits.

Prediction (both stages; DIM main_CFT_stage2.py:176-186): per example, c_k = max softmax(o_k) of
each head's logits o_k (stage 1: f_a, f_v; stage 2: f_a, f_v and the fusion head), weights
softmax_k(c_k / T), output sum_k w_k o_k (on logits).
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
from avjax.methods.base import METHODS, EpochContext, EpochUpdate, Method, Metrics, StepContext
from avjax.models.contract import ModelInfo, map_groups
from avjax.models.outputs import MODALITIES, ModelOutput, apply_modality_mask
from avjax.registry import ConfigError
from avjax.state import ModelFns, TrainState, model_inputs


@dataclasses.dataclass(frozen=True)
class DIMMLSettings(base.Settings):
  """stage: 1 (detached training with the shared head and DUC) or 2 (fusion head over the frozen
  stage-1 model, `config.init_from`). shared_weight: w (DIM main_CFT.py:44, 1). duc_start: the
  0-indexed epoch of the dimension selection and the first DUC epoch (DIM :93,318, 20).
  temperature: tau of DUC (DIM run.sh, CREMA-D 50). certainty_temperature: T of the test-time
  weighting (DIM run.sh, CREMA-D 1)."""

  stage: int = 1
  shared_weight: float = 1.0
  duc_start: int = 20
  temperature: float = 50.0
  certainty_temperature: float = 1.0

  def __post_init__(self):
    super().__post_init__()
    if self.stage not in (1, 2):
      raise ConfigError(f"config.method.stage={self.stage!r} must be 1 or 2.")
    if not self.shared_weight >= 0 or self.duc_start < 0:
      raise ConfigError("config.method.shared_weight and duc_start must be >= 0.")
    if not self.temperature > 0 or not self.certainty_temperature > 0:
      raise ConfigError("config.method.temperature and certainty_temperature must be > 0.")


def select_dimensions(features: dict[str, np.ndarray], labels: np.ndarray, num_classes: int,
                      chunk: int = 1024) -> dict[str, np.ndarray]:
  """DI-MML's dimension selection: {'audio': D_a, 'visual': D_v}, boolean (D,) masks.

  Per modality m and dimension d: class means mu_c,d over the examples; each example's class
  is argmin_c |z_d - mu_c,d| (first class on ties; a class without examples is never chosen);
  acc_d = the share of examples whose class is right; T_m = {d: acc_d > mean_d acc_d}.
  features: modality -> (N, D); labels: (N,) ints.
  """
  chosen = {}
  for m in MODALITIES:
    z = np.asarray(features[m], np.float64)
    means = np.full((num_classes, z.shape[1]), np.inf)
    for c in range(num_classes):
      if np.any(labels == c):
        means[c] = z[labels == c].mean(0)
    hits = np.zeros(z.shape[1])
    for start in range(0, len(z), chunk):
      part = z[start:start + chunk]
      nearest = np.argmin(np.abs(part[:, None, :] - means[None]), axis=1)  # (n, D)
      hits += np.sum(nearest == labels[start:start + chunk, None], axis=0)
    acc = hits / len(z)
    chosen[m] = acc > acc.mean()
  return {"audio": chosen["audio"] & ~chosen["visual"],
          "visual": chosen["visual"] & ~chosen["audio"]}


def duc_term(student: jax.Array, teacher: jax.Array, dims: jax.Array, tau: float) -> jax.Array:
  """One direction of DUC: the student's features (B, D) learn the teacher's on `dims` (D,).
  -mean_i log softmax_j(<s_i, sg(t_j)>_dims / tau)_i; the teacher gets no gradient."""
  mask = dims.astype(student.dtype)
  logits = (student * mask) @ (jax.lax.stop_gradient(teacher) * mask).T / tau  # (B, B)
  return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - jnp.diagonal(logits))


def certainty_weighted(logits: list[jax.Array], temperature: float) -> jax.Array:
  """sum_k w_k o_k with w = softmax_k(max_c softmax(o_k) / T), per example; o_k (B, C)."""
  stacked = jnp.stack(logits, axis=0)  # (K, B, C)
  certainty = jnp.max(jax.nn.softmax(stacked, axis=-1), axis=-1)  # (K, B)
  weights = jax.nn.softmax(certainty / temperature, axis=0)
  return jnp.sum(weights[..., None] * stacked, axis=0)


class DIMML(Method):
  """Stage 1: detached uni-modal training + shared head + DUC; stage 2: the fusion head."""

  Settings = DIMMLSettings
  requires = frozenset({"modality_heads", "shared_head", "encode_fuse"})
  diagnostics = ("loss_duc", "dimml_dims_audio", "dimml_dims_visual")

  def __init__(self, config: ml_collections.ConfigDict, model: ModelInfo | None = None):
    super().__init__(config, model)
    self.stage = int(self.settings.stage)

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    super().validate(config)
    stage = base.parse_settings(cls.Settings, config).stage
    if stage == 2 and not config.init_from:
      raise ConfigError("method 'dimml' stage 2 trains the fusion head over a stage-1 model; set "
                        "config.init_from to the stage-1 workdir (or config.method.stage=1).")

  def model_overrides(self) -> dict[str, Any]:
    return {"modality_heads": "separate", "shared_head": True}

  def optimizer(self, steps_per_epoch: int) -> optax.GradientTransformation:
    """The configured optimizer on what the stage trains; the rest gets no update (and keeps no
    optimizer state)."""
    tx = super().optimizer(steps_per_epoch)
    trains = (lambda g: g != "fusion") if self.stage == 1 else (lambda g: g == "fusion")
    labels = lambda params: map_groups(params, self.model,
                                       lambda g, i, x: "train" if trains(g) else "frozen")
    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)

  def init_state(self, params):
    del params
    dim = self.model.feature_dim
    return {"dims": jnp.zeros((2, dim), jnp.bool_), "selected": jnp.zeros((), jnp.bool_)}

  def predict(self, output: ModelOutput, state: Any) -> ModelOutput:
    heads = [output.modality_logits[m] for m in MODALITIES]
    if self.stage == 2:
      heads.append(output.logits)
    return output.replace(logits=certainty_weighted(heads, self.settings.certainty_temperature))

  def stage1_loss(self, output: ModelOutput, shared: dict[str, jax.Array],
                  batch: dict[str, jax.Array], state: Any, ctx: StepContext
                  ) -> tuple[jax.Array, Metrics]:
    ce = lambda logits: self.task.loss(logits, batch)[0]
    own = {m: ce(output.modality_logits[m]) for m in MODALITIES}
    common = {m: ce(shared[m]) for m in MODALITIES}
    tau, f = self.settings.temperature, output.features
    duc = (duc_term(f["visual"], f["audio"], state["dims"][0], tau)
           + duc_term(f["audio"], f["visual"], state["dims"][1], tau))
    duc = jnp.where(ctx.epoch >= self.settings.duc_start, duc, 0.0)
    w = self.settings.shared_weight
    loss = own["audio"] + own["visual"] + w * (common["audio"] + common["visual"]) + duc
    return loss, {"loss": loss, "loss_audio": own["audio"], "loss_visual": own["visual"],
                  "loss_shared_audio": common["audio"], "loss_shared_visual": common["visual"],
                  "loss_duc": duc, "dimml_dims_audio": jnp.sum(state["dims"][0]).astype(
                      jnp.float32),
                  "dimml_dims_visual": jnp.sum(state["dims"][1]).astype(jnp.float32)}

  def update(self, model: ModelFns, tx, state: TrainState, batch: dict[str, jax.Array],
             ctx: StepContext) -> tuple[TrainState, ModelOutput, Metrics]:
    inputs, mask = model_inputs(batch), batch.get("modality_mask")

    def stage1(m):
      out = m(inputs, modality_mask=mask)
      return out, m.shared_logits(out.features)

    def stage2(m):  # Frozen encoders and heads: eval mode, no gradient into them.
      features = jax.tree.map(jax.lax.stop_gradient, m.encode(inputs))
      return m.fuse(apply_modality_mask(features, mask)), None

    def loss_fn(params):
      (output, shared), model_state = model.apply(params, state.model_state,
                                                  stage1 if self.stage == 1 else stage2,
                                                  train=self.stage == 1)
      if self.stage == 1:
        loss, metrics = self.stage1_loss(output, shared, batch, state.method_state, ctx)
      else:
        loss, metrics = self.loss(output, batch, state.method_state, ctx)
      return loss, (output, metrics, model_state)

    (_, (output, metrics, model_state)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    new_state = base.apply_gradients(tx, state, grads, learning_rate=ctx.learning_rate,
                                     model_state=model_state)
    return new_state, self.predict(output, state.method_state), metrics

  def on_epoch_start(self, ctx: EpochContext) -> EpochUpdate:
    plan = super().on_epoch_start(ctx).plan
    state = ctx.state.method_state
    if (self.stage != 1 or ctx.epoch < self.settings.duc_start
        or bool(jax.device_get(state["selected"]))):
      return EpochUpdate(plan=plan)
    out = ctx.run(lambda m, b: {**m.encode(model_inputs(b)), "label": b["label"]}, "train")
    dims = select_dimensions(out, out["label"], self.model.num_outputs)
    return EpochUpdate(plan=plan, method_state={
        "dims": jnp.asarray(np.stack([dims["audio"], dims["visual"]])),
        "selected": jnp.ones((), jnp.bool_)})


METHODS.register("dimml")(DIMML)
