"""VAVL on precomputed feature sequences: configs/vavl_msp.py trains through the trainer on a built
msp_improv/features_p1 fixture (the corpus layout of the builders' tests)."""

from __future__ import annotations

import os

import numpy as np

import data_builders.msp_improv as mi
from avjax.train import train_and_evaluate
from tests.data_builders import fixtures as fx
from tests.methods.common import load_config


def test_vavl_msp_trains_on_built_feature_sequences(tmp_path):
  download = fx.make_msp_improv(tmp_path / "MSP-IMPROV")
  fx.add_vavl_msp(download.root, download.good + list(download.bad), partitions=(1,))
  fx.add_features(download.root, sorted(download.good))
  data_dir = str(tmp_path / "tfds")
  mi.build("features_p1", data_dir=data_dir, manual_dir=str(download.root), num_workers=0)

  config = load_config("vavl_msp")
  assert config.dataset.config == "features_p1"
  config.dataset.data_dir = data_dir
  config.input.max_audio_frames, config.input.max_visual_frames = 24, 12
  config.model.vavl.update(dim=16, heads=2, audio_blocks=1, visual_blocks=1, shared_blocks=1,
                           head_hidden=(16, 16), kernel_size=3)
  config.train.batch_size = config.train.eval_batch_size = 2
  config.train.num_epochs = 1
  config.train.progress = False
  config.mesh.data = 1
  workdir = str(tmp_path / "run")
  final = train_and_evaluate(config, workdir)
  for name in ("arousal", "valence", "dominance"):
    for suffix in ("", "_audio", "_visual"):
      assert np.isfinite(final[f"ccc_{name}{suffix}"]), (name, suffix, final)
  assert os.path.isdir(os.path.join(workdir, "predictions"))
