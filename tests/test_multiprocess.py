"""Two JAX processes x 4 simulated devices (loopback coordinator) train like one process x 8."""

import json
import os
import subprocess
import sys

import jax
import numpy as np

from tests.helpers import demo_smoke_config, restore_final_state
from tests.xla_env import subprocess_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train_args(workdir, data_dir):
  return ["-m", "avjax.main", "--config", "configs/demo.py:smoke",
          f"--config.dataset.data_dir={data_dir}", f"--workdir={workdir}",
          "--config.model.av_resnet.widths=(4,8,8,8)", "--config.input.image_size=16",
          "--config.train.progress=False", "--config.optimizer.schedule=constant",
          # SGD: updates proportional to gradients (Adam's early sign-like steps would amplify
          # reduction-order float noise between the two device layouts).
          "--config.optimizer.name=sgd", "--config.optimizer.learning_rate=0.005",
          # 64 clips = 2 steps per epoch: the comparison is about the data/sharding path (a bug
          # there shows from step 1), not about float noise amplified over many steps.
          "--config.dataset.build_overrides.num_train=64"]


def _val_rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if '"split": "val"' in line]


def test_two_processes_match_one_process(tmp_path, data_dir):
  single, multi = tmp_path / "single", tmp_path / "multi"
  env = subprocess_env(devices=8)
  one = subprocess.run([sys.executable, *_train_args(single, data_dir)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
  assert one.returncode == 0, one.stderr[-3000:]

  two = subprocess.run([sys.executable, "scripts/launch_local.py", "-n", "2",
                        "--devices_per_process", "4", "--", sys.executable,
                        *_train_args(multi, data_dir)],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
  assert two.returncode == 0, two.stdout[-3000:]
  assert "[p0]" in two.stdout and "[p1]" in two.stdout

  a, b = _val_rows(single), _val_rows(multi)
  assert len(a) == len(b) == 2  # Metrics are written once, not once per process.
  for row_a, row_b in zip(a, b):
    assert row_a["step"] == row_b["step"]
    for key in ("loss", "loss_audio", "loss_visual"):
      np.testing.assert_allclose(row_a[key], row_b[key], rtol=1e-4)

  config = demo_smoke_config(data_dir, **{  # Same parameters, to float tolerance.
      "model.av_resnet.widths": (4, 8, 8, 8), "input.image_size": 16,
      "optimizer.schedule": "constant",
      "optimizer.name": "sgd", "optimizer.learning_rate": 0.005})
  config.dataset.build_overrides.num_train = 64
  a_state, _ = restore_final_state(str(single), config)
  b_state, _ = restore_final_state(str(multi), config)
  leaves_a, leaves_b = jax.tree.leaves(a_state.params), jax.tree.leaves(b_state.params)
  assert len(leaves_a) == len(leaves_b) > 10
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-4)  # A data bug moves params ~1e-3.


def test_launcher_keeps_other_xla_flags_and_sets_the_device_count():
  sys.path.insert(0, os.path.join(REPO, "scripts"))
  import launch_local
  flags = "--xla_backend_optimization_level=0 --xla_force_host_platform_device_count=8"
  assert launch_local._with_device_count(flags, 4) == (
      "--xla_backend_optimization_level=0 --xla_force_host_platform_device_count=4")
  assert launch_local._with_device_count("", 2) == "--xla_force_host_platform_device_count=2"
