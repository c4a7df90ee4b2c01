"""synthetic_av: importing this package registers the 'synthetic_av' TFDS builder.

`build(config_name, data_dir, **overrides)` builds (if needed) and returns the builder; overrides of
SyntheticAVConfig fields (e.g. num_train=64, seed=3) make a distinctly named config, so variants never
share a directory on disk.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
from typing import Any

import tensorflow_datasets as tfds

from .synthetic_av_dataset_builder import (BUILDER_CONFIGS, Builder, SyntheticAV,
                                           SyntheticAVConfig, make_example)

__all__ = ['BUILDER_CONFIGS', 'Builder', 'SyntheticAV', 'SyntheticAVConfig', 'build', 'make_config',
           'make_example']

_BASE_FIELDS = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}


class _QuietVariants(logging.Filter):
  """Drops TFDS's warning that a size variant is a 'custom data configuration' (it is, on purpose),
  which every grain worker would otherwise repeat with the whole config."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith('Using custom data configuration: SyntheticAVConfig')


logging.getLogger('absl').addFilter(_QuietVariants())


def _variant_name(base: str, overrides: dict[str, Any]) -> str:
  """'audio_dominant-num_train300-seed1' (readable) or 'audio_dominant-<hash>' when not."""
  parts = []
  for k in sorted(overrides):
    v = overrides[k]
    v = '_'.join(map(str, v)) if isinstance(v, (tuple, list)) else str(v)
    parts.append(f'{k}{v}')
  name = '-'.join([base] + parts)
  if len(name) <= 96 and re.fullmatch(r'[\w+\-.]+', name):
    return name
  digest = hashlib.sha1(repr(sorted(overrides.items())).encode()).hexdigest()[:12]
  return f'{base}-{digest}'


def make_config(config_name: str = 'audio_dominant', **overrides: Any) -> SyntheticAVConfig:
  """The named config, or a copy with `overrides` applied under a derived, distinct name."""
  if config_name not in Builder.builder_configs:
    raise ValueError(f'synthetic_av has no config {config_name!r}; known: '
                     f'{sorted(Builder.builder_configs)}.')
  base = Builder.builder_configs[config_name]
  if not overrides:
    return base
  fields = {f.name for f in dataclasses.fields(SyntheticAVConfig)} - _BASE_FIELDS
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f'synthetic_av: unknown config field(s) {unknown}; known: {sorted(fields)}.')
  overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
  cfg = dataclasses.replace(base, name=_variant_name(config_name, overrides), **overrides)
  cfg.description = (f'{config_name} with overrides {sorted(overrides)}. Knobs: '
                     f'{json.dumps(cfg.knobs(), sort_keys=True)}')
  cfg.validate()
  return cfg


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
