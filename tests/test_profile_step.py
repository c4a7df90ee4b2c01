"""scripts/profile_step.py: per-operation times of a real (tiny) step, grouped by operation kind."""

from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import profile_step  # noqa: E402


def test_op_kind_strips_instance_numbers():
  assert profile_step.op_kind("convolution.12") == "convolution"
  assert profile_step.op_kind("loop_add_fusion.3.1") == "loop_add_fusion"
  assert profile_step.op_kind("wrapped_reduce-window") == "wrapped_reduce-window"


def test_report_shares_add_up():
  text = profile_step.report({"dot.1": 30.0, "dot.2": 10.0, "copy": 60.0}, steps=2, top=2)
  assert "operations' time per step: 50.0 ms" in text
  lines = text.splitlines()
  assert any(line.split()[:2] == ["copy", "1"] and line.endswith("60.0%") for line in lines)
  assert any(line.split()[:2] == ["dot", "2"] and line.endswith("40.0%") for line in lines)


def test_profiles_a_tiny_step(tmp_path):
  out = tmp_path / "profile.json"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "profile_step.py"), "--case",
       "cmvqvae_cremad", "--tiny", "--top", "5", "--json", str(out)],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "operations' time per step" in result.stdout
  times = json.loads(out.read_text())["ms_per_step"]
  # The step's convolutions and fusions are in the trace, each with a positive time.
  assert any(profile_step.op_kind(name).endswith("fusion") for name in times)
  assert all(ms > 0 for ms in times.values())
