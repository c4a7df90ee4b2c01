"""scripts/benchmark_input.py on every case, tiny: it builds the fixtures and reports numbers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_case_reports_positive_numbers(tmp_path):
  out = tmp_path / "input.json"
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "benchmark_input.py"), "--cases", "all",
       "--examples", "16", "--batch", "4", "--storage_dtype", "float16", "--crop_on_device",
       f"--workdir={tmp_path / 'work'}", f"--json={out}"],
      cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
      timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  payload = json.loads(out.read_text())
  assert set(payload["cases"]) == {"ogm_ge_cremad", "cmvqvae_cremad", "vavl_msp", "vat_mer"}
  for name, case in payload["cases"].items():
    assert case["batch"] == 4 and "float16" in case["dataset"], name
    # A difference of two tiny runs can come out <= 0 on a busy machine: then it is None.
    rate = case["examples_per_s"]
    assert rate is None or (math.isfinite(rate) and rate > 0), (name, rate)
  ogm = payload["cases"]["ogm_ge_cremad"]
  assert ogm["reference_examples_per_s_per_core"] > 0
  assert ("avjax / reference per core" in result.stdout) == bool(ogm.get("ratio_per_core"))
