"""Opening TFDS datasets for reading, with a clear error (and the build command) when one is missing.

Datasets that need no download (synthetic_av) are built on first use when `dataset.auto_build`.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from typing import Any

import ml_collections
import tensorflow_datasets as tfds

from avjax.data.records import fast_source
from avjax.registry import ConfigError, did_you_mean


class DatasetNotBuiltError(ConfigError):
  """The dataset's records are not in the data directory; the message says how to build them."""


@dataclasses.dataclass
class Dataset:
  """Random-access sources of one built dataset, per split, and what the model needs to know."""

  name: str
  sources: dict[str, Any]
  num_classes: int
  info: Any


def _import_builder(name: str):
  """Imports data_builders.<name> (registering it with TFDS) if avjax ships that builder."""
  try:
    return importlib.import_module(f"data_builders.{name}")
  except ModuleNotFoundError as e:
    if e.name not in (f"data_builders.{name}", "data_builders"):
      raise
    return None


def _shipped() -> list[str]:
  """The dataset builders avjax ships (data_builders/<name>/)."""
  root = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "data_builders")
  return sorted(n for n in os.listdir(root) if os.path.isfile(os.path.join(root, n, "__init__.py"))
                and n != "common") if os.path.isdir(root) else []


def _build_command(name: str, config: str, data_dir: str) -> str:
  manual = "" if name == "synthetic_av" else " --manual_dir=/path/to/your/download"
  return (f"python -m avjax.tfds build data_builders/{name} --config={config}{manual} "
          f"--data_dir={data_dir}")


def _known_configs(name: str) -> list[str]:
  """The builder configs a registered builder defines ([] for an unknown builder)."""
  try:
    return sorted(tfds.builder_cls(name).builder_configs)
  except tfds.core.registered.DatasetNotFoundError:
    return []  # Reported by open_dataset with the dataset's name.


def _check_builder_config(name: str, config: str) -> None:
  """A config name the registered builder does not define is a config error, with the names."""
  known = _known_configs(name)
  if known and config not in known:
    raise ConfigError(f"Dataset {name!r} has no builder config {config!r}; its configs are "
                      f"{known}. Fix config.dataset.config.")


def open_dataset(dcfg: ml_collections.ConfigDict, splits: list[str], *,
                 split_flag: str = "") -> Dataset:
  """Returns random-access sources for `splits` of `dataset.name`/`dataset.config`. An unknown
  split names `split_flag` (e.g. '--split') when the splits came from one, else the config."""
  data_dir = os.path.expanduser(dcfg.data_dir or tfds.core.constants.DATA_DIR)
  module = _import_builder(dcfg.name)
  full_name = f"{dcfg.name}/{dcfg.config}"
  if dcfg.name == "synthetic_av" and module is not None and dcfg.auto_build:
    _check_builder_config(dcfg.name, dcfg.config)  # Built from a named config (+ overrides).
    builder = module.build(dcfg.config, data_dir=data_dir, **dict(dcfg.build_overrides))
  else:
    unknown = DatasetNotBuiltError(
        f"Unknown dataset {dcfg.name!r}: no TFDS builder of that name is registered and avjax "
        f"ships none under data_builders/{dcfg.name}.{did_you_mean(dcfg.name, _shipped())} "
        "Check config.dataset.name.")
    if module is None and not dcfg.name.isidentifier():  # TFDS cannot even parse such a name.
      raise unknown
    try:
      builder = tfds.builder(full_name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
      raise unknown from e
    except ValueError as e:  # A config neither registered nor built (variants are found on disk).
      base = dcfg.config.split("-")[0]
      if base != dcfg.config and base in _known_configs(dcfg.name):
        raise DatasetNotBuiltError(
            f"Dataset {full_name} (a variant of its {base!r} config) is not built in {data_dir}; "
            f"build it there as data_builders/{dcfg.name}/README.md shows, or fix "
            "config.dataset.data_dir.") from e
      _check_builder_config(dcfg.name, dcfg.config)
      raise DatasetNotBuiltError(f"Dataset {full_name}: {e}") from e
    if not _is_prepared(builder):
      readme = f"data_builders/{dcfg.name}/README.md"
      raise DatasetNotBuiltError(
          f"Dataset {full_name} is not built in {data_dir}.\n"
          f"Build it once with (from the avjax checkout; `python -m avjax.tfds` is the `tfds` CLI "
          f"without TensorFlow):\n  {_build_command(dcfg.name, dcfg.config, data_dir)}\n"
          f"({readme} says what to download and the folder layout it expects.)")
  missing = [s for s in splits if s not in builder.info.splits]
  if missing:
    known = sorted(builder.info.splits)
    if split_flag:
      raise ConfigError(f"{split_flag} {missing[0]!r}: {full_name} has no such split."
                        f"{did_you_mean(missing[0], known)} Its splits: {known}.")
    raise ConfigError(f"Dataset {full_name} has no split(s) {missing}; it has {known}. Fix "
                      "config.dataset.*_split.")
  decoders = _lazy_image_decoders(builder.info.features)
  # Records are decoded straight from their protos where every feature allows it (records.py).
  sources = {s: fast_source(builder.as_data_source(split=s, decoders=decoders or None),
                            builder.info.features, decoders)
             for s in splits}
  # Regression-only datasets (muse_mimic) have no label: 0 classes, targets in 'attributes'.
  label = builder.info.features["label"] if "label" in builder.info.features else None
  # Integer labels without a ClassLabel (voxceleb: -1 for evaluation-only speakers) give the class
  # count in the metadata.
  num_classes = getattr(label, "num_classes", 0) or int(builder.info.metadata.get("num_classes", 0))
  return Dataset(name=full_name, sources=sources, num_classes=num_classes, info=builder.info)


def dataset_metadata(dcfg: ml_collections.ConfigDict) -> Any:
  """The built dataset's info.metadata (its dataset_info files only; no records are opened)."""
  _import_builder(dcfg.name)
  data_dir = os.path.expanduser(dcfg.data_dir or tfds.core.constants.DATA_DIR)
  return tfds.builder(f"{dcfg.name}/{dcfg.config}", data_dir=data_dir).info.metadata or {}


class EncodedImages(tfds.decode.Decoder):
  """Leaves a sequence of stored images as its encoded bytes ((T,) object array of JPEG/PNG).

  Records keep every frame of a clip, but a training example uses a few: the transform decodes
  only the frames it samples (avjax.data.transforms.decode_image), and only once.
  """

  keeps_encoded = True  # avjax.data.records decodes such features to the same (T,) bytes array.

  def decode_example(self, serialized):
    return serialized

  def decode_example_np(self, serialized):
    return serialized

  def decode_batch_example_np(self, serialized):
    return serialized


def _lazy_image_decoders(features: Any) -> dict[str, Any]:
  """{'frames': EncodedImages()} when the builder stores frames as a Sequence of Images."""
  # FeaturesDict is a Mapping-like connector without .get().
  frames = features["frames"] if "frames" in getattr(features, "keys", lambda: ())() else None
  if isinstance(frames, tfds.features.Sequence) and isinstance(frames.feature,
                                                               tfds.features.Image):
    return {"frames": EncodedImages()}
  return {}


def _is_prepared(builder) -> bool:
  return os.path.exists(os.path.join(os.fspath(builder.data_dir), "dataset_info.json"))
