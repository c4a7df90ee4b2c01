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
