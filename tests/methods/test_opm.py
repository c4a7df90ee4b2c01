"""OPM: the notes' drop probabilities and rescale by hand, a PyTorch restatement of BML's drop
(calcu_q and the custom autograd rescale), the mask's statistics, validation, configs, and a
mid-epoch resume bit for bit with the drop active."""

from __future__ import annotations

import importlib.util
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avjax import train as train_lib
from avjax.config import validate
from avjax.methods.base import true_class_scores as performance
from avjax.methods.opm import drop_mask, drop_probabilities
from avjax.preemption import Preempted, PreemptionWatcher
from avjax.registry import ConfigError
from avjax.train import train_and_evaluate
from tests.helpers import REPO, preempt_at, restore_final_state, run_cli, tiny_config

f32 = lambda x: jnp.asarray(x, jnp.float32)
WIDTHS = {"audio": 512, "visual": 512}


def _q(p_a, p_v, q_base=0.5, lam=0.5, eps=0.0):
  q = drop_probabilities({"audio": f32(p_a), "visual": f32(p_v)}, q_base, lam, eps)
  return float(q["audio"]), float(q["visual"])


def test_drop_probability_oracle():
  # p = (40, 20): rho_a = tanh(1) = 0.761594 -> q_a = 0.5 (1 + 0.5 rho_a) = 0.690399, q_v = 0.
  assert _q(40.0, 20.0) == pytest.approx((0.690399, 0.0), abs=1e-6)
  assert _q(20.0, 40.0) == pytest.approx((0.0, 0.690399), abs=1e-6)
  assert _q(25.0, 25.0) == (0.0, 0.0)
  assert _q(100.0, 1.0, q_base=0.9, lam=1.0)[0] == 1.0  # Clipped at 1.
  # BB's epsilon: p_a / (p_v + 1e-5).
  assert _q(40.0, 20.0, eps=1e-5)[0] == pytest.approx(
      0.5 * (1 + 0.5 * math.tanh(40 / (20 + 1e-5) - 1)), rel=1e-6)


def test_drop_mask_rescale_and_kept_share():
  q = {"audio": f32(0.690399), "visual": f32(0.0)}
  mult, executed = drop_mask(q, WIDTHS, 20000, 1.0, jax.random.key(0))
  mult = np.asarray(mult)
  assert bool(executed)
  scale = 1 / (1 - 0.345199)  # theta = mean q = 0.345199 -> 1.527182.
  assert scale == pytest.approx(1.527182, rel=1e-6)
  np.testing.assert_allclose(np.unique(mult[:, 0]), [0.0, scale], rtol=1e-6)
  np.testing.assert_allclose(mult[:, 1], scale, rtol=1e-6)  # The weak modality: always kept.
  assert np.mean(mult[:, 0] > 0) == pytest.approx(0.309601, abs=0.01)
  assert np.all(mult.max(1) > 0)  # No example loses both (BML's update_flag all True).


def test_equal_performance_leaves_features_unchanged():
  mult, executed = drop_mask({"audio": f32(0.0), "visual": f32(0.0)}, WIDTHS, 8, 1.0,
                             jax.random.key(3))
  assert bool(executed)
  np.testing.assert_array_equal(mult, np.ones((8, 2)))


def test_drop_executes_with_probability_p_exe():
  q = {"audio": f32(0.6), "visual": f32(0.0)}
  runs = [bool(drop_mask(q, WIDTHS, 4, 0.7, jax.random.key(i))[1]) for i in range(400)]
  assert np.mean(runs) == pytest.approx(0.7, abs=0.07)
  mult, executed = drop_mask(q, WIDTHS, 4, 0.0, jax.random.key(0))
  assert not bool(executed) and np.all(np.asarray(mult) == 1.0)


def test_performance_is_a_batch_sum():
  logits = {"audio": f32(np.log([[0.9, 0.1], [0.3, 0.7]])),
            "visual": f32(np.log([[0.5, 0.5], [0.5, 0.5]]))}
  p = performance(logits, jnp.array([0, 1]))
  assert float(p["audio"]) == pytest.approx(1.6, rel=1e-6)
  assert float(p["visual"]) == pytest.approx(1.0, rel=1e-6)


