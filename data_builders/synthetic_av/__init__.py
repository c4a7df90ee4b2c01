"""synthetic_av: importing this package registers the 'synthetic_av' TFDS builder.

`build(config_name, data_dir, **overrides)` builds (if needed) and returns the builder; overrides of
SyntheticAVConfig fields (e.g. num_train=64, seed=3) make a distinctly named config, so variants never
share a directory on disk.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import tensorflow_datasets as tfds

from data_builders.common import config as common_config

from .synthetic_av_dataset_builder import (BUILDER_CONFIGS, Builder, SyntheticAV,
                                           SyntheticAVConfig, make_example)

__all__ = ['BUILDER_CONFIGS', 'Builder', 'SyntheticAV', 'SyntheticAVConfig', 'build', 'make_config',
           'make_example']

class _QuietVariants(logging.Filter):
  """Drops TFDS's warning that a size variant is a 'custom data configuration' (it is, on purpose),
  which every grain worker would otherwise repeat with the whole config."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith('Using custom data configuration: SyntheticAVConfig')


logging.getLogger('absl').addFilter(_QuietVariants())


def make_config(config_name: str = 'audio_dominant', **overrides: Any) -> SyntheticAVConfig:
  """The named config, or a copy with `overrides` applied under a derived, distinct name."""
  return common_config.make_config(Builder, config_name, **overrides)


def build(config_name: str = 'audio_dominant', data_dir: str | None = None,
          **overrides: Any) -> tfds.core.DatasetBuilder:
  """Builds synthetic_av/<config> into `data_dir` unless already there; returns the builder."""
  data_dir = os.path.expanduser(data_dir) if data_dir else None
  config = make_config(config_name, **overrides)
  # A named config is passed by name: a builder holding the registered config object would not
  # survive pickling into grain worker processes (TFDS refuses a custom config with a taken name).
  builder = Builder(config=config.name if not overrides else config, data_dir=data_dir)
  if not builder.is_prepared():
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder
