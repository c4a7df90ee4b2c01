"""scripts/benchmark.py as a user runs it, on a tiny config: it finishes and reports sane numbers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

from tests.xla_env import subprocess_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "benchmark.py")

# tests/helpers.tiny_config's sizes as flags, so the session's tiny dataset build is shared.
TINY = ("--config.model.av_resnet.widths=(4,8,8,8)", "--config.input.image_size=16",
        "--config.dataset.build_overrides.num_train=96",
        "--config.dataset.build_overrides.num_validation=32",
        "--config.dataset.build_overrides.num_test=32", "--config.train.batch_size=16")


def _benchmark(*args: str, devices: int = 2) -> subprocess.CompletedProcess:
  env = subprocess_env(devices=devices, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, SCRIPT, *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)


def _positive_finite(value: object) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_tiny_benchmark_reports_positive_numbers(data_dir, tmp_path):
  out = tmp_path / "bench.json"
  result = _benchmark("--config", "configs/demo.py:smoke", *TINY,
                      f"--config.dataset.data_dir={data_dir}", "--steps", "2", "--warmup", "1",
                      "--pipeline_batches", "10", "--json", str(out))
  assert result.returncode == 0, result.stderr[-3000:]
  for row in ("train step compile", "eval step compile", "train throughput", "input pipeline",
              "parameters", "peak host RSS", "jax ", "cores", "backend: cpu",
              "time to first step", "train step FLOPs", "train step memory"):
    assert row in result.stdout, result.stdout
  payload = json.loads(out.read_text())
  machine, numbers = payload["machine"], payload["results"]
  assert machine["device_count"] == 2 and machine["backend"] == "cpu"
  assert machine["cpu_cores"] >= 1 and machine["jax"] and machine["flax"]
  assert numbers["mesh_data"] == 2 and numbers["global_batch_size"] == 16
  for key in ("train_lower_s", "train_compile_s", "eval_lower_s", "eval_compile_s",
              "train_step_ms", "train_examples_per_s", "pipeline_examples_per_s", "num_params",
              "peak_host_rss_mib", "first_step_s", "time_to_first_step_s", "train_flops",
              "train_tflops_per_s"):
    assert _positive_finite(numbers[key]), (key, numbers[key])
  if "pipeline_examples_per_s_per_core" in numbers:  # Needs /proc.
    assert _positive_finite(numbers["pipeline_examples_per_s_per_core"])
  assert math.isfinite(numbers["final_loss"])
  memory = numbers["train_memory_mib"]
  assert memory["total"] >= memory["arguments"] > 0 and memory["temporaries"] >= 0
  assert numbers["time_to_first_step_s"] > numbers["train_compile_s"]
  assert numbers["device_memory"] is None or all(
      v >= 0 for v in numbers["device_memory"].values())
  assert payload["config"]["model"]["av_resnet"]["widths"] == [4, 8, 8, 8]


def test_bad_arguments_fail_cleanly(data_dir, tmp_path):
  result = _benchmark("--config", "configs/demo.py:smoke", *TINY,
                      f"--config.dataset.data_dir={data_dir}", "--steps", "0")
  assert result.returncode == 2, result.stderr[-3000:]
  assert "Traceback" not in result.stderr and "--steps" in result.stderr, result.stderr[-3000:]
  earlier = tmp_path / "earlier.json"
  earlier.write_text("{}")
  result = _benchmark("--config", "configs/demo.py:smoke", "--json", str(earlier))
  assert result.returncode != 0 and "results are never overwritten" in result.stderr
  assert "Traceback" not in result.stderr and earlier.read_text() == "{}"
