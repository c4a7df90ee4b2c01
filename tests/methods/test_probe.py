"""`python -m avjax.probe`: linear probes (one per modality and one on the fused features) of a
trained run's frozen encoders."""

from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avjax import probe
from avjax import workdir as workdir_lib
from avjax.config import base_config
from avjax.models import build_model
from avjax.registry import ConfigError
from avjax.tasks import make_task
from tests.helpers import run_cli


def test_fit_matches_a_torch_restatement():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  x = rng.normal(size=(40, 5)).astype(np.float32)
  y = rng.integers(0, 3, size=40)
  w, b = probe.fit_softmax_regression(jnp.asarray(x), jnp.asarray(y), 3, steps=30, lr=0.05,
                                      l2=0.01)
  tw = torch.zeros(5, 3, requires_grad=True)
  tb = torch.zeros(3, requires_grad=True)
  opt = torch.optim.Adam([tw, tb], lr=0.05)
  for _ in range(30):
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(torch.from_numpy(x) @ tw + tb,
                                             torch.from_numpy(y)) + 0.005 * (tw ** 2).sum()
    loss.backward()
    opt.step()
  np.testing.assert_allclose(w, tw.detach().numpy(), atol=2e-5)
  np.testing.assert_allclose(b, tb.detach().numpy(), atol=2e-5)


def test_separate_probes_per_modality_and_fused():
  """Audio features separate the classes, visual ones are noise: audio and fused probes are
  perfect, the visual probe is not (it is fitted on the visual features alone)."""
  rng = np.random.default_rng(1)
  labels = {s: rng.integers(0, 4, size=200) for s in ("train", "test")}
  feats = {}
  for s, y in labels.items():
    audio = np.eye(4)[y] * 3 + 0.1 * rng.normal(size=(200, 4))
    visual = rng.normal(size=(200, 6))
    feats[s] = {"audio": audio, "visual": visual, "fused": np.concatenate([audio, visual], 1)}
  acc = probe.probe_accuracies(feats, labels, 4, steps=200, lr=0.05, l2=1e-4)
  assert acc["test"]["audio"] == 1.0 and acc["test"]["fused"] == 1.0
  assert acc["test"]["visual"] < 0.5
  assert acc["train"]["visual"] > acc["test"]["visual"]  # Fitted on train noise.
  # Standardisation: a constant feature keeps std 1 (no division by zero).
  mean, std = probe.standardiser(np.ones((3, 2)))
  np.testing.assert_array_equal(std, [1.0, 1.0])


def _features_shapes(config, inputs, num_classes=4):
  model = build_model(config, num_classes, {})
  model.eval()
  graph, state = nnx.split(model)
  fn = probe.features_fn(make_task(config))
  batch = {**inputs, "label": jnp.zeros((2,), jnp.int32)}
  return jax.eval_shape(lambda st: fn(nnx.merge(graph, st), batch), state)


def test_features_of_the_vavl_and_vat_families():
  from avjax.models.vat import model_section  # pylint: disable=import-outside-toplevel
  from tests.methods.test_vavl import TINY as VAVL_TINY  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel
  c = base_config()
  c.model.name = "vavl"
  c.model.vavl = ml_collections.ConfigDict(VAVL_TINY)
  shapes = _features_shapes(c, {"audio": jnp.zeros((2, 6, 12)), "visual": jnp.zeros((2, 4, 10))})
  assert shapes["audio"].shape == (2, 8) and shapes["fused"].shape == (2, 16)
  c = base_config()
  c.model.name = "vat_classifier"
  c.model.vat = model_section("small", width=16, heads=2, mlp_dim=32, visual_layers=1,
                              audio_layers=1, fusion_layers=1, embed_dim=8, patch_size=8,
                              audio_patch_size=(8, 16), audio_size=(16, 32))
  c.input.num_frames, c.input.image_size = 2, 16
  shapes = _features_shapes(c, {"audio": jnp.zeros((2, 16, 32, 1)),
                                "visual": jnp.zeros((2, 2, 16, 16, 3))})
  assert shapes["visual"].shape == (2, 16) and shapes["fused"].shape == (2, 32)
  assert shapes["target"].shape == (2,)


def test_probe_of_a_trained_run_and_its_files(unimodal_runs, tmp_path):
  run = str(tmp_path / "run")
  shutil.copytree(unimodal_runs["audio"], run)
  record = probe.probe_workdir(run, split="test", steps=50)
  assert set(record["accuracy"]) == {"train", "test"}
  assert set(record["accuracy"]["test"]) == {"audio", "visual", "fused"}
  assert record["feature_dims"] == {"audio": 8, "visual": 8, "fused": 16}
  assert record["examples"] == {"train": 96, "test": 32}
  assert all(0 <= a <= 1 for row in record["accuracy"].values() for a in row.values())
  # The command line: a table and probe.json, with the same numbers (the fit is deterministic).
  out = run_cli("avjax.probe", "--workdir", run, "--split", "test", "--steps", "50").stdout
  assert "fused" in out and "probe.json" in out
  assert json.load(open(os.path.join(run, "probe.json")))["accuracy"] == record["accuracy"]
  assert workdir_lib.new_probe_file(run) == os.path.join(run, "probe_1.json")  # Never overwritten.
  # A workdir without checkpoints: one line.
  bare = tmp_path / "bare"
  bare.mkdir()
  shutil.copy(os.path.join(run, "config.json"), bare)
  with pytest.raises(ConfigError, match="has no checkpoints/ directory"):
    probe.probe_workdir(str(bare))


def test_help_and_missing_workdir(tmp_path):
  out = run_cli("avjax.probe", "--help").stdout
  assert "python -m avjax.probe --workdir" in out
  import subprocess, sys  # pylint: disable=import-outside-toplevel,multiple-imports
  from tests.helpers import REPO  # pylint: disable=import-outside-toplevel
  from tests.xla_env import subprocess_env  # pylint: disable=import-outside-toplevel
  result = subprocess.run([sys.executable, "-m", "avjax.probe", "--workdir",
                           str(tmp_path / "nope")], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert result.stderr.strip().count("\n") == 0 and "does not exist" in result.stderr
