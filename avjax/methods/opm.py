"""`opm`: On-the-fly Prediction Modulation, Wei, Hu, Du, Wen, T-PAMI 2024 (GeWu-Lab/BML_TPAMI2024
@ 8db168f, code/models/Classifier.py and code/main.py).

Each step drops the dominant modality's pooled feature vector before the fusion head, for some
examples, with a probability that grows with its dominance:

  p_m   = sum_i softmax(t_m)_i[y_i]        (batch sums; t_m the model's uni-modal logits of the
                                            un-dropped features, no gradient)
  rho_a = tanh(relu(p_a / p_v - 1)),  rho_v = tanh(relu(p_v / p_a - 1))
  q_m   = clip(q_base (1 + lam rho_m), 0, 1) if rho_m > 0 else 0        (only the leader drops)
  with probability p_exe (one draw per step): keep_m,i ~ Bernoulli(1 - q_m) per example and
  modality, features h_m,i <- h_m,i keep_m,i / (1 - theta), theta = sum_m d_m q_m / sum_m d_m
  (the mean of q for equal widths), in the forward and the backward pass alike; otherwise the
  features pass unchanged.
  L = CE(fusion(dropped features), y)

The rescale uses the pooled theta for every modality, so the never-dropped weak modality is
amplified too (the original's choice, kept; docs/deviations.md). BML skips examples that lost
every modality; with two modalities the weak one has q = 0, so none ever does. No dropping in
evaluation. The method acts from epoch `modulation_starts` on (BML: `warm_up = epoch <= 5`, i.e.
epochs 0-5 train plainly) to `modulation_ends` (None: the end).

variant='balancebenchmark' (BB trainer/OPM_trainer.py): p_a / (p_v + 1e-5) and 1 / (1 - theta +
1e-5); BB's settings (q_base 0.4, no warm-up, window 0-80) are configuration values.

Config keys (config.method.*): q_base, lam, p_exe, modulation_starts, modulation_ends, variant.
Logged: opm_drop_<m> (q_m; 0 outside the window), opm_executed (1 when the drop ran), opm_kept_<m>
(the share of examples whose modality m was kept), opm_ratio_audio (p_a / p_v), opm_loss_<m> (CE
of the uni-modal logits, logged only as BML does).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import optax

from avjax.methods import base
from avjax.methods.base import METHODS, Method, Metrics, StepContext, apply_gradients
from avjax.models.contract import ModelInfo
from avjax.models.outputs import MODALITIES, ModelOutput, apply_modality_mask
from avjax.registry import ConfigError
from avjax.state import ModelFns, TrainState, cast_floats, model_inputs

VARIANTS = ("original", "balancebenchmark")
BB_EPS = 1e-5  # BB's guards in the ratio's denominator and the rescale (OPM_trainer.py:41,165).


@dataclasses.dataclass(frozen=True)
class OPMSettings(base.Settings):
  """q_base: base drop probability (0.5: BML main.py --q_base and scripts/train_opm.sh; config.py
  says 0.4, overridden). lam: growth with dominance (0.5: main.py --lam). p_exe: probability that a
  step drops at all (0.7: main.py --p_exe). modulation_starts / modulation_ends: inclusive window of
  0-indexed epochs (6 / None: BML's warm-up, epochs 0-5 plain, then to the end). variant:
  'original' (BML) or 'balancebenchmark' (BB's epsilons)."""

  q_base: float = 0.5
  lam: float = 0.5
  p_exe: float = 0.7
  modulation_starts: int = 6
  modulation_ends: int | None = None
  variant: str = "original"

  def __post_init__(self):
    super().__post_init__()
    if self.variant not in VARIANTS:
      raise ConfigError(f"config.method.variant={self.variant!r} must be one of {VARIANTS}.")
    for name in ("q_base", "p_exe"):
      if not 0 <= getattr(self, name) <= 1:
        raise ConfigError(f"config.method.{name}={getattr(self, name)!r} must lie in [0, 1].")
    if not self.lam >= 0:
      raise ConfigError(f"config.method.lam={self.lam!r} must be >= 0.")
    ends = self.modulation_ends
    if self.modulation_starts < 0 or (ends is not None and ends < self.modulation_starts):
      raise ConfigError(
          f"config.method.modulation_starts={self.modulation_starts} / modulation_ends={ends}: "
          "the inclusive window of 0-indexed epochs needs 0 <= starts <= ends (ends None: to "
          "the end).")


def drop_probabilities(perf: dict[str, jax.Array], q_base: float, lam: float,
                       eps: float = 0.0) -> dict[str, jax.Array]:
  """q_m = clip(q_base (1 + lam rho_m), 0, 1) where rho_m = tanh(relu(p_m / (p_other + eps) - 1))
  > 0, else 0 (two modalities)."""
  a, v = perf["audio"], perf["visual"]
  rho = {"audio": jnp.tanh(jax.nn.relu(a / (v + eps) - 1.0)),
         "visual": jnp.tanh(jax.nn.relu(v / (a + eps) - 1.0))}
  return {m: jnp.where(r > 0, jnp.clip(q_base * (1.0 + lam * r), 0.0, 1.0), 0.0)
          for m, r in rho.items()}


def drop_mask(q: dict[str, jax.Array], widths: dict[str, int], batch_size: int, p_exe: float,
              rng: jax.Array, eps: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """The (B, M) multiplier of the pooled features (MODALITIES order) and whether the drop ran:
  keep_m,i / (1 - theta + eps) when it runs (probability p_exe), else ones."""
  execute = jax.random.uniform(jax.random.fold_in(rng, 0)) >= 1.0 - p_exe
  theta = sum(widths[m] * q[m] for m in MODALITIES) / sum(widths.values())
  keep = jnp.stack([jax.random.bernoulli(jax.random.fold_in(rng, 1 + i), 1.0 - q[m], (batch_size,))
                    for i, m in enumerate(MODALITIES)], axis=1).astype(jnp.float32)
  dropped = keep / (1.0 - theta + eps)
  return jnp.where(execute, dropped, jnp.ones_like(dropped)), execute


class OPM(Method):
  """OPM: the leading modality's features dropped before fusion, survivors rescaled (module)."""

  Settings = OPMSettings
  requires = frozenset({"encode_fuse", "modality_logits"})
  diagnostics = ("opm_drop_audio", "opm_drop_visual", "opm_kept_audio", "opm_kept_visual",
                 "opm_ratio_audio", "opm_executed")

  def __init__(self, config: ml_collections.ConfigDict, model: ModelInfo | None = None):
    super().__init__(config, model)
    s = self.settings
    self.eps = BB_EPS if s.variant == "balancebenchmark" else 0.0
    self.window = (int(s.modulation_starts),
                   None if s.modulation_ends is None else int(s.modulation_ends))

  def active(self, epoch: jax.Array) -> jax.Array:
    starts, ends = self.window
    return (epoch >= starts) & ((epoch <= ends) if ends is not None else True)

  def update(self, model: ModelFns, tx: optax.GradientTransformation, state: TrainState,
             batch: dict[str, jax.Array], ctx: StepContext
             ) -> tuple[TrainState, ModelOutput, Metrics]:
    s, labels = self.settings, batch["label"]
    inputs = model_inputs(batch)
    if model.compute_dtype != "float32":
      inputs = cast_floats(inputs, model.compute_dtype)
    active = self.active(ctx.epoch)

    def forward(m):
      features = apply_modality_mask(m.encode(inputs), batch.get("modality_mask"))
      clean = m.fuse(features)
      perf = base.true_class_scores(clean.modality_logits, labels)
      q = drop_probabilities(perf, s.q_base, s.lam, self.eps)
      q = {k: jnp.where(active, v, 0.0) for k, v in q.items()}
      widths = {k: features[k].shape[-1] for k in MODALITIES}
      multiplier, executed = drop_mask(q, widths, labels.shape[0], s.p_exe, ctx.rng, self.eps)
      multiplier = jnp.where(active, multiplier, jnp.ones_like(multiplier))
      dropped = m.fuse(apply_modality_mask(features, multiplier))
      output = dropped.replace(modality_logits=clean.modality_logits)
      return output, (perf, q, multiplier, executed & active)

    def loss_fn(params):
      (output, extras), model_state = model.apply(params, state.model_state, forward)
      loss, metrics = self.task.loss(output.logits, batch)
      return loss, (output, model_state, extras, metrics)

    (loss, (output, model_state, extras, task_metrics)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    new_state = apply_gradients(tx, state, grads, learning_rate=ctx.learning_rate,
                                model_state=model_state)
    perf, q, multiplier, executed = extras
    metrics = {**task_metrics, "loss": loss, "opm_executed": executed.astype(jnp.float32),
               "opm_ratio_audio": perf["audio"] / perf["visual"]}
    for i, m in enumerate(MODALITIES):
      uni = base.cross_entropy(jax.lax.stop_gradient(output.modality_logits[m]), labels)
      metrics.update({f"opm_drop_{m}": q[m], f"opm_loss_{m}": uni,
                      f"opm_kept_{m}": jnp.mean((multiplier[:, i] > 0).astype(jnp.float32))})
    return new_state, output, metrics


METHODS.register("opm")(OPM)
