"""The audio-visual classifier of OGM-GE / MMCosine: two ResNet-18 encoders and a late-fusion head."""

from __future__ import annotations

from typing import Any, Sequence

import jax
from flax import nnx

from avjax.models.fusion import FUSIONS, dense
from avjax.models.outputs import MODALITIES, ModelOutput, apply_modality_mask
from avjax.models.resnet import AudioEncoder, VisualEncoder


MODALITY_HEADS = ("slices", "separate")


class AVClassifier(nnx.Module):
  """Audio and visual ResNet-18 encoders, pooled features, a registered fusion head.

  Inputs: {'audio': (B,F,T,audio_channels), 'visual': (B,T,H,W,visual_channels)}, float; with
  `audio_encoder='frames'` the audio slot holds frames too, (B,T,H,W,audio_channels) (UCF101's
  optical flow), encoded as the visual frames are.
  Parameter groups: 'encoder/audio', 'encoder/visual' (modality-specific parameters, e.g. for
  OGM-GE's gradient modulation) and 'fusion' (a module from `avjax.models.fusion.FUSIONS`);
  with `modality_heads='separate'` also 'head/audio', 'head/visual'; with `shared_head=True`
  also 'head/shared', one linear head every modality's pooled features go through
  (`shared_logits`; DI-MML's shared classifier).
  Uni-modal logits: `modality_heads='slices'` (default) scores each modality through its part of
  the fusion head (see avjax.models.fusion); 'separate' gives each modality its own linear head
  on its pooled features (MMPareto, G-Blending, ... as their authors' code does), trained only
  through the losses a method puts on them.
  Train / eval: `model.train()` / `model.eval()` (BatchNorm batch vs running statistics).
  """

  def __init__(
      self,
      *,
      num_classes: int,
      fusion: str = "concat",
      fusion_kwargs: dict[str, Any] | None = None,
      widths: Sequence[int] = (64, 128, 256, 512),
      audio_encoder: str = "spectrogram",
      audio_channels: int = 1,
      visual_channels: int = 3,
      init: str = "ogm_ge",
      remat: bool = False,
      modality_heads: str = "slices",
      shared_head: bool = False,
      rngs: nnx.Rngs,
  ):
    self.num_classes = num_classes
    self.fusion_name = fusion
    self.input_channels = (("audio", audio_channels), ("visual", visual_channels))
    encoders = {"spectrogram": AudioEncoder, "frames": VisualEncoder}
    if audio_encoder not in encoders:
      raise ValueError(f"audio_encoder={audio_encoder!r} is not one of {tuple(encoders)}.")
    self.audio_encoder = encoders[audio_encoder](audio_channels, widths=widths, init=init,
                                                 remat=remat, rngs=rngs)
    self.visual_encoder = VisualEncoder(visual_channels, widths=widths, init=init, remat=remat,
                                        rngs=rngs)
    fusion_cls = FUSIONS.get(fusion)
    self.fusion = fusion_cls(
        self.audio_encoder.out_features, num_classes, init=init, rngs=rngs, **(fusion_kwargs or {}))
    if modality_heads not in MODALITY_HEADS:
      raise ValueError(f"modality_heads={modality_heads!r} is not one of {MODALITY_HEADS}.")
    self.modality_heads = modality_heads
    if modality_heads == "separate":
      dim = self.audio_encoder.out_features
      self.audio_head = dense(dim, num_classes, init=init, rngs=rngs)
      self.visual_head = dense(dim, num_classes, init=init, rngs=rngs)
    self.has_shared_head = shared_head
    if shared_head:
      self.shared_head = dense(self.audio_encoder.out_features, num_classes, init=init, rngs=rngs)

  def param_groups(self) -> dict[str, tuple[str, ...]]:
    groups = {"encoder/audio": ("audio_encoder",), "encoder/visual": ("visual_encoder",),
              "fusion": ("fusion",)}
    if self.modality_heads == "separate":
      groups.update({"head/audio": ("audio_head",), "head/visual": ("visual_head",)})
    if self.has_shared_head:
      groups["head/shared"] = ("shared_head",)
    return groups

  def shared_logits(self, features: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """The shared head on each modality's pooled features: {m: (B, C)} (needs shared_head)."""
    return {m: self.shared_head(features[m]) for m in MODALITIES}

  @property
  def feature_dim(self) -> int:
    """The pooled width D of each modality's features (ModelInfo.feature_dim)."""
    return self.audio_encoder.out_features

  def encode(self, inputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Pooled features {'audio': (B,D), 'visual': (B,D)}."""
    return {
        "audio": self.audio_encoder(inputs["audio"]),
        "visual": self.visual_encoder(inputs["visual"]),
    }

  def fuse(self, features: dict[str, jax.Array]) -> ModelOutput:
    """Fusion head on pooled features {'audio': (B,D), 'visual': (B,D)} -> ModelOutput."""
    out = self.fusion(features)
    modality_logits = dict(out.modality_logits)
    if self.modality_heads == "separate":
      modality_logits = {"audio": self.audio_head(features["audio"]),
                         "visual": self.visual_head(features["visual"])}
    return ModelOutput(
        logits=out.logits, modality_logits=modality_logits,
        features={m: features[m] for m in MODALITIES},
        head_inputs={m: out.head_inputs[m] for m in MODALITIES})

  def __call__(
      self, inputs: dict[str, jax.Array], modality_mask: jax.Array | None = None
  ) -> ModelOutput:
    """Encode, optionally mask, fuse.

    Args:
      inputs: {'audio': (B,F,T,Ca), 'visual': (B,T,H,W,Cv)}.
      modality_mask: optional (B, 2) float weights in `MODALITIES` order ('audio', 'visual'), multiplied
        onto the pooled features before fusion (0 removes a modality; fusion-agnostic).
    Returns:
      ModelOutput with fused and per-modality logits (B,C), masked pooled features (B,D) and
      head_inputs (B,D') per modality.
    """
    return self.fuse(apply_modality_mask(self.encode(inputs), modality_mask))

