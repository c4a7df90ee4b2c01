"""VAT pre-training (`vat_pretrain`) and fine-tuning with momentum pseudo-targets (`vat_finetune`).

The ALBEF recipe applied to video frames and audio (../shared/reference/vat.md; the losses are in
avjax/methods/vat_losses.py). Both methods keep momentum (EMA) copies of parameters in their method
state, so they are checkpointed with the run and resume bit-exactly.

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

vat_finetune (model 'vat_classifier'):
  L = (1 - alpha) CE(p, y) + alpha * (-sum softmax(p_m) log softmax(p))        (classification)
  L = (1 - alpha) MSE(r, t) + alpha * MSE(r, r_m)                                (regression)
  with p_m, r_m from the momentum copy of the whole model (EMA updated before the forward), alpha
  ramped as in pre-training; task 'classification_regression' adds both (regression weighted by
  `regression_weight`). Per-modality heads get their own CE / MSE (weight `modality_weight`; at 0
  they are linear probes on stop-gradient [CLS] features that leave the encoders untouched).

Config keys: see PRETRAIN_DEFAULTS / FINETUNE_DEFAULTS (config.method.<key>, defaults when absent).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from avjax import metrics as metrics_lib
from avjax import valuation
from avjax.methods import vat_losses as L
from avjax.methods.base import METHODS, Method, Metrics, StepContext, cross_entropy
from avjax.models.fusion import l2_normalize
from avjax.models.outputs import MODALITIES, ModelOutput
from avjax.registry import ConfigError
from avjax.state import ModelFns, TrainState, model_inputs

PRETRAIN_DEFAULTS = {
    "momentum": 0.995,  # EMA m (vat.md).
    "alpha": 0.4,  # Distillation weight, ramped over epoch 0.
    "queue_size": 65536,  # Q (ALBEF); a multiple of the global batch size; 0: no queue.
    "temperature": 0.07,  # Initial tau; learnable, clamped to [0.001, 0.5].
    "min_learning_rate": 1e-5,  # Cosine end value (AdamW lr 1e-4 -> 1e-5).
}
FINETUNE_DEFAULTS = {
    "momentum": 0.995,
    "alpha": 0.4,
    "task": "classification",  # Or 'regression' / 'classification_regression'.
    "target_indices": (),  # Columns of batch['attributes'] that are the regression targets.
    "target_names": (),  # One name per target (metrics pearson_<name>, mse_<name>; 'valence').
    "target_range": (0.0, 1.0),  # Sigmoid outputs scaled to [lo, hi].
    "regression_weight": 1.0,  # Weight of the regression loss next to CE (both tasks).
    "modality_weight": 0.0,  # Per-modality head losses; 0: detached linear probes.
    "min_learning_rate": 0.0,
}
TASKS = ("classification", "regression", "classification_regression")
PRETRAIN_MOMENTUM = ("audio_encoder", "visual_encoder", "audio_proj", "visual_proj")
MER_VALENCE_WEIGHT = 0.25  # MER-MULTI / MER-NOISE: WAF - 0.25 * MSE(valence).


def _setting(config: ml_collections.ConfigDict, defaults: dict[str, Any], key: str) -> Any:
  return config.method.get(key, defaults[key])


def _check_common(config: ml_collections.ConfigDict, model_name: str, name: str,
                  defaults: dict[str, Any], report_keys: set[str]) -> None:
  from avjax.config import base_config  # pylint: disable=import-outside-toplevel
  from avjax.models.vat import resolve_settings  # pylint: disable=import-outside-toplevel
  unknown = set(config.method.keys()) - set(defaults) - set(base_config().method.keys()) - {
      "value_fn"}
  if unknown:
    raise ConfigError(f"Unknown config.method key(s) {sorted(unknown)} for method {name!r}; it "
                      f"takes {sorted(defaults)}.")
  if config.model.name != model_name:
    raise ConfigError(f"method {name!r} needs config.model.name={model_name!r} (got "
                      f"{config.model.name!r}).")
  resolve_settings(config)
  m, alpha = _setting(config, defaults, "momentum"), _setting(config, defaults, "alpha")
  if not 0 <= m < 1 or not 0 <= alpha <= 1:
    raise ConfigError(f"config.method.momentum={m!r} must be in [0, 1) and config.method.alpha="
                      f"{alpha!r} in [0, 1].")
  best = config.train.best_metric
  if best not in report_keys:
    raise ConfigError(f"config.train.best_metric={best!r} is not reported by method {name!r} "
                      f"with these settings; use one of {sorted(report_keys)}.")


def _momentum_copy(tree: Any) -> Any:
  return jax.tree.map(jnp.copy, tree)  # Own buffers: the state is donated to the step.


class _VATSchedule(Method):
  """AdamW with VAT's cosine to `min_learning_rate` (set by the subclass), and that rate logged."""

  min_learning_rate: float

  def optimizer(self, steps_per_epoch: int) -> optax.GradientTransformation:
    self.steps_per_epoch = steps_per_epoch
    return L.vat_optimizer(self.config, steps_per_epoch, self.min_learning_rate)

  def learning_rate(self, step: int, epoch: int, steps_per_epoch: int) -> float:
    return L.vat_learning_rate(self.config, step, steps_per_epoch, self.min_learning_rate)


