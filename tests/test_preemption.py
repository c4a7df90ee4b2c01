"""SIGTERM mid-run: the step finishes, a checkpoint is written, the exit is clean, and the resumed
run ends bit-identical to an uninterrupted one."""

import json
import os
import signal
import subprocess
import sys
import threading

from tests.xla_env import subprocess_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _command(workdir, data_dir, *extra):
  return [sys.executable, "-m", "avjax.main", "--config", "configs/demo.py:smoke",
          f"--config.dataset.data_dir={data_dir}", f"--workdir={workdir}",
          "--config.model.widths=(4,8,8,8)", "--config.input.image_size=16",
          "--config.train.num_epochs=4", "--config.train.log_every_steps=1", *extra]


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return [{k: v for k, v in r.items() if k != "examples_per_sec"} for r in rows
          if r["split"] == "val"]


def test_sigterm_checkpoints_and_resume_is_identical(tmp_path, data_dir):
  straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
  done = subprocess.run(_command(straight, data_dir), cwd=REPO, env=subprocess_env(),
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]

  proc = subprocess.Popen(_command(interrupted, data_dir), cwd=REPO, env=subprocess_env(),
                          stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
  seen = threading.Event()
  err = []

  def read():
    while chunk := proc.stderr.read(64):
      err.append(chunk)
      if "epoch 2/4" in "".join(err[-4:]):
        seen.set()

  reader = threading.Thread(target=read, daemon=True)
  reader.start()
  assert seen.wait(timeout=400), "".join(err)[-3000:]
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=300) == 0
  reader.join(timeout=10)
  stderr = "".join(err)
  assert "Stopped by a preemption signal" in stderr, stderr[-3000:]
  assert os.listdir(interrupted / "checkpoints")

  resumed = subprocess.run(_command(interrupted, data_dir), cwd=REPO, env=subprocess_env(),
                           capture_output=True, text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "Resuming from step" in resumed.stderr
  assert _rows(straight) == _rows(interrupted)
