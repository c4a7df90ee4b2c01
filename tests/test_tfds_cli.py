"""`python -m avjax.tfds build` (the tfds CLI without TensorFlow) builds a dataset folder."""

import os
import subprocess
import sys

import tensorflow_datasets as tfds

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tfds_build_cli_without_tensorflow(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "avjax.tfds", "build", "data_builders/synthetic_av",
       "--config=complementary", f"--data_dir={tmp_path}"],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  import data_builders.synthetic_av  # noqa: F401  (registers the builder for reading)
  source = tfds.data_source("synthetic_av/complementary", split="test", data_dir=str(tmp_path))
  assert len(source) == 400
  assert "tensorflow" not in {m.split(".")[0] for m in sys.modules}
