"""`ogm` / `ogm_ge`: On-the-fly Gradient Modulation (+ Generalization Enhancement), CVPR 2022.

The loss is plain cross-entropy on the fused logits. Before the optimizer, the gradients of the
dominant modality's encoder are damped according to how much more confident that modality is on the
true labels than the other one (OGM-GE main.py at HEAD 343dc1d, lines 80-153):

  s_m   = sum_i softmax(out_m)_i[y_i]                      (batch SUMS over the global batch)
  rho_v = s_v / s_a,  rho_a = 1 / rho_v
  rho_v > 1:  k_v = 1 - tanh(alpha * relu(rho_v)),  k_a = 1
  else:       k_a = 1 - tanh(alpha * relu(rho_a)),  k_v = 1 (so rho_v == 1 modulates audio)

Inside the inclusive window `modulation_starts <= epoch <= modulation_ends` (0-indexed epochs) every
4-D gradient (conv kernels, including the 1x1 downsample convs) in the model's parameter groups
'encoder/audio' / 'encoder/visual' is multiplied by its modality's k; BatchNorm parameters and
the fusion head are never touched. OGM-GE also adds N(0, sigma^2) noise to each of those tensors, sigma = unbiased std of the unmodulated gradient
tensor + 1e-8, for BOTH modalities (the one with k = 1 too). Outside the window the gradients pass
unchanged. Weight decay and momentum act afterwards, in the optimizer chain, unscaled by k.

Note that k jumps from 1 to 1 - tanh(alpha) as rho crosses 1 (0.336 for alpha 0.8): the reference
does this and so does avjax.

Config keys (config.method.*, defaults when absent): alpha (0.8, the README's CREMA-D value),
modulation_starts (0), modulation_ends (50).

Logged metrics: ogm_ratio_visual (rho_v), ogm_coeff_audio / ogm_coeff_visual (the coefficients
actually applied this step: 1 outside the window).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from avjax.methods import base
from avjax.methods.base import METHODS, Method, Metrics, StepContext
from avjax.models.contract import ModelInfo, map_groups
from avjax.models.outputs import ModelOutput
from avjax.registry import ConfigError

NOISE_EPS = 1e-8
ENCODER_GROUP = "encoder/"  # Groups 'encoder/<modality>': only their gradients are modulated.


@dataclasses.dataclass(frozen=True)
class OGMSettings(base.Settings):
  """alpha: modulation strength (0.8: the OGM-GE README's CREMA-D value; 0 disables).
  modulation_starts / modulation_ends: the inclusive window of 0-indexed epochs (OGM-GE main.py
  defaults 0 and 50)."""

  alpha: float = 0.8
  modulation_starts: int = 0
  modulation_ends: int = 50

  def __post_init__(self):
    super().__post_init__()
    if not self.alpha >= 0:
      raise ConfigError(f"config.method.alpha={self.alpha!r} must be >= 0 (0 disables modulation).")
    if self.modulation_starts < 0 or self.modulation_ends < self.modulation_starts:
      raise ConfigError(
          f"config.method.modulation_starts={self.modulation_starts} / modulation_ends="
          f"{self.modulation_ends}: the inclusive window of 0-indexed epochs needs "
          "0 <= modulation_starts <= modulation_ends.")


def ogm_coefficients(modality_logits: dict[str, jax.Array], labels: jax.Array,
                     alpha: float | jax.Array) -> dict[str, jax.Array]:
  """OGM's modulation coefficients from uni-modal logits.

  Args:
    modality_logits: {'audio': (B,C), 'visual': (B,C)} logits (gradients are stopped here).
    labels: (B,) integer labels.
    alpha: modulation strength.
  Returns:
    {'audio', 'visual'}: scalar coefficients k in (0, 1]; 'ratio_visual': scalar rho_v = s_v / s_a.
    The sums run over the whole (global) batch, so the result does not depend on the device count.
  """
  scores = base.true_class_scores(modality_logits, labels)
  tiny = jnp.finfo(jnp.float32).tiny  # Only guards 0/0; softmax scores are positive in practice.
  ratio_v = scores["visual"] / jnp.maximum(scores["audio"], tiny)
  ratio_a = 1.0 / ratio_v
  visual_leads = ratio_v > 1.0
  damp = lambda r: 1.0 - jnp.tanh(alpha * jax.nn.relu(r))
  return {
      "audio": jnp.where(visual_leads, 1.0, damp(ratio_a)),
      "visual": jnp.where(visual_leads, damp(ratio_v), 1.0),
      "ratio_visual": ratio_v,
  }


def in_window(epoch: jax.Array, starts: int, ends: int) -> jax.Array:
  """Whether 0-indexed `epoch` lies in the inclusive modulation window [starts, ends]."""
  return (epoch >= starts) & (epoch <= ends)


def encoder_modality(group: str | None, leaf: jax.Array) -> str | None:
  """'audio' / 'visual' for a 4-D gradient leaf in group 'encoder/<modality>', else None."""
  if getattr(leaf, "ndim", 0) != 4 or not group or not group.startswith(ENCODER_GROUP):
    return None
  return group[len(ENCODER_GROUP):]


def modulate_grads(grads: Any, coeffs: dict[str, jax.Array], rng: jax.Array | None,
                   model: ModelInfo) -> Any:
  """Scales every 4-D encoder gradient by its modality's coefficient; adds GE noise if `rng`.

  Args:
    grads: gradient pytree (an nnx.State of the model params).
    coeffs: {'audio': scalar, 'visual': scalar}.
    rng: None for OGM; for OGM-GE the step key, folded with each leaf's index so every tensor draws
      its own noise.
    model: the model's parameter groups ('encoder/<modality>' are modulated).
  Returns:
    Same structure; leaves that are not 4-D encoder kernels are returned as they are.
  """

  def modulate(group: str | None, index: int, g: jax.Array) -> jax.Array:
    modality = encoder_modality(group, g)
    if modality is None:
      return g
    new = g * coeffs[modality].astype(g.dtype)
    if rng is not None:
      sigma = (jnp.std(g.astype(jnp.float32), ddof=1) if g.size > 1 else 0.0) + NOISE_EPS
      noise = jax.random.normal(jax.random.fold_in(rng, index), g.shape, jnp.float32)
      new = new + (sigma * noise).astype(g.dtype)
    return new

  return map_groups(grads, model, modulate)


class OGM(Method):
  """OGM: cross-entropy; the dominant modality's encoder conv gradients scaled by k (see module)."""

  Settings = OGMSettings
  requires = frozenset({"modality_logits", "modality_encoders"})
  diagnostics = ("ogm_coeff_audio", "ogm_coeff_visual", "ogm_ratio_visual")

  noise = False

  def __init__(self, config: ml_collections.ConfigDict, model: ModelInfo | None = None):
    super().__init__(config, model)
    self.alpha = float(self.settings.alpha)
    self.starts = int(self.settings.modulation_starts)
    self.ends = int(self.settings.modulation_ends)

  def transform_grads(self, grads: Any, output: ModelOutput, batch: dict[str, jax.Array],
                      state: Any, ctx: StepContext) -> tuple[Any, Any, Metrics]:
    coeffs = ogm_coefficients(output.modality_logits, batch["label"], self.alpha)
    active = in_window(ctx.epoch, self.starts, self.ends)
    rng = ctx.rng if self.noise else None
    grads = jax.lax.cond(active, lambda g: modulate_grads(g, coeffs, rng, ctx.model),
                         lambda g: g, grads)
    one = jnp.ones((), jnp.float32)
    metrics = {
        "ogm_coeff_audio": jnp.where(active, coeffs["audio"], one),
        "ogm_coeff_visual": jnp.where(active, coeffs["visual"], one),
        "ogm_ratio_visual": coeffs["ratio_visual"],
    }
    return grads, state, metrics


class OGMGE(OGM):
  """OGM-GE: OGM plus Gaussian noise (per-tensor gradient std) on both encoders' conv gradients."""

  noise = True


METHODS.register("ogm")(OGM)
METHODS.register("ogm_ge")(OGMGE)
