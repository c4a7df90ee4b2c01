"""`python -m avjax.main` as a user runs it: the demo smoke run, resumption, and clear errors."""

import json
import os
import subprocess
import sys

import pytest

from tests.xla_env import subprocess_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args: str, **env: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "avjax.main", *args], cwd=REPO,
                        env=subprocess_env(**env), capture_output=True, text=True, timeout=600)


def _assert_clean_error(result: subprocess.CompletedProcess, *needles: str) -> None:
  assert result.returncode == 2, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  for needle in needles:
    assert needle in result.stderr, result.stderr[-3000:]


def test_unknown_config_key(tmp_path):
  result = _main("--config", "configs/demo.py:smoke", "--config.train.batch_sise=4",
                 f"--workdir={tmp_path}")
  _assert_clean_error(result, "batch_sise", "batch_size")


def test_moved_config_key_names_the_new_one(tmp_path):
  """An override of av_resnet's settings by their old top-level names stops with one line."""
  result = _main("--config", "configs/demo.py:smoke", "--config.model.widths=(4,8,8,8)",
                 f"--workdir={tmp_path}")
  _assert_clean_error(result)
  assert result.stderr.strip().splitlines() == [
      "avjax: error: config.model.widths moved: model settings sit under config.model.<model "
      "name>; use --config.model.av_resnet.widths (av_resnet, av_resnet_mmtm, av_resnet_aug), or "
      "--config.model.cmvqvae.widths for CM-VQVAE's ablation 4."]


@pytest.mark.parametrize("override,needle", [
    ("--config.method.name=no_such_method", "Unknown method 'no_such_method'"),
    ("--config.method.name=ogm_gee", "Unknown method 'ogm_gee'. Did you mean 'ogm_ge'?"),
    ("--config.dataset.name=crema-d", "Unknown dataset 'crema-d': no TFDS builder of that name is "
                                      "registered and avjax ships none under data_builders/crema-d."
                                      " Did you mean 'crema_d'?"),
    ("--config.model.fusion=no_such_fusion", "Unknown fusion 'no_such_fusion'"),
    ("--config.optimizer.name=rmsprop", "optimizer.name='rmsprop'"),
    ("--config.dataset.config=audio_dominnt", "has no builder config 'audio_dominnt'; its configs "
                                              "are ['audio_dominant', "),
    ("--config.input.num_frames=-2", "config.input.num_frames=-2 must be >= 0"),
])
def test_unknown_names(tmp_path, override, needle):
  result = _main("--config", "configs/demo.py:smoke", override, f"--workdir={tmp_path}")
  _assert_clean_error(result, needle)
  assert not os.path.exists(tmp_path / "checkpoints")


def test_dataset_not_built_names_the_build_command(tmp_path):
  result = _main("--config", "configs/demo.py:smoke", "--config.dataset.auto_build=False",
                 f"--config.dataset.data_dir={tmp_path / 'empty'}", f"--workdir={tmp_path / 'w'}")
  _assert_clean_error(result, "is not built", "tfds build data_builders/synthetic_av --config=")


def test_demo_smoke_end_to_end_and_resume(tmp_path, data_dir):
  workdir, cache = tmp_path / "demo", tmp_path / "jax_cache"
  args = ("--config", "configs/demo.py:smoke", f"--config.dataset.data_dir={data_dir}",
          f"--workdir={workdir}", f"--compilation_cache={cache}")
  # JAX stores only programs that took over a second to compile; under the suite's fast-compile
  # XLA flags the smoke eval step may take less, so store everything here.
  first = _main(*args, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  assert first.returncode == 0, first.stderr[-3000:]
  steps = {name.split("-")[0] for name in os.listdir(cache) if name.endswith("-cache")}
  assert {"jit_train_step", "jit_eval_step"} <= steps, sorted(os.listdir(cache))
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  val = [r for r in rows if r["split"] == "val"]
  assert len(val) == 2
  for key in ("accuracy", "accuracy_audio", "accuracy_visual", "macro_f1", "step", "epoch"):
    assert key in val[-1]
  assert any(r["split"] == "test" for r in rows)
  assert (workdir / "metrics.png").exists()
  assert os.listdir(workdir / "tensorboard")

  again = _main(*args)  # Same command, same workdir: a finished run, nothing to train or evaluate.
  assert again.returncode == 0, again.stderr[-3000:]
  assert "Resuming from step 16 (2/2 epochs done)" in again.stderr, again.stderr[-3000:]
  assert "Run complete (2/2 epochs, best checkpoint " in again.stderr, again.stderr[-3000:]
  assert "nothing to do" in again.stderr
  assert [json.loads(line) for line in open(workdir / "metrics.jsonl")] == rows  # No new rows.

  longer = _main(*args, "--config.train.num_epochs=3")  # A longer run continues.
  assert longer.returncode == 0, longer.stderr[-3000:]
  rows_longer = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  assert [r["epoch"] for r in rows_longer if r["split"] == "val"] == [1, 2, 3]


def test_workdir_of_a_different_experiment_is_refused(tmp_path, data_dir):
  workdir = tmp_path / "w"
  workdir.mkdir()
  (workdir / "config.json").write_text(json.dumps({"seed": 123, "model": {"fusion": "sum"}}))
  result = _main("--config", "configs/demo.py:smoke", f"--config.dataset.data_dir={data_dir}",
                 f"--workdir={workdir}")
  _assert_clean_error(result, "different configuration", "new --workdir")
  assert json.loads((workdir / "config.json").read_text())["seed"] == 123
