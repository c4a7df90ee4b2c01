"""msp_improv: importing this package registers the 'msp_improv' TFDS builder.

`build(config_name, data_dir=..., manual_dir=..., **overrides)` builds (if needed) and returns the
builder; overrides of MspImprovConfig fields (e.g. require_label=True, label_source='target') make a
distinctly named config, so variants never share a directory on disk.
"""

from __future__ import annotations

from typing import Any

import tensorflow_datasets as tfds

# The builder module first: it puts the repository root on sys.path when run from a checkout.
from .msp_improv_dataset_builder import (ATTRIBUTE_NAMES, BUILDER_CONFIGS, CATEGORY_CODES,
                                         CLASS_NAMES, PARTITIONS, Builder, MspImprov,
                                         MspImprovConfig, attributes, canonical_id, parse_id,
                                         read_label_file)

from data_builders.common.builder import build as _build  # noqa: E402  (after sys.path set-up)
from data_builders.common.config import make_config as _make_config  # noqa: E402

__all__ = ['ATTRIBUTE_NAMES', 'BUILDER_CONFIGS', 'CATEGORY_CODES', 'CLASS_NAMES', 'PARTITIONS',
           'Builder', 'MspImprov', 'MspImprovConfig', 'attributes', 'build', 'canonical_id',
           'make_config', 'parse_id', 'read_label_file']


def make_config(config_name: str = 'logmel_p1', **overrides: Any) -> MspImprovConfig:
  """The named config, or a copy with `overrides` applied under a derived, distinct name."""
  return _make_config(Builder, config_name, **overrides)


def build(config_name: str = 'logmel_p1', *, data_dir: str | None = None,
          manual_dir: str | None = None, num_workers: int | None = None,
          strict: bool | None = None, **overrides: Any) -> tfds.core.DatasetBuilder:
  """Builds msp_improv/<config> from `manual_dir` into `data_dir` unless already there."""
  return _build(Builder, config_name, data_dir=data_dir, manual_dir=manual_dir,
                num_workers=num_workers, strict=strict, **overrides)