class VATPretrain(_VATSchedule):
  """Contrastive alignment + matching with hard negatives + momentum distillation (see module)."""

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    get = lambda k: _setting(config, PRETRAIN_DEFAULTS, k)
    self.momentum, self.alpha = float(get("momentum")), float(get("alpha"))
    self.queue_size, self.temperature = int(get("queue_size")), float(get("temperature"))
    self.min_learning_rate = float(get("min_learning_rate"))
    self.steps_per_epoch = 1  # Set by optimizer(), which setup() calls before any step.

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    keys = {"loss", "vac_loss", "vam_loss", "vam_accuracy"}
    _check_common(config, "vat", "vat_pretrain", PRETRAIN_DEFAULTS, keys)
    q, b = _setting(config, PRETRAIN_DEFAULTS, "queue_size"), config.train.batch_size
    if b < 2:
      raise ConfigError("vat_pretrain needs config.train.batch_size >= 2 (hard negatives are "
                        "drawn from the other examples of the batch).")
    if q < 0 or q % b:
      raise ConfigError(f"config.method.queue_size={q} must be a non-negative multiple of the "
                        f"global batch size config.train.batch_size={b} (ALBEF's FIFO writes whole "
                        "batches).")
    t = _setting(config, PRETRAIN_DEFAULTS, "temperature")
    if not L.TEMPERATURE_RANGE[0] <= t <= L.TEMPERATURE_RANGE[1]:
      raise ConfigError(f"config.method.temperature={t!r} must lie in {L.TEMPERATURE_RANGE}.")
    if config.input.modality_dropout:
      raise ConfigError("vat_pretrain aligns both modalities of every clip; set "
                        "config.input.modality_dropout=0.")

  def model_overrides(self) -> dict[str, Any]:
    return {"temperature": self.temperature}

  def init_state(self, params: nnx.State) -> dict[str, Any]:
    dim = params["audio_proj"]["kernel"].shape[-1]
    key = jax.random.fold_in(jax.random.key(self.config.seed), 0x5A7)
    k_a, k_v = jax.random.split(key)
    unit = lambda k: l2_normalize(jax.random.normal(k, (self.queue_size, dim)))
    return {"momentum": _momentum_copy({k: params[k] for k in PRETRAIN_MOMENTUM}),
            "queue_audio": unit(k_a), "queue_visual": unit(k_v),
            "queue_ptr": jnp.zeros((), jnp.int32)}

  def update(self, model: ModelFns, tx: optax.GradientTransformation, state: TrainState,
             batch: dict[str, jax.Array], ctx: StepContext
             ) -> tuple[TrainState, ModelOutput, Metrics]:
    ms = state.method_state
    alpha = L.ramped_alpha(self.alpha, ctx.step, self.steps_per_epoch)
    params = L.clamp_temperature(state.params)
    momentum = L.ema(ms["momentum"], {k: params[k] for k in PRETRAIN_MOMENTUM}, self.momentum)
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
                               mdl.temp[...], alpha)
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
    updates, opt_state = tx.update(grads, state.opt_state, params)
    queue_audio, ptr = L.enqueue(ms["queue_audio"], feats_m["audio"], ms["queue_ptr"])
    queue_visual, _ = L.enqueue(ms["queue_visual"], feats_m["visual"], ms["queue_ptr"])
    new_state = state.replace(
        params=optax.apply_updates(params, updates), model_state=model_state,
        opt_state=opt_state, method_state={"momentum": momentum, "queue_audio": queue_audio,
                                           "queue_visual": queue_visual, "queue_ptr": ptr})
    b = batch["audio"].shape[0]
    output = ModelOutput(logits=logits[:b], modality_logits={}, features={})
    metrics.update(temperature=params["temp"][...], alpha=alpha)
    return new_state, output, metrics

  def train_metrics(self, output: ModelOutput, batch: dict[str, jax.Array]) -> Metrics:
    return {}  # No classes in pre-training; the step's metrics carry vac / vam.

  def eval_outputs(self, model: nnx.Module, batch: dict[str, jax.Array],
                   output: ModelOutput) -> dict[str, jax.Array]:
    """Per-example VAC and VAM on the eval batch (see `pretrain_eval`)."""
    return pretrain_eval(model, output, batch["valid"])

  def eval_report(self, predictions: dict[str, np.ndarray]) -> dict[str, float]:
    report = {k: float(np.mean(predictions[k])) for k in ("vac_loss", "vam_loss", "vam_accuracy")}
    report["loss"] = report["vac_loss"] + report["vam_loss"]
    return report


