"""LFM: the notes' alignment, step-loss, schedule and learnable-update cases, the HVP against
PyTorch, the checks, the configs, a CLI smoke run and a bit-exact mid-epoch resume."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avjax import data
from avjax import workdir as workdir_lib
from avjax.config import validate
from avjax.methods.base import heldout_fold
from avjax.methods.lfm import (alignment, fitted_alpha, heuristic_alpha, hvp_of, learnable_step,
                               lfm_loss)
from avjax.models.outputs import ModelOutput
from avjax.registry import ConfigError
from tests.helpers import tiny_config
from tests.methods.common import check_configs, check_resume, smoke_cli

ZA, ZV = jnp.array([[math.log(3.0), 0.0]]), jnp.array([[0.0, 0.0]])  # p = (.75, .25), q = (.5, .5)


def _output(za, zv):
  return ModelOutput(logits=za + zv, modality_logits={"audio": za, "visual": zv}, features={})


def test_alignment_by_hand():
  np.testing.assert_allclose(alignment(ZA, ZV), [0.034841], atol=1e-6)
  np.testing.assert_allclose(alignment(ZA, ZV, "js"), [0.033822], atol=1e-6)
  np.testing.assert_allclose(alignment(ZV, ZA), alignment(ZA, ZV), rtol=1e-6)  # Symmetric.
  np.testing.assert_allclose(alignment(ZA, ZA), [0.0], atol=1e-7)


def test_step_loss_by_hand():
  loss, m = lfm_loss(_output(ZA, ZV), jnp.array([0]), jnp.array([0.05, 0.95]))
  np.testing.assert_allclose(m["loss_cls"], 0.455746, atol=1e-6)  # CE((z_a + z_v) / 2).
  np.testing.assert_allclose(loss, 0.111773, atol=1e-6)
  loss, m = lfm_loss(_output(ZA, ZV), jnp.array([0]), jnp.array([0.95, 0.05]), "balancebenchmark")
  np.testing.assert_allclose(m["loss_cls"], 0.287682, atol=1e-6)  # BB: CE(z_a + z_v).
  np.testing.assert_allclose(loss, 0.550080, atol=1e-6)


def test_schedules_by_hand():
  for epoch, value in ((0, 0.204624), (10, 0.247759), (80, 0.500220), (199, 0.915989)):
    cls, align = fitted_alpha(epoch)
    np.testing.assert_allclose(cls, value, atol=1e-6)
    assert cls + align == 1.0
  assert heuristic_alpha(0) == pytest.approx((0.05, 0.95))
  assert heuristic_alpha(1)[1] == pytest.approx(math.exp(-0.3))
  assert heuristic_alpha(20) == pytest.approx((0.95, 0.05))


def test_learnable_update_on_a_toy_model():
  # theta = 1, L_cls = theta^2, A = 0, alpha = (0.05, 0.95): H_total = 0.1, g_cls = 2, hvp = 0.2.
  alpha_cls = 0.05
  g_cls = jax.grad(lambda t: t ** 2)(1.0)
  hvp = hvp_of(lambda t: alpha_cls * t ** 2, 1.0, g_cls)
  np.testing.assert_allclose(hvp, 0.2, rtol=1e-6)
  cls, align, lr = learnable_step(0.95, 1e-4, float(hvp), epoch=1)
  np.testing.assert_allclose(align, 0.94998, rtol=1e-9)
  assert cls + align == 1.0 and lr == 1e-4
  _, align, lr = learnable_step(0.95, 1e-4, float(hvp), epoch=20)  # Halved before the update.
  assert lr == 5e-5 and align == pytest.approx(0.95 - 5e-5 * 0.2)
  assert learnable_step(0.95, 1e-4, -1e3, 3)[1] == 0.95  # Clipped to [0.05, 0.95].
  assert learnable_step(0.06, 1e-4, 1e3, 3)[1] == 0.05
  assert learnable_step(0.5, 1e-4, 0.0, 0)[2] == 1e-4  # Epoch 0 does not halve.


def test_hvp_matches_pytorch_double_backward():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  xa, xv = rng.normal(size=(8, 3)).astype(np.float32), rng.normal(size=(8, 3)).astype(np.float32)
  wa, wv = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(3, 4)).astype(np.float32)
  y = rng.integers(0, 4, 8)
  alpha = (0.3, 0.7)

  def terms(params):
    out = _output(jnp.asarray(xa) @ params["a"], jnp.asarray(xv) @ params["v"])
    loss, m = lfm_loss(out, jnp.asarray(y), jnp.asarray(alpha))
    return m["loss_cls"], loss / 2

  params = {"a": jnp.asarray(wa), "v": jnp.asarray(wv)}
  g_cls = jax.grad(lambda p: terms(p)[0])(params)
  hvp = hvp_of(lambda p: terms(p)[1], params, g_cls)

  F = torch.nn.functional
  ta = torch.tensor(wa, requires_grad=True)
  tv = torch.tensor(wv, requires_grad=True)
  oa, ov = torch.tensor(xa) @ ta, torch.tensor(xv) @ tv
  p, q = F.softmax(oa, -1), F.softmax(ov, -1)
  m = (p + q) / 2
  align = 0.5 * ((m * (m.log() - p.log())).sum(-1) + (m * (m.log() - q.log())).sum(-1)).mean()
  cls = F.cross_entropy((oa + ov) / 2, torch.tensor(y))
  total = alpha[0] * cls + alpha[1] * align
  g_tot = torch.autograd.grad(total, (ta, tv), create_graph=True)
  g_c = [g.detach() for g in torch.autograd.grad(cls, (ta, tv), retain_graph=True)]
  expected = torch.autograd.grad(sum((a * b).sum() for a, b in zip(g_tot, g_c)), (ta, tv))
  np.testing.assert_allclose(hvp["a"], expected[0].numpy(), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(hvp["v"], expected[1].numpy(), rtol=1e-4, atol=1e-6)


def test_checks(data_dir):
  c = tiny_config(data_dir, **{"method.name": "lfm", "model.fusion": "gated"})
  validate(c)
  c.method.variant = "balancebenchmark"
  with pytest.raises(ConfigError, match="modality_heads='separate'|fusion"):
    validate(c)
  c.method.variant, c.train.eval_batch_size = "intended", 4
  with pytest.raises(ConfigError, match="eval_batch_size"):
    validate(c)
  c.method.schedule = "fitted"
  validate(c)
  c.method.schedule = "cosine"
  with pytest.raises(ConfigError, match="schedule"):
    validate(c)


def test_configs():
  check_configs("lfm")


def test_smoke_cli(data_dir, tmp_path):
  rows = smoke_cli("lfm", data_dir, str(tmp_path / "smoke"), "--config.method.schedule=heuristic")
  train = [r for r in rows if r["split"] == "train"]
  assert [r["lfm_alpha_align"] for r in train] == pytest.approx([0.95, math.exp(-0.3)])


def test_resumes_bit_exactly_mid_epoch(data_dir, tmp_path, monkeypatch):
  config = tiny_config(data_dir, **{"method.name": "lfm", "train.checkpoint_every_steps": 3})
  # 80 training examples after the 16 held out: 5 steps per epoch; stop during step 7 (epoch 2).
  run = check_resume(config, tmp_path, monkeypatch, 7, "batch 2")
  final, train = run.final, run.train
  alpha = final.method_state["alpha"]
  assert alpha.sum() == pytest.approx(1.0) and 0.05 <= alpha[1] <= 0.95
  assert np.isfinite(final.method_state["hvp"]) and final.method_state["hvp"] != 0
  assert all(0.05 <= r["lfm_alpha_align"] <= 0.95 for r in train)
  _, held = heldout_fold(config.seed, 96, 16 / 96)
  plans = data.PlanStore(workdir_lib.plans(str(tmp_path / "straight")), enabled=False)
  visited = plans.load(1).indices
  assert len(held) == 16 and len(visited) == 80 and not set(visited) & set(held)
