"""The one output structure every model returns and every method and evaluator reads.

Besides the fused and per-modality logits every model has, `ModelOutput` carries typed optional
fields for what some models produce and some methods read (head inputs, reconstructions, VQ
statistics, embeddings, ...). A model that fills a field declares the matching capability
(`avjax.models.contract`), so a method's needs are checked against the model before compiling;
methods never read anything else of a model.
"""

from __future__ import annotations

import flax.struct
import jax

MODALITIES = ("audio", "visual")


@flax.struct.dataclass
class Quantization:
  """One modality's vector quantizer statistics (capability 'quantization').

  Attributes:
    loss: scalar VQ loss (commitment, plus the codebook loss for the plain quantizer).
    perplexity: scalar perplexity of this batch's code usage.
    codes: (B, h, w) int32 code indices.
    num_codes: codebook size K (static).
  """

  loss: jax.Array
  perplexity: jax.Array
  codes: jax.Array
  num_codes: int = flax.struct.field(pytree_node=False, default=0)


@flax.struct.dataclass
class FusionMask:
  """A learned channel mask over the fused features (capability 'fusion_mask'; CM-VQVAE).

  Attributes:
    values: (2D,) the raw mask (visual channels first).
    thresholded: (2D,) the mask as applied in the forward pass.
    shared: modality -> scalar count of that modality's channels the mask keeps (shared).
  """

  values: jax.Array
  thresholded: jax.Array
  shared: dict[str, jax.Array]


@flax.struct.dataclass
class ModelOutput:
  """What a forward pass produces.

  Attributes:
    logits: (B, C) fused logits (or (B, R) regression outputs).
    modality_logits: modality name -> (B, C) logits from that modality alone.
    features: modality name -> (B, D) pooled per-modality features (the fusion's inputs).
    head_inputs: modality -> (B, D') vectors scored by the final classifier ('head_inputs').
    joint_logits: (B, C) the joint network's logits next to auxiliary uni-modal heads, whose
      average is `logits` ('joint_logits'; AuxFormer).
    reconstructions: modality -> reconstruction of its input ('reconstructions').
    quantization: modality -> `Quantization` ('quantization').
    fusion_mask: `FusionMask` ('fusion_mask').
    embeddings: modality -> (B, E) L2-normalised embeddings ('embeddings').
    tokens: modality -> (B, N, D) token sequences the fusion reads ('tokens').
    regression: (B, R) fused regression outputs; modality_regression: modality -> (B, R)
      ('regression').
    residual_logits: modality -> (B, K, C) logits of K pre-allocated residual classifiers,
      of which a method uses the active ones ('residual_classifiers'; AUG).
  """

  logits: jax.Array
  modality_logits: dict[str, jax.Array]
  features: dict[str, jax.Array]
  head_inputs: dict[str, jax.Array] | None = None
  joint_logits: jax.Array | None = None
  reconstructions: dict[str, jax.Array] | None = None
  quantization: dict[str, Quantization] | None = None
  fusion_mask: FusionMask | None = None
  embeddings: dict[str, jax.Array] | None = None
  tokens: dict[str, jax.Array] | None = None
  regression: jax.Array | None = None
  modality_regression: dict[str, jax.Array] | None = None
  residual_logits: dict[str, jax.Array] | None = None


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
