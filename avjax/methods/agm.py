"""`agm`: Adaptive Gradient Modulation, Li et al. ICCV 2023 (lihong2303/AGM_ICCV2023 @ 5a65542).

Every step isolates each modality's response to the fused logits with a two-player Shapley value
built from passes with one modality's INPUT zeroed (run/CREMAD_main.py, model/CREMAD_net.py):

  T = f(x_a, x_v)   train mode (BatchNorm batch statistics; running statistics update)
  A = f(x_a, 0), V = f(0, x_v)   eval mode (running statistics, those the T pass just updated, as
                                 torch updates them in place), gradients kept
  m_a = (T - V + A) / 2,  m_v = (T - A + V) / 2            (f(empty) taken as 0; m_a + m_v = T)

Each response is scored by its batch-mean cross-entropy, s_m = mean_i min(-log p_m,i[y_i], -log
1e-8) (no gradient). With S_m the cumulative mean of s_m over all earlier steps of the run
(S_m <- S_m (t-1)/t + s_m/t, t = 1, 2, ..., updated after use; S = 0 before the first step):

  r_a = exp(s_v - s_a),  r*_a = exp(S_v - S_a)  (and symmetrically for v)
  c_m = exp(alpha * min(r*_m - r_m, cap))            (cap None: no cap, as the AVE script)

Inside the modulation window the loss is CE(m_a + m_v) with dL/dm_m scaled by c_m (the original's
backward hooks; here `sg(m_a + m_v) + c_a (m_a - sg(m_a)) + c_v (m_v - sg(m_v))`, same value and
gradient): a modality ahead of its history is slowed, one behind it sped up. Outside the window
c = 1 (the original keeps stale coefficients there; docs/deviations.md). Then, if any element of
a fusion-head kernel gradient lies outside [-clip_threshold, clip_threshold], all gradients are
clipped to global norm clip_norm (torch clip_grad_norm_, +1e-6), before the optimizer (whose
weight decay is therefore not scaled).

variant='balancebenchmark' (BB balancemm/trainer/AGM_trainer.py): the zeroed passes run before
the train-mode pass (pre-step running statistics) without gradient, res_a = (T - V) / 2, res_v =
(T - A) / 2 (no singleton term), the ratio sign flipped (r_a = exp(s_a - s_v), ...), loss CE(T),
and the coefficient multiplies the gradients of every non-1-D encoder parameter (conv kernels)
after backward. Defaults follow each variant: cap 10 / clip 1, 1 (CREMA-D script) or cap 7 /
clip 5, 5 (BB).

Config keys (config.method.*): alpha, exponent_cap, clip_threshold, clip_norm, modulation_starts,
modulation_ends (0-indexed inclusive epochs; None: to the end), variant.
Logged: agm_coeff_<m> (applied: 1 outside the window), agm_score_<m> (s_m), agm_mean_<m> (S_m
after the update), agm_clipped (1 when the conditional clip fired).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from avjax.methods import base
from avjax.methods.base import METHODS, Method, Metrics, StepContext, apply_gradients
from avjax.models.contract import ModelInfo, map_groups, top_key
from avjax.models.outputs import MODALITIES, ModelOutput
from avjax.registry import ConfigError
from avjax.state import ModelFns, TrainState

VARIANTS = ("original", "balancebenchmark")
SCORE_FLOOR = 1e-8  # p < 1e-8 scores -log(1e-8) = 18.4207 (run/CREMAD_main.py:133-141).
CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_: scale = max_norm / (norm + 1e-6).
# (exponent cap, clip threshold, clip norm) per variant: the CREMA-D script's / BB's.
VARIANT_DEFAULTS = {"original": (10.0, 1.0, 1.0), "balancebenchmark": (7.0, 5.0, 5.0)}


@dataclasses.dataclass(frozen=True)
class AGMSettings(base.Settings):
  """alpha: modulation strength (1.5: the authors' CREMA-D value, lihongcs/AGM issues #3, #5).
  exponent_cap / clip_threshold / clip_norm: None takes the variant's (see VARIANT_DEFAULTS);
  exponent_cap <= 0 or clip_norm <= 0 turns the cap / the clip off.
  modulation_starts / modulation_ends: inclusive window of 0-indexed epochs (None: to the end; the
  authors run the whole training, issue #10).
  variant: 'original' (the authors' code) or 'balancebenchmark' (BB's trainer)."""

  alpha: float = 1.5
  exponent_cap: float | None = None
  clip_threshold: float | None = None
  clip_norm: float | None = None
  modulation_starts: int = 0
  modulation_ends: int | None = None
  variant: str = "original"

  def __post_init__(self):
    super().__post_init__()
    if self.variant not in VARIANTS:
      raise ConfigError(f"config.method.variant={self.variant!r} must be one of {VARIANTS}.")
    if not self.alpha >= 0:
      raise ConfigError(f"config.method.alpha={self.alpha!r} must be >= 0 (0 disables AGM).")
    if self.clip_threshold is not None and not self.clip_threshold > 0:
      raise ConfigError(f"config.method.clip_threshold={self.clip_threshold!r} must be > 0.")
    ends = self.modulation_ends
    if self.modulation_starts < 0 or (ends is not None and ends < self.modulation_starts):
      raise ConfigError(
          f"config.method.modulation_starts={self.modulation_starts} / modulation_ends={ends}: "
          "the inclusive window of 0-indexed epochs needs 0 <= starts <= ends (ends None: to "
          "the end).")

  def resolved(self) -> tuple[float | None, float, float | None]:
    """(exponent cap or None, clip threshold, clip norm or None) with the variant's defaults."""
    cap, threshold, norm = VARIANT_DEFAULTS[self.variant]
    cap = cap if self.exponent_cap is None else self.exponent_cap
    threshold = threshold if self.clip_threshold is None else self.clip_threshold
    norm = norm if self.clip_norm is None else self.clip_norm
    return (cap if cap > 0 else None), threshold, (norm if norm > 0 else None)


def shapley_responses(full: jax.Array, audio_only: jax.Array, visual_only: jax.Array,
                      variant: str = "original") -> dict[str, jax.Array]:
  """Per-modality responses (B, C) from T = f(x_a, x_v), A = f(x_a, 0), V = f(0, x_v).

  original: the two-player Shapley value with f(empty) = 0 (m_a + m_v = T);
  balancebenchmark: BB's coalitions without the empty one, (T - V) / 2 and (T - A) / 2."""
  if variant == "original":
    return {"audio": 0.5 * (full - visual_only + audio_only),
            "visual": 0.5 * (full - audio_only + visual_only)}
  return {"audio": 0.5 * (full - visual_only), "visual": 0.5 * (full - audio_only)}


def response_score(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Batch-mean cross-entropy with each example's term capped at -log(1e-8). (B,C), (B,) -> ()."""
  log_p = jax.nn.log_softmax(jax.lax.stop_gradient(logits).astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(log_p, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
  return jnp.mean(jnp.minimum(nll, -math.log(SCORE_FLOOR)))


def agm_coefficients(scores: dict[str, jax.Array], means: dict[str, jax.Array], alpha: float,
                     cap: float | None, variant: str = "original") -> dict[str, jax.Array]:
  """c_m = exp(alpha * min(r*_m - r_m, cap)), r_m = exp(2 (mean_k s_k - s_m)) (original) or
  exp(2 (s_m - mean_k s_k)) (BB); r*_m the same on the running means. Scalars in, scalars out."""
  sign = 1.0 if variant == "original" else -1.0
  mean_s = sum(scores.values()) / len(scores)
  mean_S = sum(means.values()) / len(means)
  factor = len(scores) / (len(scores) - 1)
  out = {}
  for m in scores:
    ratio = jnp.exp(sign * factor * (mean_s - scores[m]))
    historical = jnp.exp(sign * factor * (mean_S - means[m]))
    gap = historical - ratio
    out[m] = jnp.exp(alpha * (gap if cap is None else jnp.minimum(gap, cap)))
  return out


def running_means(means: dict[str, jax.Array], scores: dict[str, jax.Array],
                  count: jax.Array) -> dict[str, jax.Array]:
  """Cumulative means after the (count+1)-th score: S (t-1)/t + s/t with t = count + 1."""
  t = (count + 1).astype(jnp.float32)
  return {m: means[m] * (t - 1) / t + scores[m] / t for m in means}


def modulated_logits(responses: dict[str, jax.Array], coeffs: dict[str, jax.Array]) -> jax.Array:
  """sum_m m_m in value; its gradient reaches each m_m scaled by c_m (the backward hooks)."""
  total = sum(jax.lax.stop_gradient(r) for r in responses.values())
  return total + sum(coeffs[m] * (r - jax.lax.stop_gradient(r)) for m, r in responses.items())


def conditional_clip(grads: Any, model: ModelInfo, threshold: float, max_norm: float | None
                     ) -> tuple[Any, jax.Array]:
  """Clips all gradients to global norm `max_norm` when an element of a fusion-head kernel
  gradient (group 'fusion', >= 2-D) lies outside [-threshold, threshold]; (grads, fired)."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(grads)
  head = [g for path, g in leaves if model.group_of(top_key(path)) == "fusion" and g.ndim >= 2]
  if max_norm is None or not head:
    return grads, jnp.zeros((), jnp.bool_)
  fired = jnp.any(jnp.stack([jnp.any(jnp.abs(g) > threshold) for g in head]))
  norm = optax.tree.norm(grads)
  scale = jnp.where(fired, jnp.minimum(max_norm / (norm + CLIP_EPS), 1.0), 1.0)
  return jax.tree.map(lambda g: g * scale.astype(g.dtype), grads), fired


def scale_encoder_grads(grads: Any, coeffs: dict[str, jax.Array], model: ModelInfo) -> Any:
  """BB: every non-1-D gradient of group 'encoder/<m>' times c_m."""

  def scale(group, _, g):
    if group and group.startswith("encoder/") and g.ndim > 1:
      return g * coeffs[group[len("encoder/"):]].astype(g.dtype)
    return g

  return map_groups(grads, model, scale)


def zeroed(batch: dict[str, jax.Array], modality: str) -> dict[str, jax.Array]:
  """The batch with `modality`'s input replaced by zeros (the original's masked input)."""
  return {**batch, modality: jnp.zeros_like(batch[modality])}


class AGM(Method):
  """AGM: Shapley responses from zeroed-input passes, gradients scaled per response (module)."""

  Settings = AGMSettings
  requires = frozenset({"modality_encoders"})
  diagnostics = ("agm_coeff_audio", "agm_coeff_visual", "agm_score_audio", "agm_score_visual",
                 "agm_mean_audio", "agm_mean_visual", "agm_clipped")

  def __init__(self, config: ml_collections.ConfigDict, model: ModelInfo | None = None):
    super().__init__(config, model)
    s = self.settings
    self.variant = s.variant
    self.cap, self.clip_threshold, self.clip_norm = s.resolved()
    self.window = (int(s.modulation_starts),
                   None if s.modulation_ends is None else int(s.modulation_ends))

  def init_state(self, params):
    del params
    # One array per leaf: the train step donates the state, and a buffer may be donated once.
    return {"count": jnp.zeros((), jnp.int32),
            "means": {m: jnp.zeros((), jnp.float32) for m in MODALITIES}}

  def active(self, epoch: jax.Array) -> jax.Array:
    starts, ends = self.window
    return (epoch >= starts) & ((epoch <= ends) if ends is not None else True)

  def update(self, model: ModelFns, tx: optax.GradientTransformation, state: TrainState,
             batch: dict[str, jax.Array], ctx: StepContext
             ) -> tuple[TrainState, ModelOutput, Metrics]:
    labels = batch["label"]
    means, count = state.method_state["means"], state.method_state["count"]
    active = self.active(ctx.epoch)
    mask = batch.get("modality_mask")
    original = self.variant == "original"

    def masked_passes(params, model_state):
      """A = f(x_a, 0), V = f(0, x_v) in eval mode (BatchNorm running statistics)."""
      a_only, _ = model.forward(params, model_state, zeroed(batch, "visual"), train=False,
                                modality_mask=mask)
      v_only, _ = model.forward(params, model_state, zeroed(batch, "audio"), train=False,
                                modality_mask=mask)
      return a_only.logits, v_only.logits

    def coefficients(responses):
      scores = {m: response_score(r, labels) for m, r in responses.items()}
      coeffs = agm_coefficients(scores, means, self.settings.alpha, self.cap, self.variant)
      one = jnp.ones((), jnp.float32)
      return scores, {m: jnp.where(active, c, one) for m, c in coeffs.items()}

    if not original:  # BB: before the train-mode pass, pre-step statistics, no gradient.
      bb_a, bb_v = jax.lax.stop_gradient(masked_passes(state.params, state.model_state))

    def loss_fn(params):
      output, model_state = model.forward(params, state.model_state, batch)
      if original:
        a_only, v_only = masked_passes(params, jax.lax.stop_gradient(model_state))
      else:
        a_only, v_only = bb_a, bb_v
      responses = shapley_responses(output.logits, a_only, v_only, self.variant)
      scores, coeffs = coefficients(responses)
      logits = modulated_logits(responses, coeffs) if original else output.logits
      loss, task_metrics = self.task.loss(logits, batch)
      return loss, (output, model_state, scores, coeffs, task_metrics)

    (loss, (output, model_state, scores, coeffs, task_metrics)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    if not original:
      grads = scale_encoder_grads(grads, coeffs, ctx.model)
    grads, clipped = conditional_clip(grads, ctx.model, self.clip_threshold, self.clip_norm)
    new_means = running_means(means, scores, count)
    method_state = {"count": count + 1, "means": new_means}
    new_state = apply_gradients(tx, state, grads, learning_rate=ctx.learning_rate,
                                model_state=model_state, method_state=method_state)
    metrics = {**task_metrics, "loss": loss, "agm_clipped": clipped.astype(jnp.float32)}
    for m in MODALITIES:
      metrics.update({f"agm_coeff_{m}": coeffs[m], f"agm_score_{m}": scores[m],
                      f"agm_mean_{m}": new_means[m]})
    return new_state, output, metrics


METHODS.register("agm")(AGM)
