"""AMCo: the mask schedule and dependence by hand, the extra C x C layer and masking against a
PyTorch restatement of BalanceBenchmark's model, a fully masked modality, configs, resume."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avjax.config import validate
from avjax.methods.amco import class_mask, dependence_shares, masked_count, ramp_value
from avjax.models.class_mask import ClassMaskClassifier
from avjax.registry import ConfigError
from tests.helpers import tiny_config
from tests.methods.common import (check_configs, check_refused, check_resume, load_config,
                                   smoke_cli)


@pytest.mark.parametrize("epoch,counts", [(0, [0, 0, 0, 0, 0]), (1, [0, 3, 5, 6, 6]),
                                          (2, [0, 5, 6, 6, 6]), (7, [0, 6, 6, 6, 6])])
def test_masked_class_counts_per_batch(epoch, counts):
  # C = 6, eps = 0.3, l = k e / 10: p = sin(pi/2 min(eps, l) / eps), N = int(6 p).
  got = [int(masked_count(jnp.int32(k * epoch), 0.3, 6)) for k in range(5)]
  assert got == counts
  assert float(ramp_value(jnp.int32(1), 0.3)) == pytest.approx(0.5, abs=1e-6)
  assert float(ramp_value(jnp.int32(2), 0.3)) == pytest.approx(0.8660254, abs=1e-6)


def test_class_mask_zeros_n_random_positions():
  masks = [np.asarray(class_mask(jax.random.key(i), jnp.int32(3), 6)) for i in range(8)]
  assert all(m.sum() == 3 and set(np.unique(m)) <= {0.0, 1.0} for m in masks)
  assert len({tuple(m) for m in masks}) > 1  # Positions vary with the key.
  assert np.asarray(class_mask(jax.random.key(0), jnp.int32(0), 6)).sum() == 6


def test_dependence_share_by_hand():
  shares = dependence_shares({"audio": jnp.array([[2.0, 0.0]]), "visual": jnp.array([[0.0, 0.0]])})
  e2 = math.exp(2)
  assert float(shares[0]) == pytest.approx((e2 + 1) / (e2 + 3), rel=1e-6)  # 0.80749 > 0.5.
  assert float(shares.sum()) == pytest.approx(1.0, rel=1e-6)


@pytest.fixture(scope="module")
def tiny_model():
  return ClassMaskClassifier(num_classes=4, widths=(4, 8, 8, 8), rngs=nnx.Rngs(0))


def test_fuse_matches_a_pytorch_restatement_of_bb(tiny_model):
  """BB's unimodality_calculate (concat slices, b / 2, the mask on dependent modalities),
  linear_star and the dependence shares, restated in torch on the same weights."""
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  feats = {m: rng.normal(size=(5, 8)).astype(np.float32) for m in ("audio", "visual")}
  mask = np.array([1, 0, 1, 0], np.float32)
  rows = np.stack([mask, np.ones(4, np.float32)])  # Audio dependent.
  out = tiny_model.fuse({m: jnp.asarray(x) for m, x in feats.items()}, jnp.asarray(rows))
  params = nnx.state(tiny_model, nnx.Param)
  w = torch.tensor(np.asarray(params["fusion"]["fc_out"]["kernel"]).T)  # (C, 2D)
  b = torch.tensor(np.asarray(params["fusion"]["fc_out"]["bias"]))
  w_star = torch.tensor(np.asarray(params["logit_map"]["kernel"]).T)
  b_star = torch.tensor(np.asarray(params["logit_map"]["bias"]))
  u_a = torch.mm(torch.tensor(feats["audio"]), w[:, :8].t()) + b / 2
  u_v = torch.mm(torch.tensor(feats["visual"]), w[:, 8:].t()) + b / 2
  u_a = torch.mul(u_a, torch.tensor(mask))
  expected = torch.nn.functional.linear(u_a + u_v, w_star, b_star)
  np.testing.assert_allclose(out.logits, expected.numpy(), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out.modality_logits["audio"], u_a.numpy(), rtol=1e-5, atol=1e-6)
  probs = torch.softmax(torch.cat([u_a, u_v], 1), 1)
  share_a = torch.sum(probs[:, :4]) / 5
  shares = dependence_shares(out.modality_logits)
  assert float(shares[0]) == pytest.approx(float(share_a), rel=1e-5)
  # Unmasked, the sum of the slices is the concat head's output: logits = L*(fc_out([a; v])).
  plain = tiny_model.fuse({m: jnp.asarray(x) for m, x in feats.items()})
  concat = torch.mm(torch.tensor(np.concatenate([feats["audio"], feats["visual"]], 1)), w.t()) + b
  np.testing.assert_allclose(plain.logits, torch.nn.functional.linear(concat, w_star, b_star)
                             .numpy(), rtol=1e-5, atol=1e-5)


def test_fully_masked_modality_gets_no_gradient(tiny_model):
  rng = np.random.default_rng(1)
  inputs = {"audio": jnp.asarray(rng.normal(size=(4, 16, 12, 1)), jnp.float32),
            "visual": jnp.asarray(rng.normal(size=(4, 2, 16, 16, 3)), jnp.float32)}
  labels = jnp.array([0, 1, 2, 3])
  graph, params, rest = nnx.split(tiny_model, nnx.Param, ...)
  rows = jnp.stack([jnp.zeros(4), jnp.ones(4)])
  ce = lambda z: jnp.mean(jax.nn.logsumexp(z, -1)
                          - jnp.take_along_axis(z, labels[:, None], 1)[:, 0])

  def loss(p):
    out = nnx.merge(graph, p, rest, copy=True)(inputs, class_mask=rows)
    uni = ce(out.modality_logits["audio"]) + ce(out.modality_logits["visual"])
    return ce(out.logits) + uni, out

  (_, out), grads = jax.value_and_grad(loss, has_aux=True)(params)
  assert float(ce(out.modality_logits["audio"])) == pytest.approx(math.log(4), rel=1e-6)
  assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grads["audio_encoder"]))
  assert any(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grads["visual_encoder"]))


def test_configs_validate_and_errors_name_the_fix():
  check_configs("amco")
  for fusion in ("sum", "concat"):
    c = load_config("amco_cremad")
    c.model.fusion = fusion
    validate(c)
  c = load_config("amco_cremad")
  c.model.fusion = "film"  # The asymmetric form: its fused logits are not the sum.
  with pytest.raises(ConfigError, match="form='mmcosine'"):
    validate(c)
  c.model.fusion_kwargs.form = "mmcosine"
  validate(c)
  check_refused(load_config("amco_cremad"), "eps", eps=0.0)


def test_resumes_mid_epoch_bit_exactly(data_dir, tmp_path, monkeypatch):
  config = tiny_config(data_dir, **{"method.name": "amco", "train.num_epochs": 2,
                                    "train.checkpoint_every_steps": 4})
  train = check_resume(config, tmp_path, monkeypatch, 8, "batch 2").train
  masked = [r["amco_masked_classes"] for r in train]
  assert masked[0] == 0 and max(masked) > 0  # No mask in epoch 0; the ramp runs in epoch 1.


def test_smoke_config_trains_through_main(data_dir, tmp_path):
  rows = smoke_cli("amco", data_dir, str(tmp_path / "run"))
  assert any(r["split"] == "train" and np.isfinite(r["amco_share_audio"]) for r in rows)
