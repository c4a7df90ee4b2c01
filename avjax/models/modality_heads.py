"""Where the objective-level balancing methods take their uni-modal logits from (av_resnet and its
variants; a helper of those methods, kept out of avjax/methods/ where every module is a method).

'separate': the model's own linear head per modality (av_resnet's override
`modality_heads='separate'`, parameter groups 'head/<modality>'), as the authors' code has them
(G-Blending, MMPareto, LFM) and as the intended forms use them.
'slices': each modality's part of the fusion head (BalanceBenchmark's form: for concat
z_m = W[:, m] h_m + b/2, so z_audio + z_visual = z). Only fusions whose fused logits are the sum of
their per-modality logits have such slices: concat, sum, and film / gated in their symmetric
'mmcosine' form (`sums_modality_logits`, the same test as the model's 'class_mask' capability).
"""

from __future__ import annotations

import ml_collections

from avjax.models.class_mask import is_additive
from avjax.models.classifier import MODALITY_HEADS
from avjax.registry import ConfigError

HEADS = tuple(sorted(MODALITY_HEADS))  # ('separate', 'slices').
VARIANTS = ("intended", "balancebenchmark")


def sums_modality_logits(config: ml_collections.ConfigDict) -> bool:
  """Whether the configured fusion's logits are the sum of its per-modality logits (slices)."""
  return is_additive(config.model.fusion, config.model.fusion_kwargs.get("form", "ogm_ge"))


def check_variant(variant: str) -> None:
  if variant not in VARIANTS:
    raise ConfigError(f"config.method.variant={variant!r} is not one of {VARIANTS} ('intended': "
                      "the paper's evident intent, the default; 'balancebenchmark': BB's code).")


def resolve(variant: str, heads: str | None) -> str:
  """The uni-modal logits a method uses: `heads` if given, else separate heads for the intended
  form and BalanceBenchmark's slices for its variant."""
  if heads is None:
    return "slices" if variant == "balancebenchmark" else "separate"
  if heads not in HEADS:
    raise ConfigError(f"config.method.modality_heads={heads!r} is not one of {HEADS} (None: "
                      "'separate' for the intended form, 'slices' for variant='balancebenchmark').")
  return heads


def check_fusion(config: ml_collections.ConfigDict, heads: str) -> None:
  """ConfigError when slices are asked of a fusion whose fused logits are not their sum."""
  if heads == "slices" and not sums_modality_logits(config):
    raise ConfigError(
        f"method {config.method.name!r} with uni-modal logits from fusion-head slices needs a "
        "fusion whose logits are the sum of its per-modality slices (concat, sum; film / gated "
        f"with fusion_kwargs.form='mmcosine'), not config.model.fusion={config.model.fusion!r}; "
        "change the fusion or set config.method.modality_heads='separate'.")
