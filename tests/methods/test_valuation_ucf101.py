"""UCF101 (RGB + optical flow) trains: configs/valuation_modality_ucf101.py through the trainer on a
built ucf101/split1 fixture, flow in the model's audio slot."""

from __future__ import annotations

import os

import numpy as np

import data_builders.ucf101 as ucf
from avjax.train import train_and_evaluate
from tests.data_builders import fixtures_av as fa
from tests.methods.common import load_config


def test_valuation_modality_ucf101_trains_on_rgb_and_flow(tmp_path):
  download = fa.make_ucf101(tmp_path / "UCF101")
  data_dir = str(tmp_path / "tfds")
  # Every fixture clip has precomputed flow JPEGs: the plain 'split1' config computes none.
  ucf.build("split1", data_dir=data_dir, manual_dir=str(download.root), num_workers=0)

  config = load_config("valuation_modality_ucf101")
  config.dataset.data_dir = data_dir
  config.input.image_size = 32
  config.model.av_resnet.widths = (8, 8, 8, 8)
  config.method.warmup_epochs = 1  # The second epoch is re-sampled from the valuation.
  config.train.batch_size = config.train.eval_batch_size = 2
  config.train.num_epochs = 2
  config.train.progress = False
  config.mesh.data = 1
  workdir = str(tmp_path / "run")
  final = train_and_evaluate(config, workdir)
  for key in ("accuracy", "accuracy_audio", "accuracy_visual"):
    assert 0.0 <= final[key] <= 1.0, (key, final)
  # v(S) = |S| 1[correct]: each test clip's two contributions sum to 2 * (fused prediction correct).
  np.testing.assert_allclose(final["shapley_audio"] + final["shapley_visual"],
                             2 * final["accuracy"], atol=1e-5)
  assert os.path.isdir(os.path.join(workdir, "plans"))  # The re-sampled epoch's plan.
