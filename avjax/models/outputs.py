"""The one output structure every model returns and every method and metric reads."""

from __future__ import annotations

import flax.struct
import jax

MODALITIES = ("audio", "visual")


@flax.struct.dataclass
class ModelOutput:
  """What a forward pass produces.

  Attributes:
    logits: (B, C) fused logits (or (B, R) regression outputs).
    modality_logits: modality name -> (B, C) logits from that modality alone, defined for every fusion.
    features: modality name -> (B, D) pooled per-modality features (the fusion's inputs).
    aux: auxiliary outputs (VQ losses, reconstructions, mask statistics, ...), name -> array.
  """

  logits: jax.Array
  modality_logits: dict[str, jax.Array]
  features: dict[str, jax.Array]
  aux: dict[str, jax.Array] = flax.struct.field(default_factory=dict)


def apply_modality_mask(features: dict[str, jax.Array], modality_mask: jax.Array | None
                        ) -> dict[str, jax.Array]:
  """Scales each modality's features (B, ...) by its column of a (B, M) mask in MODALITIES order
  (0 removes the modality): the one fusion-agnostic removal point every model uses. Other keys and
  a None mask pass unchanged."""
  if modality_mask is None:
    return features
  if modality_mask.ndim != 2 or modality_mask.shape[1] != len(MODALITIES):
    raise ValueError(f"modality_mask must be (B, {len(MODALITIES)}), got {modality_mask.shape}.")
  scaled = {}
  for i, m in enumerate(MODALITIES):
    x = features[m]
    scaled[m] = x * modality_mask[:, i].reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype)
  return {**features, **scaled}
