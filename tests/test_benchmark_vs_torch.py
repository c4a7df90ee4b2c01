"""scripts/benchmark_vs_torch.py runs every case on both sides (tiny sizes) and reports sane numbers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "benchmark_vs_torch.py")
sys.path.insert(0, os.path.join(REPO, "scripts"))
import vs_torch  # noqa: E402


def _run(*args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, SCRIPT, *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=900)


def test_every_case_runs_both_sides(tmp_path):
  out = tmp_path / "vs.json"
  result = _run("--case", "all", "--tiny", "--steps", "1", "--warmup", "1", "--torch_compile", "off",
                "--threads", "1", "--json", str(out))
  assert result.returncode == 0, result.stderr[-3000:]
  payload = json.loads(out.read_text())
  assert [r["case"] for r in payload["results"]] == list(vs_torch.CASES)
  for r in payload["results"]:
    for key in ("avjax_examples_per_s", "torch_examples_per_s", "ratio_avjax_over_torch",
                "avjax_first_step_s"):
      assert math.isfinite(r[key]) and r[key] > 0, (r["case"], key, r[key])
    assert r["batch"] == 2 and r["torch_compile"] is False
  assert "avjax / PyTorch" in result.stdout


def test_case_options_are_checked():
  case = vs_torch.load("ogm_ge_cremad")
  assert vs_torch.parse_opts(case, ["widths=8,16,32,64", "frames=3"])["widths"] == (8, 16, 32, 64)
  with pytest.raises(ValueError, match="takes key=value with key in"):
    vs_torch.parse_opts(case, ["width=8"])
  with pytest.raises(ValueError, match="Unknown case"):
    vs_torch.load("resnet")
  result = _run("--case", "ogm_ge_cremad", "--opt", "nope=1")
  assert result.returncode != 0 and "takes key=value" in result.stderr


def test_torch_layout_avoids_channels_last_where_pytorch_crashes(monkeypatch):
  import torch

  from vs_torch import common
  monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
  for capability, expected in (("AVX2", torch.contiguous_format),
                               ("AVX512", torch.channels_last)):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
    assert common.torch_layout({"channels_last": True}, "cpu") == expected
    assert common.torch_layout({"channels_last": False}, "cpu") == torch.contiguous_format
  assert common.torch_layout({"channels_last": True}, "cuda") == torch.channels_last