def pretrain_eval(model: nnx.Module, output: ModelOutput, valid: jax.Array
                  ) -> dict[str, jax.Array]:
  """Deterministic per-example objectives on one eval batch (no momentum model, no queue).

  VAC: in-batch InfoNCE (alpha 0) of the online embeddings, padding columns excluded.
  VAM: the true pair and the HARDEST in-batch negatives (argmax of the similarity instead of a
  draw), averaged over the 3 pairs (over the true pair alone when the batch has one real example).
  Returns {'vac_loss', 'vam_loss', 'vam_accuracy'}: (B,) each.
  """
  a, v = output.aux["audio_embed"], output.aux["visual_embed"]
  temp = jnp.clip(model.temp[...], *L.TEMPERATURE_RANGE)
  real = valid > 0
  b = a.shape[0]
  eye = jnp.eye(b, dtype=bool)
  sims = {"a2v": a @ v.T / temp, "v2a": v @ a.T / temp}
  sims = {k: jnp.where(real[None, :], s, -jnp.inf) for k, s in sims.items()}
  diag = lambda s: jnp.diagonal(jax.nn.log_softmax(s, axis=-1))
  vac = -0.5 * (diag(sims["a2v"]) + diag(sims["v2a"]))
  hardest = lambda s: jnp.argmax(jnp.where(eye, -jnp.inf, s), axis=-1)
  audio, visual, labels = L.matching_pairs(output.aux["audio_tokens"], output.aux["visual_tokens"],
                                           hardest(sims["a2v"]), hardest(sims["v2a"]))
  logits = model.match(audio, visual)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  hit = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  has_neg = (jnp.sum(real) > 1).astype(jnp.float32)
  weights = jnp.stack([jnp.ones(()), has_neg, has_neg])[:, None]  # (3, 1)
  per_pair = lambda x: jnp.sum(weights * x.reshape(3, b), 0) / jnp.sum(weights)
  return {"vac_loss": vac, "vam_loss": per_pair(ce), "vam_accuracy": per_pair(hit)}


