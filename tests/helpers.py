"""Shared builders of tiny experiment configs for tests."""

from __future__ import annotations

import ml_collections

from avjax.config import base_config


def tiny_config(data_dir: str, **overrides) -> ml_collections.ConfigDict:
  """A config that trains in seconds: 96 synthetic clips, 16x16 frames, 4-channel ResNets."""
  c = base_config()
  c.name = "tiny"
  c.dataset.data_dir = data_dir
  c.dataset.build_overrides = ml_collections.ConfigDict(
      dict(num_train=96, num_validation=32, num_test=32))
  c.input.num_frames = 2
  c.input.image_size = 16
  c.input.crop_scale = (0.5, 1.0)
  c.model.widths = (4, 8, 8, 8)
  c.optimizer.name = "sgd"
  c.optimizer.learning_rate = 0.05
  c.optimizer.schedule = "constant"
  c.train.batch_size = 16
  c.train.num_epochs = 2
  c.train.log_every_steps = 3
  c.train.progress = False
  c.mesh.data = 1
  for key, value in overrides.items():
    section, name = key.split(".")
    c[section][name] = value
  return c
