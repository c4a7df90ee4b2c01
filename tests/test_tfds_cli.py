"""`python -m avjax.tfds build` (the tfds CLI without TensorFlow) builds a dataset folder; its
--help, manual-download checks and first-build messages."""

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
  # A first build says what it does in avjax's words, without TFDS's alarming download lines.
  output = result.stdout + result.stderr
  for alarming in ("has no dataset_info.json", "Downloading and preparing",
                   "download: Unknown size", "downloaded and prepared"):
    assert alarming not in output, output[:3000]
  assert "Building synthetic_av/complementary/1.0.0 from generated signals" in result.stdout
  assert f"Built synthetic_av/complementary/1.0.0 in {tmp_path}" in result.stdout
  import data_builders.synthetic_av  # noqa: F401  (registers the builder for reading)
  source = tfds.data_source("synthetic_av/complementary", split="test", data_dir=str(tmp_path))
  assert len(source) == 400
  assert "tensorflow" not in {m.split(".")[0] for m in sys.modules}


def test_bad_manual_dir_ends_with_one_message(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  unrelated = tmp_path / "unrelated"
  unrelated.mkdir()
  (unrelated / "notes.txt").write_text("not CREMA-D")
  for manual_dir, expected in ((tmp_path / "missing", "is not a folder"),
                               (empty, "is empty"),
                               (unrelated, "found no usable clip")):
    result = subprocess.run(
        [sys.executable, "-m", "avjax.tfds", "build", "data_builders/crema_d", "--config=ogm_ge",
         f"--manual_dir={manual_dir}", f"--data_dir={tmp_path / 'data'}"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, (manual_dir, result.stderr[-2000:])
    assert "avjax.tfds: error:" in result.stderr and expected in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
  assert not (tmp_path / "data").exists()  # A failed first build leaves no folder behind.


def test_help_names_avjax_builders_configs_and_environment():
  result = subprocess.run([sys.executable, "-m", "avjax.tfds", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  for needle in ("crema_d (needs --manual_dir): --config= ogm_ge", "synthetic_av: --config= ",
                 "AVJAX_BUILD_WORKERS", "AVJAX_BUILD_STRICT", "AVJAX_TRACEBACK", "usage:"):
    assert needle in result.stdout, result.stdout[:3000]


def test_manual_builder_without_manual_dir_stops_before_creating_anything(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "avjax.tfds", "build", "data_builders/crema_d", "--config=ogm_ge",
       f"--data_dir={tmp_path / 'data'}"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.strip().splitlines() == [
      "avjax.tfds: error: data_builders/crema_d builds from a manual download: pass "
      "--manual_dir=<the unpacked download> (data_builders/crema_d/README.md shows what to "
      "download and its layout)."]
  assert not (tmp_path / "data").exists()
