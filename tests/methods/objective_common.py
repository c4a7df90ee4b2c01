"""Shared pieces of the objective-level method tests (MBSD, CML, G-Blending, LFM): the config
checks, one CLI smoke run and the mid-epoch resume comparison."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
from types import ModuleType

import jax
import numpy as np
import pytest

from avjax import train as train_lib
from avjax import writers
from avjax.config import validate
from avjax.preemption import Preempted, PreemptionWatcher
from avjax.train import train_and_evaluate
from tests.helpers import REPO, preempt_at, restore_final_state
from tests.xla_env import subprocess_env

ROOT = pathlib.Path(__file__).resolve().parents[2]
# The CLI smoke run reads the tests' shared tiny synthetic build at tiny widths.
SMOKE_FLAGS = ("--config.dataset.build_overrides.num_train=96",
               "--config.dataset.build_overrides.num_validation=32",
               "--config.dataset.build_overrides.num_test=32", "--config.input.image_size=16",
               "--config.model.av_resnet.widths=(4,8,8,8)", "--config.train.batch_size=16",
               "--config.train.progress=False")


def config_module(name: str) -> ModuleType:
  spec = importlib.util.spec_from_file_location(f"_avjax_test_{name}", ROOT / "configs" /
                                                f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def check_configs(method: str) -> None:
  """configs/<method>_cremad.py and _ks.py validate; ':smoke' is synthetic_av; junk is refused."""
  for dataset in ("cremad", "ks"):
    module = config_module(f"{method}_{dataset}")
    full = module.get_config()
    assert full.method.name == method
    validate(full)
    smoke = module.get_config("smoke")
    validate(smoke)
    assert smoke.dataset.name == "synthetic_av" and smoke.name.endswith("_smoke")
    with pytest.raises(ValueError, match="Unknown config argument"):
      module.get_config("nonsense")


def smoke_cli(method: str, data_dir: str, workdir: str, *extra: str) -> list[dict]:
  """`python -m avjax.main --config configs/<method>_cremad.py:smoke` on the tiny build; returns
  the run's metric rows."""
  # As tests.helpers.run_cli, with room for G-Blending's larger step program on a loaded machine.
  result = subprocess.run(
      [sys.executable, "-m", "avjax.main", "--config", f"configs/{method}_cremad.py:smoke",
       f"--config.dataset.data_dir={data_dir}", f"--workdir={workdir}", *SMOKE_FLAGS, *extra],
      cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = writers.read_metrics(workdir)
  assert {r["split"] for r in rows} >= {"train", "val", "test"}
  return rows


def check_resume(config, tmp_path, monkeypatch, stop_step: int, expect: str):
  """Trains `config` straight and stopped at `stop_step` (a mid-epoch batch, `expect` in the
  message) then resumed; the final states must be equal leaf by leaf, and so the validation
  rows. Returns (final state, train rows) of the straight run."""
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  train_and_evaluate(config, straight)
  monkeypatch.setattr(train_lib, "PreemptionWatcher", preempt_at(stop_step))
  with pytest.raises(Preempted, match=expect):
    train_and_evaluate(config, resumed)
  monkeypatch.setattr(train_lib, "PreemptionWatcher", PreemptionWatcher)
  train_and_evaluate(config, resumed)
  a, _ = restore_final_state(straight, config)
  b, _ = restore_final_state(resumed, config)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  rows = lambda w: [json.loads(line) for line in open(os.path.join(w, "metrics.jsonl"))]
  val = lambda w: [r for r in rows(w) if r["split"] == "val"]
  assert val(straight) == val(resumed)
  return a, [r for r in rows(straight) if r["split"] == "train"]