class VATFinetune(_VATSchedule):
  """Fine-tuning with momentum pseudo-targets: classification, regression, or both (module doc)."""

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    get = lambda k: _setting(config, FINETUNE_DEFAULTS, k)
    self.momentum, self.alpha = float(get("momentum")), float(get("alpha"))
    self.task = get("task")
    self.target_indices = tuple(int(i) for i in get("target_indices"))
    self.target_names = tuple(get("target_names"))
    self.target_range = tuple(float(x) for x in get("target_range"))
    self.regression_weight = float(get("regression_weight"))
    self.modality_weight = float(get("modality_weight"))
    self.min_learning_rate = float(get("min_learning_rate"))
    self.classify = self.task in ("classification", "classification_regression")
    self.regress = self.task in ("regression", "classification_regression")
    self.steps_per_epoch = 1

  @classmethod
  def report_keys(cls, config: ml_collections.ConfigDict) -> set[str]:
    """The main validation metrics eval_report gives (per-modality variants omitted)."""
    task = _setting(config, FINETUNE_DEFAULTS, "task")
    names = tuple(_setting(config, FINETUNE_DEFAULTS, "target_names"))
    keys = {"loss"}
    if task != "regression":
      keys |= {"accuracy", "macro_f1", "weighted_f1"}
    if task != "classification":
      keys |= {"pearson", "ccc_mean", "mse"} | {f"{p}_{n}" for p in ("pearson", "ccc", "mse")
                                                 for n in names}
      if task == "classification_regression" and "valence" in names:
        keys.add("mer_score")
    return keys

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    get = lambda k: _setting(config, FINETUNE_DEFAULTS, k)
    task = get("task")
    if task not in TASKS:
      raise ConfigError(f"config.method.task={task!r} is not one of {TASKS}.")
    indices, names = tuple(get("target_indices")), tuple(get("target_names"))
    if task == "classification" and indices:
      raise ConfigError("config.method.target_indices is set but config.method.task="
                        "'classification' ignores it; use 'classification_regression' or clear it.")
    if task != "classification":
      if not indices or len(names) != len(indices) or min(indices) < 0:
        raise ConfigError(f"config.method.task={task!r} needs config.method.target_indices (columns "
                          "of the dataset's 'attributes') and one config.method.target_names entry "
                          f"per index; got {indices} / {names}.")
      lo, hi = get("target_range")
      if not lo < hi:
        raise ConfigError(f"config.method.target_range=({lo}, {hi}) must satisfy lo < hi.")
    if get("regression_weight") < 0 or get("modality_weight") < 0:
      raise ConfigError("config.method.regression_weight and modality_weight must be >= 0.")
    _check_common(config, "vat_classifier", "vat_finetune", FINETUNE_DEFAULTS,
                  cls.report_keys(config))

  def model_overrides(self) -> dict[str, Any]:
    out = {"num_targets": len(self.target_indices) if self.regress else 0,
           "target_range": self.target_range,
           "detach_modality_heads": self.modality_weight == 0}
    if not self.classify:
      out["num_classes"] = 0
    return out

  def init_state(self, params: nnx.State) -> dict[str, Any]:
    return {"momentum": _momentum_copy(params)} if self.alpha > 0 else {}

  def targets(self, batch: dict[str, jax.Array]) -> jax.Array:
    """(B, R) regression targets: the configured columns of batch['attributes']."""
    return batch["attributes"][:, jnp.asarray(self.target_indices)].astype(jnp.float32)

  def update(self, model: ModelFns, tx: optax.GradientTransformation, state: TrainState,
             batch: dict[str, jax.Array], ctx: StepContext
             ) -> tuple[TrainState, ModelOutput, Metrics]:
    alpha = L.ramped_alpha(self.alpha, ctx.step, self.steps_per_epoch)
    method_state, teacher = state.method_state, None
    if self.alpha > 0:
      momentum = L.ema(method_state["momentum"], state.params, self.momentum)
      teacher, _ = model.forward(momentum, state.model_state, batch)
      teacher = jax.lax.stop_gradient(teacher)
      method_state = {"momentum": momentum}

    def loss_fn(p):
      output, model_state = model.forward(p, state.model_state, batch)
      loss, metrics = self.finetune_loss(output, teacher, batch, alpha)
      return loss, (output, model_state, metrics)

    (_, (output, model_state, metrics)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(params=optax.apply_updates(state.params, updates),
                              model_state=model_state, opt_state=opt_state,
                              method_state=method_state)
    return new_state, output, {**metrics, "alpha": alpha}

  def finetune_loss(self, output: ModelOutput, teacher: ModelOutput | None,
                    batch: dict[str, jax.Array], alpha: jax.Array | float
                    ) -> tuple[jax.Array, Metrics]:
    """The fused loss with pseudo-targets plus the per-modality head losses (module doc)."""
    metrics, main = {}, 0.0
    if self.classify:
      ce = cross_entropy(output.logits, batch["label"])
      kd = L.distillation(output.logits, teacher.logits) if teacher is not None else 0.0
      main = (1.0 - alpha) * ce + alpha * kd
      metrics["loss_ce"] = ce
    if self.regress:
      t = self.targets(batch)
      mse = jnp.mean(jnp.square(output.aux["regression"] - t))
      mse_m = (jnp.mean(jnp.square(output.aux["regression"]
                                   - jax.lax.stop_gradient(teacher.aux["regression"])))
               if teacher is not None else 0.0)
      reg = (1.0 - alpha) * mse + alpha * mse_m
      main = main + (self.regression_weight if self.classify else 1.0) * reg
      metrics["loss_mse"] = mse
    modality = 0.0
    for m in MODALITIES:
      term = 0.0
      if self.classify:
        term = cross_entropy(output.modality_logits[m], batch["label"])
      if self.regress:
        mse_m = jnp.mean(jnp.square(output.aux[f"regression_{m}"] - self.targets(batch)))
        term = term + (self.regression_weight if self.classify else 1.0) * mse_m
      metrics[f"loss_{m}"] = term
      modality = modality + term
    loss = main + (self.modality_weight or 1.0) * modality  # Weight 0: detached probes (weight 1).
    metrics.update(loss=loss, loss_main=main)
    return loss, metrics

  def train_metrics(self, output: ModelOutput, batch: dict[str, jax.Array]) -> Metrics:
    return super().train_metrics(output, batch) if self.classify else {}

  def eval_outputs(self, model: nnx.Module, batch: dict[str, jax.Array],
                   output: ModelOutput) -> dict[str, jax.Array]:
    """Regression outputs and targets; with classes, each modality's Shapley contribution
    (avjax.valuation) computed on the token sequences `fuse` reads (not the pooled [CLS])."""
    out = {}
    if self.classify:
      tokens = {m: output.aux[f"{m}_tokens"] for m in MODALITIES}
      out.update(valuation.eval_contributions(model, output.replace(features=tokens), batch,
                                              self.config.method.get("value_fn", "size")))
    if self.regress:
      out.update(targets=self.targets(batch), regression=output.aux["regression"])
      out.update({f"regression_{m}": output.aux[f"regression_{m}"] for m in MODALITIES})
    return out

  def eval_report(self, predictions: dict[str, np.ndarray]) -> dict[str, float]:
    """Classification metrics (accuracy, macro / weighted F1, CE; fused and per modality),
    regression metrics (pearson_<name>, ccc_<name>, mse_<name>, their means 'pearson', 'ccc_mean',
    'mse'; fused and `_audio` / `_visual`) and mer_score = weighted_f1 - 0.25 mse_valence."""
    report = super().eval_report(predictions) if self.classify else {}
    if self.regress:
      targets = predictions["targets"]
      for suffix in ("", "_audio", "_visual"):
        preds = predictions[f"regression{suffix}"]
        report.update(metrics_lib.regression_metrics(targets, preds, self.target_names,
                                                     suffix=suffix.lstrip("_")))
        mse = np.mean(np.square(preds.astype(np.float64) - targets), axis=0)
        report.update({f"mse_{n}{suffix}": float(e) for n, e in zip(self.target_names, mse)})
        report[f"mse{suffix}"] = float(np.mean(mse))
      if not self.classify:
        report["loss"] = report["mse"]
      elif "valence" in self.target_names:
        report["mer_score"] = report["weighted_f1"] - MER_VALENCE_WEIGHT * report["mse_valence"]
    return report


METHODS.register("vat_pretrain")(VATPretrain)
METHODS.register("vat_finetune")(VATFinetune)
