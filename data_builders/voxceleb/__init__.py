"""voxceleb: importing this package registers the 'voxceleb' TFDS builder.

`build(config_name, data_dir=..., manual_dir=..., **overrides)` builds (if needed) and returns the
builder; overrides of VoxCelebConfig fields (e.g. validation_per_speaker=2) make a
distinctly named config, so variants never share a directory on disk.
"""

from __future__ import annotations

from typing import Any

import tensorflow_datasets as tfds

# The builder module first: it puts the repository root on sys.path when run from a checkout.
from .voxceleb_dataset_builder import BUILDER_CONFIGS, Builder, VoxCeleb, VoxCelebConfig

from data_builders.common.builder import build as _build  # noqa: E402  (after sys.path set-up)
from data_builders.common.config import make_config as _make_config  # noqa: E402

__all__ = ['BUILDER_CONFIGS', 'Builder', 'VoxCeleb', 'VoxCelebConfig',
           'build', 'make_config']


def make_config(config_name: str = 'mmcosine', **overrides: Any) -> VoxCelebConfig:
  """The named config, or a copy with `overrides` applied under a derived, distinct name."""
  return _make_config(Builder, config_name, **overrides)


def build(config_name: str = 'mmcosine', *, data_dir: str | None = None,
          manual_dir: str | None = None, num_workers: int | None = None,
          strict: bool | None = None, **overrides: Any) -> tfds.core.DatasetBuilder:
  """Builds voxceleb/<config> from `manual_dir` into `data_dir` unless already there."""
  return _build(Builder, config_name, data_dir=data_dir, manual_dir=manual_dir,
                num_workers=num_workers, strict=strict, **overrides)
