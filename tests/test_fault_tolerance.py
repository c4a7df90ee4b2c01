"""Crash safety: corrupt checkpoints fall back to the previous one; SIGKILL at any moment resumes."""

import logging
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from avjax.train import train_and_evaluate
from tests.helpers import demo_smoke_config, restore_final_state, tiny_config
from tests.xla_env import subprocess_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _truncate_largest_file(directory):
  files = [os.path.join(root, f) for root, _, names in os.walk(directory) for f in names]
  largest = max(files, key=os.path.getsize)
  with open(largest, "r+b") as f:
    f.truncate(os.path.getsize(largest) // 3)


def test_corrupt_latest_checkpoint_falls_back_to_previous(data_dir, tmp_path, caplog):
  config = tiny_config(data_dir, **{"train.num_epochs": 2, "train.keep_checkpoints": 3})
  workdir = str(tmp_path / "run")
  train_and_evaluate(config, workdir)
  checkpoints = os.path.join(workdir, "checkpoints")
  steps = sorted(int(s) for s in os.listdir(checkpoints) if s.isdigit())
  assert len(steps) == 2
  _truncate_largest_file(os.path.join(checkpoints, str(steps[-1]), "state"))

  config.train.num_epochs = 3
  with caplog.at_level(logging.WARNING):
    train_and_evaluate(config, workdir)
  assert "cannot be restored" in caplog.text
  kept = os.path.join(workdir, "checkpoints_unreadable", str(steps[-1]))
  assert os.path.isdir(kept)  # Set aside for inspection, not deleted.
  # Resumed from the previous (epoch 1) checkpoint and trained epochs 2 and 3 again.
  state, meta = restore_final_state(workdir, config)
  assert meta["epoch"] == 3 and int(state.step) == 3 * steps[0]

  reference = str(tmp_path / "reference")
  train_and_evaluate(config, reference)
  expected, _ = restore_final_state(reference, config)
  for x, y in zip(jax.tree.leaves(state), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(x, y)


def _command(workdir, data_dir):
  return [sys.executable, "-m", "avjax.main", "--config", "configs/demo.py:smoke",
          f"--config.dataset.data_dir={data_dir}", f"--workdir={workdir}",
          "--config.model.widths=(4,8,8,8)", "--config.input.image_size=16",
          "--config.train.num_epochs=3", "--config.train.checkpoint_every_steps=3",
          "--config.train.progress=False"]


def test_sigkill_at_random_moments_resumes_identically(tmp_path, data_dir):
  env = subprocess_env()
  straight = tmp_path / "straight"
  tic = time.monotonic()
  done = subprocess.run(_command(straight, data_dir), cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  duration = time.monotonic() - tic
  config = demo_smoke_config(data_dir, **{"model.widths": (4, 8, 8, 8), "input.image_size": 16,
                                          "train.num_epochs": 3})
  expected, _ = restore_final_state(str(straight), config)

  # One run SIGKILLed at three random moments (start-up, a step, a save...): the first in a fresh
  # start, the others in the resumption of the one before (a launch that finishes first leaves the
  # next a complete run to resume); resumed to the end, it must match the straight run.
  killed = tmp_path / "killed"
  for seed in range(3):
    proc = subprocess.Popen(_command(killed, data_dir), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(np.random.default_rng(seed).uniform(0.2, 0.7) * duration)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  final = subprocess.run(_command(killed, data_dir), cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
  assert final.returncode == 0, final.stderr[-2000:]
  state, meta = restore_final_state(str(killed), config)
  assert meta["epoch"] == 3
  for x, y in zip(jax.tree.leaves(state), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(x, y)
