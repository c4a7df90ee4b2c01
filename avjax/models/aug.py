"""`av_resnet_aug`: AUG's classifiers (Jiang, Huang, Yang, NeurIPS 2025) on av_resnet's encoders.

Per modality m, pooled features z_m (B, D) from av_resnet's ResNet-18 encoders, then
(njustkmg/NeurIPS25-AUG @ 841d079, model/AudioVideo.py:47-74):

  base classifier       b_m   = F(ReLU(G_m z_m))        G_m: Linear(D -> H)
  residual classifier j r_m,j = F(ReLU(H_m,j z_m))      H_m,j: Linear(D -> H), xavier-normal / 0
  F: Linear(H -> C), one last layer shared by both modalities and every classifier.

AUG adds residual classifiers during training; a parameter tree has a fixed shape, so K residual
slots per modality are allocated up front (the override `residual_slots`, the method's maximum)
as one stacked kernel (K, D, H) and bias (K, H); which slots are in use is the method's state
(AUG's `active` counts), and a slot's parameters are its initialisation until the method activates
it. H = D / 2 (AUG: 512 -> 256).

Calls (capability 'residual_classifiers'): features(inputs, m) -> z_m (B, D);
classify(z, m) -> (b_m (B, C), residual logits (B, K, C)); __call__(inputs, modality_mask) ->
ModelOutput with modality_logits = the base classifiers, logits = their sum and residual_logits
(the method composes the ensembles, avjax/methods/aug.py). config.model.fusion must be 'sum' (the
prediction is a weighted sum of the modalities' ensembles); no fusion module exists.
Parameter groups: 'encoder/<m>', 'head/<m>' (G_m), 'residual/<m>' (the slots), 'shared' (F).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from avjax.models import av_resnet_kwargs, register_model
from avjax.models.fusion import dense
from avjax.models.outputs import MODALITIES, ModelOutput, apply_modality_mask
from avjax.models.resnet import AudioEncoder, VisualEncoder


class ResidualSlots(nnx.Module):
  """K stacked Linear(D -> H) layers, each xavier-normal with zero bias. (B,D) -> (B,K,H)."""

  def __init__(self, slots: int, dim: int, hidden: int, *, rngs: nnx.Rngs):
    init = nnx.initializers.variance_scaling(1.0, "fan_avg", "normal")
    keys = jax.random.split(rngs.params(), slots)
    self.kernel = nnx.Param(jnp.stack([init(k, (dim, hidden), jnp.float32) for k in keys]))
    self.bias = nnx.Param(jnp.zeros((slots, hidden), jnp.float32))

  def __call__(self, z: jax.Array) -> jax.Array:
    return jnp.einsum("bd,kdh->bkh", z, self.kernel[...]) + self.bias[...]


class AUGClassifier(nnx.Module):
  """Two ResNet-18 encoders, a base classifier per modality, K residual slots per modality and a
  shared last layer. Inputs as av_resnet's."""

  def __init__(self, *, num_classes: int, residual_slots: int, widths=(64, 128, 256, 512),
               audio_encoder: str = "spectrogram", audio_channels: int = 1,
               visual_channels: int = 3, init: str = "ogm_ge", remat: bool = False,
               rngs: nnx.Rngs):
    if residual_slots < 1:
      raise ValueError(f"residual_slots={residual_slots} must be >= 1.")
    self.feature_dim = widths[-1]  # ModelInfo.feature_dim: the encoders' pooled width.
    self.input_channels = (("audio", audio_channels), ("visual", visual_channels))
    encoders = {"spectrogram": AudioEncoder, "frames": VisualEncoder}
    if audio_encoder not in encoders:
      raise ValueError(f"audio_encoder={audio_encoder!r} is not one of {tuple(encoders)}.")
    self.audio_encoder = encoders[audio_encoder](audio_channels, widths=widths, init=init,
                                                 remat=remat, rngs=rngs)
    self.visual_encoder = VisualEncoder(visual_channels, widths=widths, init=init, remat=remat,
                                        rngs=rngs)
    dim = self.audio_encoder.out_features
    hidden = max(dim // 2, 1)
    self.audio_base = dense(dim, hidden, init=init, rngs=rngs)
    self.visual_base = dense(dim, hidden, init=init, rngs=rngs)
    self.audio_residuals = ResidualSlots(residual_slots, dim, hidden, rngs=rngs)
    self.visual_residuals = ResidualSlots(residual_slots, dim, hidden, rngs=rngs)
    self.shared_head = dense(hidden, num_classes, init=init, rngs=rngs)

  def param_groups(self) -> dict[str, tuple[str, ...]]:
    groups = {"shared": ("shared_head",)}
    for m in MODALITIES:
      groups.update({f"encoder/{m}": (f"{m}_encoder",), f"head/{m}": (f"{m}_base",),
                     f"residual/{m}": (f"{m}_residuals",)})
    return groups

  def features(self, inputs: dict[str, jax.Array], modality: str) -> jax.Array:
    """Pooled features (B, D) of one modality."""
    encoder = self.audio_encoder if modality == "audio" else self.visual_encoder
    return encoder(inputs[modality])

  def classify(self, z: jax.Array, modality: str) -> tuple[jax.Array, jax.Array]:
    """(base logits (B, C), every residual slot's logits (B, K, C)) from features (B, D)."""
    base = self.audio_base if modality == "audio" else self.visual_base
    slots = self.audio_residuals if modality == "audio" else self.visual_residuals
    return self.shared_head(nnx.relu(base(z))), self.shared_head(nnx.relu(slots(z)))

  def __call__(self, inputs: dict[str, jax.Array], modality_mask: jax.Array | None = None
               ) -> ModelOutput:
    features = apply_modality_mask({m: self.features(inputs, m) for m in MODALITIES},
                                   modality_mask)
    base, residual = {}, {}
    for m in MODALITIES:
      base[m], residual[m] = self.classify(features[m], m)
    return ModelOutput(logits=base["audio"] + base["visual"], modality_logits=base,
                       features=features, residual_logits=residual)


@register_model("av_resnet_aug",
                lambda c: {"task_outputs", "modality_logits", "residual_classifiers"},
                remat_key="")
def av_resnet_aug(config: ml_collections.ConfigDict, num_classes: int, overrides: dict[str, Any],
                  rngs: nnx.Rngs) -> AUGClassifier:
  """av_resnet's encoders (config.model.av_resnet); the method's override `residual_slots` sizes
  the residual slots."""
  overrides = dict(overrides)
  slots = int(overrides.pop("residual_slots", 1))
  if overrides:
    raise ValueError(f"av_resnet_aug takes no constructor arguments {sorted(overrides)}.")
  return AUGClassifier(num_classes=num_classes, residual_slots=slots, **av_resnet_kwargs(config),
                       rngs=rngs)
