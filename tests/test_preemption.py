"""SIGTERM or Ctrl-C mid-run: the step finishes, a checkpoint is written, the exit is clean, and the
resumed run ends bit-identical to an uninterrupted one; a second Ctrl-C aborts at once."""

import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from tests.xla_env import subprocess_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _command(workdir, data_dir, *extra):
  return [sys.executable, "-m", "avjax.main", "--config", "configs/demo.py:smoke",
          f"--config.dataset.data_dir={data_dir}", f"--workdir={workdir}",
          "--config.model.av_resnet.widths=(4,8,8,8)", "--config.input.image_size=16",
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


def test_ctrl_c_stops_at_the_step_saves_and_resumes(tmp_path, data_dir):
  workdir = tmp_path / "run"
  proc = subprocess.Popen(_command(workdir, data_dir), cwd=REPO, env=subprocess_env(),
                          stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
  seen, err = threading.Event(), []

  def read():
    while chunk := proc.stderr.read(64):
      err.append(chunk)
      if "epoch 2/4" in "".join(err[-4:]):
        seen.set()

  reader = threading.Thread(target=read, daemon=True)
  reader.start()
  assert seen.wait(timeout=400), "".join(err)[-3000:]
  proc.send_signal(signal.SIGINT)  # What Ctrl-C sends.
  assert proc.wait(timeout=300) == 130  # The shell's status for Ctrl-C, without a traceback.
  reader.join(timeout=10)
  stderr = "".join(err)
  assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
  assert "Ctrl-C: stopping after this step" in stderr, stderr[-3000:]
  stop = [line for line in stderr.splitlines() if "Stopped by Ctrl-C at step" in line]
  assert len(stop) == 1 and "Run the same command again to resume." in stop[0], stderr[-3000:]
  step = int(stop[0].split("at step ")[1].split()[0])
  assert str(step) in os.listdir(workdir / "checkpoints")  # The exact position it stopped at.

  resumed = subprocess.run(_command(workdir, data_dir), cwd=REPO, env=subprocess_env(),
                           capture_output=True, text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"Resuming from step {step} " in resumed.stderr
  assert [r["epoch"] for r in _rows(workdir)] == [1, 2, 3, 4]


def test_second_ctrl_c_aborts_at_once(monkeypatch, capsys):
  from avjax import preemption  # pylint: disable=import-outside-toplevel

  def exit_now(status):
    raise SystemExit(status)

  monkeypatch.setattr(preemption.os, "_exit", exit_now)
  # What the process had before: Python's default, or SIG_IGN when started in the background.
  before = signal.getsignal(signal.SIGINT)
  with preemption.PreemptionWatcher() as watcher:
    os.kill(os.getpid(), signal.SIGINT)
    assert watcher.requested() and watcher.reason() == "Ctrl-C"
    with pytest.raises(SystemExit) as exited:
      os.kill(os.getpid(), signal.SIGINT)
  assert exited.value.code == 130
  assert "second Ctrl-C: aborted" in capsys.readouterr().err
  assert signal.getsignal(signal.SIGINT) is before  # Restored.
