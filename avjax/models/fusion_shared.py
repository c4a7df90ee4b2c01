"""'shared_head': one linear classifier shared by every modality (MLA, CVPR 2024).

There is no fusion layer: each modality's pooled features are scored by the same head,
logits_m = h_m W + b (W: (D, C)), MLA-R's `fc_out` of input size 512 under --gs_flag and
BalanceBenchmark's SharedHead. The fused logits are the equal-weight mean of the modality logits
(a method may replace them with its own inference rule, e.g. MLA's entropy-weighted fusion).
With `cosine_scale=s` each modality is scored by s * cos(h_m, w_c) instead, without bias.
"""

from __future__ import annotations

import jax
from flax import nnx

from avjax.models.fusion import FUSIONS, FusionOutput, cosine_logits, dense


@FUSIONS.register("shared_head")
class SharedHead(nnx.Module):
  """One head for all modalities. {'audio': (B,D), 'visual': (B,D)} -> FusionOutput (B,C)."""

  def __init__(self, dim: int, num_classes: int, *, init: str = "ogm_ge", rngs: nnx.Rngs,
               cosine_scale: float | None = None):
    if cosine_scale is not None and not cosine_scale > 0:
      raise ValueError(f"cosine_scale must be positive or None, got {cosine_scale}.")
    self.dim = dim
    self.cosine_scale = None if cosine_scale is None else float(cosine_scale)
    self.fc_out = dense(dim, num_classes, init=init, rngs=rngs)

  def score(self, h: jax.Array) -> jax.Array:
    """(B, D) features of any modality -> (B, C) logits."""
    if self.cosine_scale is not None:
      return cosine_logits(h, self.fc_out.kernel[...], self.cosine_scale)
    return self.fc_out(h)

  def __call__(self, features: dict[str, jax.Array]) -> FusionOutput:
    a, v = features["audio"], features["visual"]
    if a.shape[-1] != self.dim or v.shape[-1] != self.dim:
      raise ValueError(f"SharedHead expects (B, {self.dim}) features, got audio {a.shape}, "
                       f"visual {v.shape}.")
    modality_logits = {"audio": self.score(a), "visual": self.score(v)}
    logits = (modality_logits["audio"] + modality_logits["visual"]) / 2
    return FusionOutput(logits=logits, modality_logits=modality_logits,
                        head_inputs={"audio": a, "visual": v})
