"""av_resnet with AMCo's extra layer: a learned C x C map on the summed per-modality logits, and
a per-modality mask over class logits (BalanceBenchmark's BaseClassifier_AMCo).

  u_m = the modality's logits (slices of the fusion head: u_a + u_v = the fused logits)
  s = sum_m class_mask[m] * u_m          (class_mask (M, C) in MODALITIES order; 1 = keep)
  logits = L*(s),  L* = Linear(C, C)      (group 'logit_map'; PyTorch's default init, as BB's)

The same L* scores training and evaluation (evaluation passes no mask). The mask is one (C,) row
per modality shared by the whole batch (BB expands it to (2, C) for a 2-GPU DataParallel scatter;
see docs/deviations.md). Built by the av_resnet factory when a method asks for it with the model
override logit_map=True (capability 'class_mask'); only fusions whose fused logits are the sum of
the modality logits have it (sum, concat, and the symmetric 'mmcosine' forms of film / gated).
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from avjax.models.classifier import AVClassifier
from avjax.models.fusion import dense
from avjax.models.outputs import MODALITIES, ModelOutput, apply_modality_mask

ADDITIVE_FUSIONS = ("sum", "concat")  # film / gated only in form 'mmcosine'.


def is_additive(fusion: str, form: str) -> bool:
  """Whether a fusion's fused logits are the sum of its modality logits."""
  return fusion in ADDITIVE_FUSIONS or (fusion in ("film", "gated") and form == "mmcosine")


class ClassMaskClassifier(AVClassifier):
  """AVClassifier plus L* on the (masked) sum of the modality logits. Inputs and outputs as
  AVClassifier; `class_mask` (M, C) masks each modality's logits before the sum (and in
  `modality_logits`)."""

  def __init__(self, *, num_classes: int, rngs: nnx.Rngs, **kwargs: Any):
    super().__init__(num_classes=num_classes, rngs=rngs, **kwargs)
    self.logit_map = dense(num_classes, num_classes, init="mmcosine", rngs=rngs)

  def param_groups(self) -> dict[str, tuple[str, ...]]:
    return {**super().param_groups(), "logit_map": ("logit_map",)}

  def fuse(self, features: dict[str, jax.Array], class_mask: jax.Array | None = None
           ) -> ModelOutput:
    out = super().fuse(features)
    logits = dict(out.modality_logits)
    if class_mask is not None:
      logits = {m: logits[m] * class_mask[i].astype(logits[m].dtype)
                for i, m in enumerate(MODALITIES)}
    summed = sum(logits[m] for m in MODALITIES)
    return out.replace(logits=self.logit_map(summed), modality_logits=logits)

  def __call__(self, inputs: dict[str, jax.Array], modality_mask: jax.Array | None = None,
               class_mask: jax.Array | None = None) -> ModelOutput:
    return self.fuse(apply_modality_mask(self.encode(inputs), modality_mask), class_mask)
