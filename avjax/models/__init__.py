"""Flax NNX models, registered by name in MODELS (`config.model.name`) as `ModelSpec`s.

A model factory takes (config, num_classes, overrides, rngs): `overrides` are keyword arguments a
method needs (e.g. MMCosine's cosine head) merged over `config.model.fusion_kwargs`. Each model
declares its capabilities and parameter groups (avjax/models/contract.py).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import ml_collections
from flax import nnx

from avjax.models import modality_heads
from avjax.models.class_mask import ClassMaskClassifier
from avjax.models.classifier import AVClassifier
from avjax.models.contract import ModelInfo, ModelSpec, model_info
from avjax.models.fusion import FUSIONS
from avjax.models.outputs import MODALITIES, ModelOutput
from avjax.registry import ConfigError, Registry

ModelFactory = Callable[[ml_collections.ConfigDict, int, dict[str, Any], nnx.Rngs], nnx.Module]
MODELS: Registry[ModelSpec] = Registry("model")


def register_model(name: str, capabilities: Callable[[ml_collections.ConfigDict], Iterable[str]],
                   hints: dict[str, str] | None = None,
                   remat_key: str = "") -> Callable[[ModelFactory], ModelFactory]:
  """Registers a model factory with its capabilities (a function of the config), hints and the
  config key of its backward-pass recomputation."""

  def decorator(factory: ModelFactory) -> ModelFactory:
    MODELS.register(name)(ModelSpec(build=factory,
                                    capabilities=lambda c: frozenset(capabilities(c)),
                                    hints=dict(hints or {}), remat_key=remat_key))
    return factory

  return decorator


def capabilities(config: ml_collections.ConfigDict) -> frozenset[str]:
  """The configured model's capabilities (before it is built)."""
  return MODELS.get(config.model.name).capabilities(config)


def _av_resnet_capabilities(config: ml_collections.ConfigDict) -> set[str]:
  caps = {"task_outputs", "modality_logits", "encode_fuse", "head_inputs", "modality_encoders",
          "modality_heads", "shared_head"}
  formed = config.model.fusion in ("film", "gated")
  if not formed or config.model.fusion_kwargs.get("form", "ogm_ge") == "mmcosine":
    caps.add("cosine_head")  # A per-modality slice of the final weight.
  if modality_heads.sums_modality_logits(config):
    caps.add("class_mask")  # The fused logits are the sum of the modality logits.
  return caps


@register_model("av_resnet", _av_resnet_capabilities, hints={
    "cosine_head": "fusions 'film' / 'gated' have a per-modality slice of the final weight only "
                   "in their symmetric form: set config.model.fusion_kwargs.form='mmcosine'",
    "class_mask": "the fused logits must be the sum of the modality logits: set "
                  "config.model.fusion to 'concat' or 'sum' (film / gated: "
                  "config.model.fusion_kwargs.form='mmcosine')"},
                remat_key="model.av_resnet.remat")
def av_resnet(config: ml_collections.ConfigDict, num_classes: int, overrides: dict[str, Any],
              rngs: nnx.Rngs) -> AVClassifier:
  """Two ResNet-18 encoders (audio spectrogram or flow frames, visual frames) and a late-fusion
  head; settings in `config.model.av_resnet`, the fusion in `config.model.fusion`."""
  overrides = dict(overrides)
  heads = overrides.pop("modality_heads", "slices")
  shared = overrides.pop("shared_head", False)
  model_cls = ClassMaskClassifier if overrides.pop("logit_map", False) else AVClassifier
  return model_cls(num_classes=num_classes, fusion=config.model.fusion, modality_heads=heads,
                   shared_head=shared, fusion_kwargs={**fusion_kwargs(config.model), **overrides},
                   **av_resnet_kwargs(config), rngs=rngs)


def av_resnet_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """`config.model.av_resnet` as encoder keyword arguments: av_resnet's and its variants'
  (av_resnet_mmtm, av_resnet_aug: the same encoders, one section)."""
  m = config.model.av_resnet
  return dict(widths=tuple(m.widths), audio_encoder=m.audio_encoder,
              audio_channels=m.audio_channels, visual_channels=m.visual_channels, init=m.init,
              remat=m.remat)


def fusion_kwargs(model_config: ml_collections.ConfigDict) -> dict[str, Any]:
  """`model.fusion_kwargs` as the chosen fusion takes them: `form` / `condition` exist in every
  config (so the command line can set them) but only film / gated take them, and `condition` only
  in the asymmetric 'ogm_ge' form."""
  kwargs = model_config.fusion_kwargs.to_dict()
  form, condition = kwargs.pop("form", "ogm_ge"), kwargs.pop("condition", "audio")
  if model_config.fusion in ("film", "gated"):
    kwargs["form"] = form
    if form == "ogm_ge":
      kwargs["condition"] = condition
  return kwargs


def check_fusion(name: str) -> None:
  FUSIONS.get(name)


def build_model(config: ml_collections.ConfigDict, num_classes: int,
                overrides: dict[str, Any] | None = None) -> nnx.Module:
  """The configured model, initialised from `config.seed`. An override 'num_classes' (a method's
  regression targets, say) replaces the dataset's class count."""
  overrides = dict(overrides or {})
  num_classes = overrides.pop("num_classes", num_classes)
  rngs = nnx.Rngs(params=config.seed, default=config.seed)
  try:
    return MODELS.get(config.model.name).build(config, num_classes, overrides, rngs)
  except ConfigError:
    raise
  except (TypeError, ValueError) as e:  # A key the constructor does not take, or a bad value.
    raise ConfigError(f"config.model settings do not fit model {config.model.name!r} "
                      f"(fusion {config.model.fusion!r}): {type(e).__name__}: {e}") from e


def section_kwargs(config: ml_collections.ConfigDict, section: str) -> dict[str, Any]:
  """`config.model.<section>` as constructor keyword arguments ({} when the config has none)."""
  value = config.model.get(section)
  return value.to_dict() if value is not None else {}


def info_of(config: ml_collections.ConfigDict, model: nnx.Module,
            num_outputs: int = 0) -> ModelInfo:
  """The built model's ModelInfo (name, capabilities with these settings, parameter groups, the
  width of its logits)."""
  return model_info(config.model.name, capabilities(config), model, num_outputs)


__all__ = ["MODELS", "MODALITIES", "ModelInfo", "ModelOutput", "av_resnet_kwargs", "build_model",
           "capabilities",
           "check_fusion", "info_of", "register_model", "section_kwargs"]
from avjax.models import fusion_shared  # noqa: E402,F401  (registers the fusion)
from avjax.models import vat  # noqa: E402,F401  (registers)
from avjax.models import cmvqvae  # noqa: E402,F401  (registers)
from avjax.models import vavl  # noqa: E402,F401  (registers)
from avjax.models import auxformer  # noqa: E402,F401  (registers)
from avjax.models import speaker  # noqa: E402,F401  (registers)
from avjax.models import mmtm  # noqa: E402,F401  (registers)
from avjax.models import aug  # noqa: E402,F401  (registers)
