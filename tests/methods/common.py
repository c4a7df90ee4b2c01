"""Checks every method's tests share: its config files, one CLI smoke run, a mid-epoch resume
compared with a straight run, the fusion heads it trains with, and its settings' refusals."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import subprocess
import sys
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from avjax import train as train_lib
from avjax.config import validate
from avjax.preemption import Preempted, PreemptionWatcher
from avjax.registry import ConfigError
from avjax.steps import make_train_step
from avjax.train import train_and_evaluate
from tests.helpers import REPO, preempt_at, restore_final_state, tiny_config
from tests.xla_env import subprocess_env

# The CLI smoke run reads the tests' shared tiny synthetic build at tiny widths.
SMOKE_FLAGS = ("--config.dataset.build_overrides.num_train=96",
               "--config.dataset.build_overrides.num_validation=32",
               "--config.dataset.build_overrides.num_test=32", "--config.input.image_size=16",
               "--config.model.av_resnet.widths=(4,8,8,8)", "--config.train.batch_size=16",
               "--config.train.progress=False")

# (model.fusion, fusion_kwargs.form) of av_resnet: every head, both forms of the asymmetric ones.
FUSIONS = (("sum", None), ("concat", None), ("film", "ogm_ge"), ("film", "mmcosine"),
           ("gated", "ogm_ge"), ("gated", "mmcosine"))


# ----------------------------------------------------------------------------------- configs
def config_module(name: str) -> ModuleType:
  """configs/<name>.py (`name` with or without '.py') as a fresh module."""
  stem = name.removesuffix(".py")
  spec = importlib.util.spec_from_file_location(f"_avjax_test_{stem}",
                                                os.path.join(REPO, "configs", f"{stem}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """configs/<name>.py's `get_config(arg)`."""
  return config_module(name).get_config(arg)


def check_config(name: str, method: str):
  """configs/<name>.py is a `method` run that validates; ':smoke' validates and is a synthetic_av
  '_smoke' run; an unknown argument is refused. Returns the validated (full, smoke) configs."""
  module = config_module(name)
  full = module.get_config()
  assert full.method.name == method
  smoke = module.get_config("smoke")
  assert smoke.method.name == method
  assert smoke.dataset.name == "synthetic_av" and smoke.name.endswith("_smoke")
  with pytest.raises(ValueError, match="Unknown config argument"):
    module.get_config("nonsense")
  return validate(full), validate(smoke)


def check_configs(method: str) -> list:
  """check_config for configs/<method>_cremad.py and _ks.py; returns their (full, smoke) pairs."""
  return [check_config(f"{method}_{dataset}", method) for dataset in ("cremad", "ks")]


def check_refused(config: ml_collections.ConfigDict, match: str, **settings) -> None:
  """`config` with `settings` (`key`: config.method.key; 'section.key': another section's) fails
  validation with a one-line ConfigError matching `match`."""
  for key, value in settings.items():
    section, name = key.split(".") if "." in key else ("method", key)
    config[section][name] = value
  with pytest.raises(ConfigError, match=match):
    validate(config)