def test_matches_pytorch_restatement():
  """BML's calcu_q and Modality_drop.execute_drop (custom autograd: x / (1 - theta) forward and
  backward) restated in torch, on a concat head with a given keep mask, against avjax's q and
  multiplier through the same head."""
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  feats = [rng.normal(size=(6, 4)), rng.normal(size=(6, 4))]
  w, b = rng.normal(size=(3, 8)), rng.normal(size=3)
  labels = np.array([0, 1, 2, 0, 1, 2])
  perf = (3.7, 1.9)

  # --- torch.
  p1, p2 = torch.tensor(perf[0]), torch.tensor(perf[1])
  relu = torch.nn.functional.relu
  r1, r2 = torch.tanh(relu(p1 / p2 - 1)), torch.tanh(relu(p2 / p1 - 1))
  q = torch.tensor([0.5 * (1 + 0.5 * r1) if r1 > 0 else 0.0,
                    0.5 * (1 + 0.5 * r2) if r2 > 0 else 0.0])
  q = torch.clip(q, 0.0, 1.0)
  dims = torch.tensor([4.0, 4.0])
  theta = torch.sum(dims * q) / torch.sum(dims)

  class Rescale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, t):  # pylint: disable=arguments-differ
      ctx.t = t.item()
      return x / (1 - t.item())

    @staticmethod
    def backward(ctx, grad):  # pylint: disable=arguments-differ
      return grad / (1 - ctx.t), None

  keep = torch.tensor(rng.random((2, 6, 1)) >= q.numpy()[:, None, None], dtype=torch.float64)
  tf = [torch.tensor(f, requires_grad=True) for f in feats]
  tw, tb = torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)
  dropped = Rescale.apply(torch.stack(tf) * keep, theta)
  out = torch.cat([dropped[0], dropped[1]], 1) @ tw.T + tb
  torch.nn.functional.cross_entropy(out, torch.tensor(labels)).backward()

  # --- avjax.
  qj = drop_probabilities({"audio": f32(perf[0]), "visual": f32(perf[1])}, 0.5, 0.5)
  np.testing.assert_allclose([qj["audio"], qj["visual"]], q.numpy(), rtol=1e-6)
  th = (4 * qj["audio"] + 4 * qj["visual"]) / 8
  mult = f32(keep.numpy()[:, :, 0].T) / (1 - th)  # (B, 2): what drop_mask returns when it runs.

  def loss(params):
    a, v, wj, bj = params
    out = jnp.concatenate([a * mult[:, :1], v * mult[:, 1:]], 1) @ wj.T + bj
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(out), jnp.asarray(labels)[:, None], 1))

  grads = jax.grad(loss)(tuple(f32(x) for x in (*feats, w, b)))
  for got, want in zip(grads, (*[t.grad for t in tf], tw.grad, tb.grad)):
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("settings,match", [
    ({"q_base": 1.5}, "q_base=1.5 must lie in"),
    ({"variant": "bml"}, "variant='bml' must be one of"),
    ({"modulation_starts": 3, "modulation_ends": 1}, "0 <= starts <= ends"),
])
def test_validate_refuses_bad_settings(data_dir, settings, match):
  config = tiny_config(data_dir, **{"method.name": "opm"})
  for k, v in settings.items():
    config.method[k] = v
  with pytest.raises(ConfigError, match=match):
    validate(config)


def _load_config(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("name", ["opm_cremad", "opm_ks"])
def test_configs_validate(name):
  module = _load_config(name)
  full = validate(module.get_config())
  assert full.method.name == "opm" and full.optimizer.name == "adamw"
  smoke = validate(module.get_config("smoke"))
  assert smoke.dataset.name == "synthetic_av" and smoke.name.endswith("_smoke")
  with pytest.raises(ValueError, match="Unknown config argument"):
    module.get_config("nonsense")


def test_smoke_config_trains_from_the_command_line(data_dir, tmp_path):
  run_cli("avjax.main", "--config", "configs/opm_cremad.py:smoke",
          f"--config.dataset.data_dir={data_dir}", "--config.train.progress=False",
          "--config.method.modulation_starts=0", "--config.train.num_epochs=1",
          f"--workdir={tmp_path}")
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  train = [r for r in rows if r["split"] == "train"]
  assert train and all(math.isfinite(r["loss"]) and "opm_drop_audio" in r for r in train)


def test_mid_epoch_resume_is_bit_exact(data_dir, tmp_path, monkeypatch):
  config = tiny_config(data_dir, **{"method.name": "opm", "train.num_epochs": 2,
                                    "train.checkpoint_every_steps": 4, "train.log_every_steps": 1})
  config.method.modulation_starts = 1  # Drop in the second epoch, the one resumed mid-way.
  config.method.p_exe = 1.0
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  train_and_evaluate(config, straight)
  monkeypatch.setattr(train_lib, "PreemptionWatcher", preempt_at(8))
  with pytest.raises(Preempted):
    train_and_evaluate(config, resumed)
  monkeypatch.setattr(train_lib, "PreemptionWatcher", PreemptionWatcher)
  train_and_evaluate(config, resumed)
  a, _ = restore_final_state(straight, config)
  b, _ = restore_final_state(resumed, config)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  rows = [json.loads(line) for line in open(os.path.join(straight, "metrics.jsonl"))]
  first, second = [r for r in rows if r["split"] == "train"]  # Epoch means.
  assert first["opm_executed"] == 0 and first["opm_drop_audio"] == 0 == first["opm_drop_visual"]
  assert first["opm_kept_audio"] == 1 == first["opm_kept_visual"]
  assert second["opm_executed"] == 1  # p_exe 1: every step of the window drops.
  # Every step drops its leader with q >= q_base = 0.5 (unless the scores tie exactly).
  assert second["opm_drop_audio"] + second["opm_drop_visual"] >= 0.5
  assert min(second["opm_kept_audio"], second["opm_kept_visual"]) < 1


FUSIONS = [("sum", None), ("concat", None), ("film", "ogm_ge"), ("film", "mmcosine"),
           ("gated", "ogm_ge"), ("gated", "mmcosine")]


@pytest.mark.parametrize("fusion,form", FUSIONS)
def test_every_fusion_validates(data_dir, fusion, form):
  config = tiny_config(data_dir, **{"method.name": "opm", "model.fusion": fusion})
  if form:
    config.model.fusion_kwargs.form = form
  validate(config)


def test_trains_one_epoch_with_a_non_concat_fusion(data_dir, tmp_path):
  config = tiny_config(data_dir, **{"method.name": "opm", "model.fusion": "film",
                                    "train.num_epochs": 1, "dataset.val_split": ""})
  if "film" != "sum":
    config.model.fusion_kwargs.form = "ogm_ge"
  final = train_and_evaluate(config, str(tmp_path / "run"))
  assert 0.0 <= final["accuracy"] <= 1.0
  rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
  train = [r for r in rows if r["split"] == "train"]
  assert train and all(math.isfinite(r["loss"]) and r.get("skipped_steps", 0) == 0 for r in train)
