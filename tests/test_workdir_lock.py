"""One run per workdir: a lock naming its holder; stale locks of killed runs are taken over."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

from avjax import workdir as workdir_lib
from tests.xla_env import subprocess_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_lock_names_its_holder_and_is_released(tmp_path):
  with workdir_lib.lock(str(tmp_path)):
    holder = json.loads((tmp_path / "lock.json").read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    assert holder["started"]
    with pytest.raises(workdir_lib.WorkdirBusyError,
                       match=rf"is in use by another run \(pid {os.getpid()} on host "):
      with workdir_lib.lock(str(tmp_path)):  # Another open file: the OS lock refuses it.
        pass
  assert (tmp_path / "lock.json").read_text() == ""  # A clean exit leaves no holder.
  with workdir_lib.lock(str(tmp_path)):  # Free again.
    pass


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True)
  (tmp_path / "lock.json").write_text(json.dumps(
      {"host": socket.gethostname(), "pid": int(dead.stdout), "started": "2026-01-01T00:00:00"}))
  with caplog.at_level(logging.WARNING):
    with workdir_lib.lock(str(tmp_path)):
      assert json.loads((tmp_path / "lock.json").read_text())["pid"] == os.getpid()
  assert f"Took over the lock of {tmp_path}" in caplog.text
  assert f"pid {int(dead.stdout)}" in caplog.text


def test_lock_of_another_host_is_not_taken_over(tmp_path):
  (tmp_path / "lock.json").write_text(json.dumps(
      {"host": "elsewhere", "pid": 12, "started": "2026-01-01T00:00:00"}))
  with pytest.raises(workdir_lib.WorkdirBusyError, match=r"another host \(pid 12 on host "
                                                         r"'elsewhere'.*delete .*lock.json"):
    with workdir_lib.lock(str(tmp_path)):
      pass


def _command(workdir, data_dir, *extra):
  return [sys.executable, "-m", "avjax.main", "--config", "configs/demo.py:smoke",
          f"--config.dataset.data_dir={data_dir}", f"--workdir={workdir}",
          "--config.model.av_resnet.widths=(4,8,8,8)", "--config.input.image_size=16", *extra]


def test_second_run_on_a_workdir_stops_with_one_line(tmp_path, data_dir):
  workdir = tmp_path / "run"
  first = subprocess.Popen(_command(workdir, data_dir, "--config.train.num_epochs=1000"), cwd=REPO,
                           env=subprocess_env(), stderr=subprocess.PIPE,
                           stdout=subprocess.DEVNULL, text=True)
  training, err = threading.Event(), []

  def read():
    while chunk := first.stderr.read(64):
      err.append(chunk)
      if "epoch 2/1000" in "".join(err[-4:]):
        training.set()

  reader = threading.Thread(target=read, daemon=True)
  reader.start()
  try:
    assert training.wait(timeout=400), "".join(err)[-3000:]
    second = subprocess.run(_command(workdir, data_dir, "--config.train.num_epochs=1000"),
                            cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                            timeout=300)
  finally:
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=300) == 0
    reader.join(timeout=10)
  assert second.returncode == 2, second.stderr[-3000:]
  assert "Traceback" not in second.stderr
  assert f"is in use by another run (pid {first.pid} on host '{socket.gethostname()}'" in (
      second.stderr)
  assert len(second.stderr.strip().splitlines()) == 1, second.stderr[-3000:]
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  keys = [(r["step"], r["split"]) for r in rows]
  assert len(keys) == len(set(keys)) and keys == sorted(keys, key=lambda k: k[0])