# ----------------------------------------------------------------------------------- metrics
def metric_rows(workdir: str | os.PathLike, split: str | None = None) -> list[dict]:
  """The rows of <workdir>/metrics.jsonl (only `split`'s when given), in file order."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return [r for r in rows if split is None or r["split"] == split]


def all_finite(rows: list[dict], *keys: str) -> bool:
  """Whether there are rows and each has a finite value under every key."""
  return bool(rows) and all(math.isfinite(r[k]) for r in rows for k in keys)


# ------------------------------------------------------------------------------- CLI smoke run
def smoke_cli(method: str, data_dir: str, workdir: str, *extra: str,
              arg: str = "smoke") -> list[dict]:
  """`python -m avjax.main --config configs/<method>_cremad.py:<arg>` on the tests' tiny build,
  with `extra` flags; asserts it succeeds and reports train, val and test rows; returns its metric
  rows."""
  # As tests.helpers.run_cli, with room for the larger step programs on a loaded machine.
  result = subprocess.run(
      [sys.executable, "-m", "avjax.main", "--config", f"configs/{method}_cremad.py:{arg}",
       f"--config.dataset.data_dir={data_dir}", f"--workdir={workdir}", *SMOKE_FLAGS, *extra],
      cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = metric_rows(workdir)
  assert {r["split"] for r in rows} >= {"train", "val", "test"}
  return rows


# ------------------------------------------------------------------------------ mid-epoch resume
@dataclasses.dataclass(frozen=True)
class Resumed:
  """What check_resume saw. `final`: the straight run's last state (numpy leaves; the resumed
  run's is equal); `mid`, `mid_meta`: the checkpoint the preempted run left and its metadata;
  `metrics`: the resumed run's final report; `train`: the straight run's train rows."""
  final: Any
  mid: Any
  mid_meta: dict
  metrics: dict
  train: list[dict]
  straight: str
  resumed: str


def check_resume(config: ml_collections.ConfigDict, tmp_path, monkeypatch, stop_step: int,
                 expect: str | None = None) -> Resumed:
  """Trains `config` straight, and again stopped during step `stop_step` (a mid-epoch batch;
  `expect`, when given, in the Preempted message) then resumed; the final states must be equal
  leaf by leaf, and so the validation rows."""
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  train_and_evaluate(config, straight)
  monkeypatch.setattr(train_lib, "PreemptionWatcher", preempt_at(stop_step))
  with pytest.raises(Preempted, match=expect):
    train_and_evaluate(config, resumed)
  mid, mid_meta = restore_final_state(resumed, config)
  monkeypatch.setattr(train_lib, "PreemptionWatcher", PreemptionWatcher)
  metrics = train_and_evaluate(config, resumed)
  a, _ = restore_final_state(straight, config)
  b, _ = restore_final_state(resumed, config)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert metric_rows(straight, "val") == metric_rows(resumed, "val")
  return Resumed(a, mid, mid_meta, metrics, metric_rows(straight, "train"), straight, resumed)


# ------------------------------------------------------------------------------------- fusions
def fusion_config(data_dir: str, method: str, fusion: str, form: str | None = None,
                  **overrides) -> ml_collections.ConfigDict:
  """The tiny config of `method` on av_resnet with `fusion` (and its `form`, when given)."""
  config = tiny_config(data_dir, **{"method.name": method, "model.fusion": fusion, **overrides})
  if form:
    config.model.fusion_kwargs.form = form
  return config


def check_trains_one_epoch(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """One epoch of `config` (no validation split) ends with an accuracy in [0, 1] and finite,
  never skipped, train steps; returns the train rows."""
  config.train.num_epochs, config.dataset.val_split = 1, ""
  final = train_and_evaluate(config, workdir)
  assert 0.0 <= final["accuracy"] <= 1.0
  train = metric_rows(workdir, "train")
  assert all_finite(train, "loss") and all(r.get("skipped_steps", 0) == 0 for r in train)
  return train


# ---------------------------------------------------------------------------------------- steps
def first_step(exp, epoch: int = 0):
  """One jitted train step of `exp` (steps.setup's, 6 steps per epoch) from its initial state, at
  `epoch`, on a fixed batch of 8 random 16x16 clips of 6 classes; returns (new state, metrics)."""
  rng = np.random.default_rng(0)
  batch = {"audio": rng.normal(size=(8, 16, 16, 1)).astype(np.float32),
           "visual": rng.integers(0, 255, size=(8, 2, 16, 16, 3)).astype(np.uint8),
           "label": np.arange(8) % 6}
  step = jax.jit(make_train_step(exp.graphs, exp.tx, exp.method, 6))
  return step(exp.state, batch, jnp.asarray(epoch, jnp.int32))
