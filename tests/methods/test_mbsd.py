"""MBSD (BalanceBenchmark's self-distillation): the notes' hand-computed case, the intended KL
against PyTorch, the fusion check, the configs, a CLI smoke run and a bit-exact mid-epoch resume."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avjax.config import validate
from avjax.methods.mbsd import mbsd_loss, mbsd_terms
from avjax.registry import ConfigError
from tests.helpers import tiny_config
from tests.methods.common import check_configs, check_resume, smoke_cli

ZA, ZV, Y = np.array([[2.0, 0.0]]), np.array([[0.0, 0.0]]), np.array([0])


def _loss(variant, za=ZA, zv=ZV, y=Y):
  za, zv = jnp.asarray(za, jnp.float32), jnp.asarray(zv, jnp.float32)
  return mbsd_loss(za + zv, {"audio": za, "visual": zv}, jnp.asarray(y), variant)


def test_balancebenchmark_case_by_hand():
  # Notes §3: p_a = (0.880797, 0.119203), p_v = (0.5, 0.5), w = 0.380797, KL = -0.786972,
  # RS = 2, CEs 0.126928 / 0.126928 / 0.693147: L = 1.408921.
  loss, m = _loss("balancebenchmark")
  np.testing.assert_allclose(m["mbsd_weight"], 0.380797, atol=1e-6)
  np.testing.assert_allclose(m["mbsd_distill"], 0.380797 * -0.786972, atol=1e-6)
  np.testing.assert_allclose(m["mbsd_match"], 0.761594, atol=1e-6)
  np.testing.assert_allclose(loss, 1.408921, atol=1e-6)


def test_intended_case_by_hand():
  pa = np.array([math.exp(2) / (1 + math.exp(2)), 1 / (1 + math.exp(2))])
  kl = float(np.sum(pa * np.log(pa / 0.5)))  # KL(p_audio || p_visual): audio is the strong one.
  loss, m = _loss("intended")
  np.testing.assert_allclose(m["mbsd_distill"], 0.380797 * kl, atol=1e-6)
  np.testing.assert_allclose(loss, 0.126928 * 2 + 0.693147 + 0.761594 + 0.380797 * kl, atol=1e-6)
  assert kl > 0


def test_both_wrong_means_no_extra_terms():
  za, zv = np.array([[0.0, 2.0]]), np.array([[0.0, 1.0]])  # Label 0: both predict class 1.
  for variant in ("intended", "balancebenchmark"):
    loss, m = _loss(variant, za, zv)
    assert float(m["mbsd_weight"]) == 0.0
    ces = m["loss_fused"] + m["loss_audio"] + m["loss_visual"]
    np.testing.assert_allclose(loss, ces, rtol=1e-6)


def test_intended_distills_only_into_the_weak_modality():
  # With a detached teacher and weight, the distillation term moves only the weak (visual) logits.
  rng = np.random.default_rng(0)
  za, zv, y = rng.normal(size=(6, 4)) * 2, rng.normal(size=(6, 4)), rng.integers(0, 4, 6)
  za[np.arange(6), y] += 4.0  # Audio strong and correct everywhere.
  fn = lambda a, v, mode: jnp.mean(
      (lambda t: t["weight"] * t["distill"])(mbsd_terms(a, v, jnp.asarray(y), mode)))
  ga, gv = jax.grad(fn, argnums=(0, 1))(jnp.asarray(za), jnp.asarray(zv), "intended")
  assert float(jnp.abs(ga).max()) == 0.0 and float(jnp.abs(gv).max()) > 0.0
  ga, _ = jax.grad(fn, argnums=(0, 1))(jnp.asarray(za), jnp.asarray(zv), "balancebenchmark")
  assert float(jnp.abs(ga).max()) > 0.0  # BB's form is not detached.


def test_matches_pytorch_restatement():
  torch = pytest.importorskip("torch")
  F = torch.nn.functional
  rng = np.random.default_rng(1)
  za, zv = rng.normal(size=(8, 5)) * 2, rng.normal(size=(8, 5)) * 2
  y = rng.integers(0, 5, 8)
  ta = torch.tensor(za, requires_grad=True)
  tv = torch.tensor(zv, requires_grad=True)
  ty = torch.tensor(y)

  def torch_loss(variant):
    pa, pv = F.softmax(ta, -1), F.softmax(tv, -1)
    pa_y, pv_y = pa[torch.arange(8), ty], pv[torch.arange(8), ty]
    correct = (ta.argmax(-1) == ty) | (tv.argmax(-1) == ty)
    w = torch.where(correct, (pa_y - pv_y).abs(), torch.zeros(8, dtype=ta.dtype))
    rs = ((ta - tv) ** 2).mean(-1)
    if variant == "balancebenchmark":  # BB: kl_div(ps, pw) per example on the scalars.
      ps, pw = torch.maximum(pa_y, pv_y), torch.minimum(pa_y, pv_y)
      d = torch.stack([F.kl_div(ps[i], pw[i], reduction="mean") for i in range(8)])
    else:
      strong = (pa_y >= pv_y)[:, None]
      log_s = torch.where(strong, F.log_softmax(ta, -1), F.log_softmax(tv, -1)).detach()
      log_w = torch.where(strong, F.log_softmax(tv, -1), F.log_softmax(ta, -1))
      d = F.kl_div(log_w, log_s, reduction="none", log_target=True).sum(-1)
      w = w.detach()
    return (F.cross_entropy(ta + tv, ty) + F.cross_entropy(ta, ty) + F.cross_entropy(tv, ty)
            + (w * rs).mean() + (w * d).mean())

  for variant in ("intended", "balancebenchmark"):
    ta.grad = tv.grad = None
    expected = torch_loss(variant)
    expected.backward()
    fn = lambda a, v, variant=variant: mbsd_loss(a + v, {"audio": a, "visual": v},
                                                 jnp.asarray(y), variant)[0]
    a, v = jnp.asarray(za, jnp.float32), jnp.asarray(zv, jnp.float32)
    loss, (ga, gv) = jax.value_and_grad(fn, argnums=(0, 1))(a, v)
    np.testing.assert_allclose(loss, expected.item(), rtol=1e-5)
    np.testing.assert_allclose(ga, ta.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gv, tv.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_slices_need_an_additive_fusion(data_dir):
  c = tiny_config(data_dir, **{"method.name": "mbsd", "model.fusion": "film"})
  validate(c)  # Separate heads work with every fusion.
  c.method.variant = "balancebenchmark"
  with pytest.raises(ConfigError, match="modality_heads='separate'"):
    validate(c)
  c.method.modality_heads = "separate"
  validate(c)
  c.method.variant = "bb"
  with pytest.raises(ConfigError, match="variant"):
    validate(c)


def test_configs():
  check_configs("mbsd")


def test_smoke_cli(data_dir, tmp_path):
  rows = smoke_cli("mbsd", data_dir, str(tmp_path / "smoke"))
  train = [r for r in rows if r["split"] == "train"][-1]
  assert all(math.isfinite(train[k]) for k in ("mbsd_weight", "mbsd_distill", "mbsd_match"))


def test_resumes_bit_exactly_mid_epoch(data_dir, tmp_path, monkeypatch):
  config = tiny_config(data_dir, **{"method.name": "mbsd", "train.checkpoint_every_steps": 4})
  # 6 steps per epoch: stop during step 8, the middle of epoch 2.
  train = check_resume(config, tmp_path, monkeypatch, 8, "batch 2").train
  assert all(0.0 <= r["mbsd_weight"] <= 1.0 and r["mbsd_distill"] >= 0.0 for r in train)
