"""OPM: the notes' drop probabilities and rescale by hand, a PyTorch restatement of BML's drop
(calcu_q and the custom autograd rescale), the mask's statistics, validation, configs, and a
mid-epoch resume bit for bit with the drop active."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avjax.config import validate
from avjax.methods.base import true_class_scores as performance
from avjax.methods.opm import drop_mask, drop_probabilities
from tests.helpers import tiny_config
from tests.methods.common import (FUSIONS, all_finite, check_config, check_refused,
                                   check_resume, check_trains_one_epoch, fusion_config,
                                   smoke_cli)

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
  check_refused(tiny_config(data_dir, **{"method.name": "opm"}), match, **settings)


@pytest.mark.parametrize("name", ["opm_cremad", "opm_ks"])
def test_configs_validate(name):
  full, _ = check_config(name, "opm")
  assert full.optimizer.name == "adamw"


def test_smoke_config_trains_from_the_command_line(data_dir, tmp_path):
  rows = smoke_cli("opm", data_dir, str(tmp_path), "--config.method.modulation_starts=0",
                   "--config.train.num_epochs=1")
  train = [r for r in rows if r["split"] == "train"]
  assert all_finite(train, "loss") and all("opm_drop_audio" in r for r in train)


def test_mid_epoch_resume_is_bit_exact(data_dir, tmp_path, monkeypatch):
  config = tiny_config(data_dir, **{"method.name": "opm", "train.num_epochs": 2,
                                    "train.checkpoint_every_steps": 4, "train.log_every_steps": 1})
  config.method.modulation_starts = 1  # Drop in the second epoch, the one resumed mid-way.
  config.method.p_exe = 1.0
  first, second = check_resume(config, tmp_path, monkeypatch, 8, "batch 2").train  # Epoch means.
  assert first["opm_executed"] == 0 and first["opm_drop_audio"] == 0 == first["opm_drop_visual"]
  assert first["opm_kept_audio"] == 1 == first["opm_kept_visual"]
  assert second["opm_executed"] == 1  # p_exe 1: every step of the window drops.
  # Every step drops its leader with q >= q_base = 0.5 (unless the scores tie exactly).
  assert second["opm_drop_audio"] + second["opm_drop_visual"] >= 0.5
  assert min(second["opm_kept_audio"], second["opm_kept_visual"]) < 1


@pytest.mark.parametrize("fusion,form", FUSIONS)
def test_every_fusion_validates(data_dir, fusion, form):
  validate(fusion_config(data_dir, "opm", fusion, form))


def test_trains_one_epoch_with_a_non_concat_fusion(data_dir, tmp_path):
  check_trains_one_epoch(fusion_config(data_dir, "opm", "film", "ogm_ge"), str(tmp_path / "run"))
