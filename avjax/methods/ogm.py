"""`ogm` / `ogm_ge`: On-the-fly Gradient Modulation (+ Generalization Enhancement), CVPR 2022.

The loss is plain cross-entropy on the fused logits. Before the optimizer, the gradients of the
dominant modality's encoder are damped according to how much more confident that modality is on the
true labels than the other one (OGM-GE main.py at HEAD 343dc1d, lines 80-153):

  s_m   = sum_i softmax(out_m)_i[y_i]                      (batch SUMS over the global batch)
  rho_v = s_v / s_a,  rho_a = 1 / rho_v
  rho_v > 1:  k_v = 1 - tanh(alpha * relu(rho_v)),  k_a = 1
  else:       k_a = 1 - tanh(alpha * relu(rho_a)),  k_v = 1 (so rho_v == 1 modulates audio)

Inside the inclusive window `modulation_starts <= epoch <= modulation_ends` (0-indexed epochs) every
4-D gradient (conv kernels, including the 1x1 downsample convs) under `audio_encoder` / `visual_encoder`
is multiplied by its modality's k; BatchNorm parameters and the fusion head are never touched. OGM-GE
also adds N(0, sigma^2) noise to each of those tensors, sigma = unbiased std of the unmodulated gradient
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

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from avjax.methods.base import METHODS, Method, Metrics, StepContext
from avjax.models.outputs import ModelOutput
from avjax.registry import ConfigError

DEFAULTS = {"alpha": 0.8, "modulation_starts": 0, "modulation_ends": 50}
# Top-level attribute of the model (and of its parameter / gradient State) holding each modality's
# encoder; only gradients under these subtrees are modulated.
ENCODERS = {"audio_encoder": "audio", "visual_encoder": "visual"}
NOISE_EPS = 1e-8


def setting(config: ml_collections.ConfigDict, key: str) -> Any:
  """config.method.<key>, or the documented default when the config file did not set it."""
  return config.method.get(key, DEFAULTS[key])


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
  scores = {}
  for m in ("audio", "visual"):
    probs = jax.nn.softmax(jax.lax.stop_gradient(modality_logits[m]).astype(jnp.float32), axis=-1)
    scores[m] = jnp.sum(jnp.take_along_axis(probs, labels[:, None].astype(jnp.int32), axis=-1))
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


def _top_key(path: tuple) -> Any:
  entry = path[0] if path else None
  return getattr(entry, "key", getattr(entry, "name", None))


def encoder_modality(path: tuple, leaf: jax.Array) -> str | None:
  """'audio' / 'visual' for a 4-D gradient leaf under that modality's encoder, else None."""
  if getattr(leaf, "ndim", 0) != 4:
    return None
  return ENCODERS.get(_top_key(path))


def modulate_grads(grads: Any, coeffs: dict[str, jax.Array], rng: jax.Array | None) -> Any:
  """Scales every 4-D encoder gradient by its modality's coefficient; adds GE noise if `rng`.

  Args:
    grads: gradient pytree (an nnx.State of the model params) with `audio_encoder` / `visual_encoder`
      subtrees.
    coeffs: {'audio': scalar, 'visual': scalar}.
    rng: None for OGM; for OGM-GE the step key, folded with each leaf's index so every tensor draws
      its own noise.
  Returns:
    Same structure; leaves that are not 4-D encoder kernels are returned as they are.
  """
  leaves, treedef = jax.tree_util.tree_flatten_with_path(grads)
  out = []
  for index, (path, g) in enumerate(leaves):
    modality = encoder_modality(path, g)
    if modality is None:
      out.append(g)
      continue
    new = g * coeffs[modality].astype(g.dtype)
    if rng is not None:
      sigma = (jnp.std(g.astype(jnp.float32), ddof=1) if g.size > 1 else 0.0) + NOISE_EPS
      noise = jax.random.normal(jax.random.fold_in(rng, index), g.shape, jnp.float32)
      new = new + (sigma * noise).astype(g.dtype)
    out.append(new)
  return jax.tree_util.tree_unflatten(treedef, out)


class OGM(Method):
  """OGM: cross-entropy; the dominant modality's encoder conv gradients scaled by k (see module)."""

  defaults = {**Method.defaults, **DEFAULTS}

  noise = False

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    self.alpha = float(setting(config, "alpha"))
    self.starts = int(setting(config, "modulation_starts"))
    self.ends = int(setting(config, "modulation_ends"))

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    name = config.method.name
    if config.model.name != "av_resnet":
      raise ConfigError(
          f"method {name!r} modulates the gradients of the model's `audio_encoder` and "
          f"`visual_encoder` submodules, which only model 'av_resnet' has (config.model.name="
          f"{config.model.name!r}). Use config.model.name='av_resnet' or another method.")
    alpha = setting(config, "alpha")
    if not alpha >= 0:
      raise ConfigError(f"config.method.alpha={alpha!r} must be >= 0 (0 disables modulation).")
    starts, ends = setting(config, "modulation_starts"), setting(config, "modulation_ends")
    if starts < 0 or ends < starts:
      raise ConfigError(
          f"config.method.modulation_starts={starts} / modulation_ends={ends}: the inclusive "
          "window of 0-indexed epochs needs 0 <= modulation_starts <= modulation_ends.")

  def transform_grads(self, grads: Any, output: ModelOutput, batch: dict[str, jax.Array],
                      state: Any, ctx: StepContext) -> tuple[Any, Any, Metrics]:
    coeffs = ogm_coefficients(output.modality_logits, batch["label"], self.alpha)
    active = in_window(ctx.epoch, self.starts, self.ends)
    rng = ctx.rng if self.noise else None
    grads = jax.lax.cond(active, lambda g: modulate_grads(g, coeffs, rng), lambda g: g, grads)
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
