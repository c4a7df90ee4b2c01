"""Flax NNX models, registered by name in MODELS (`config.model.name`).

A model factory takes (config, num_classes, overrides, rngs): `overrides` are keyword arguments a
method needs (e.g. MMCosine's cosine head) merged over `config.model.fusion_kwargs`.
"""

from __future__ import annotations

from typing import Any, Callable

import ml_collections
from flax import nnx

from avjax.models.classifier import AVClassifier
from avjax.models.fusion import FUSIONS
from avjax.models.outputs import MODALITIES, ModelOutput
from avjax.registry import ConfigError, Registry

ModelFactory = Callable[[ml_collections.ConfigDict, int, dict[str, Any], nnx.Rngs], nnx.Module]
MODELS: Registry[ModelFactory] = Registry("model")


@MODELS.register("av_resnet")
def av_resnet(config: ml_collections.ConfigDict, num_classes: int, overrides: dict[str, Any],
              rngs: nnx.Rngs) -> AVClassifier:
  """Two ResNet-18 encoders (audio spectrogram or flow frames, visual frames) and a late-fusion
  head."""
  m = config.model
  return AVClassifier(num_classes=num_classes, fusion=m.fusion,
                      fusion_kwargs={**fusion_kwargs(m), **overrides},
                      widths=tuple(m.widths), audio_encoder=m.audio_encoder,
                      audio_channels=m.audio_channels, visual_channels=m.visual_channels,
                      init=m.init, remat=m.remat, rngs=rngs)


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
    return MODELS.get(config.model.name)(config, num_classes, overrides, rngs)
  except ConfigError:
    raise
  except (TypeError, ValueError) as e:  # A key the constructor does not take, or a bad value.
    raise ConfigError(f"config.model settings do not fit model {config.model.name!r} "
                      f"(fusion {config.model.fusion!r}): {type(e).__name__}: {e}") from e


def section_kwargs(config: ml_collections.ConfigDict, section: str) -> dict[str, Any]:
  """`config.model.<section>` as constructor keyword arguments ({} when the config has none)."""
  value = config.model.get(section)
  return value.to_dict() if value is not None else {}


__all__ = ["MODELS", "MODALITIES", "ModelOutput", "build_model", "check_fusion", "section_kwargs"]
from avjax.models import vat  # noqa: E402,F401  (registers)
from avjax.models import cmvqvae  # noqa: E402,F401  (registers)
from avjax.models import vavl  # noqa: E402,F401  (registers)
from avjax.models import auxformer  # noqa: E402,F401  (registers)
