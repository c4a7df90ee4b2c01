"""CML (Calibrating Multimodal Learning): the notes' hand-computed cases, the removal through the
fusion head, PyTorch restatements, the configs, a CLI smoke run and a bit-exact mid-epoch resume."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avjax.config import validate
from avjax.methods.cml import calibration_penalty, cml_loss, keep_masks
from avjax.models.fusion import FUSIONS
from avjax.models.outputs import apply_modality_mask
from avjax.registry import ConfigError
from tests.helpers import tiny_config
from tests.methods.common import check_configs, check_resume, smoke_cli

FULL, PARTIAL, Y = jnp.array([[2.0, 1.0]]), jnp.array([[2.0, 0.0]]), jnp.array([0])


def test_balancebenchmark_case_by_hand():
  # Notes §4: W_a h_a = (2, 0), W_v h_v = (0, 1), b = 0, visual removed: z = (2, 1), z_p = (2, 0);
  # conf 0.731059 / 0.880797, hinge 0.149738, CEs 0.313262 / 0.126928: L = 0.235069.
  loss, m = cml_loss(FULL, PARTIAL, Y, 0.1, "balancebenchmark")
  np.testing.assert_allclose(m["cml_calibration"], 0.149738, atol=1e-6)
  np.testing.assert_allclose(loss, 0.235069, atol=1e-6)
  assert float(m["cml_violations"]) == 1.0


def test_intended_case_by_hand():
  loss, m = cml_loss(FULL, PARTIAL, Y, 0.1, "intended")
  np.testing.assert_allclose(loss, 0.313262 + 0.1 * 0.149738, atol=1e-6)
  # Trick 1: the reduced view right, the full view wrong -> no penalty for that example.
  penalty, _ = calibration_penalty(jnp.array([[1.0, 2.0]]), PARTIAL, Y, "intended")
  assert float(penalty) == 0.0
  penalty, _ = calibration_penalty(jnp.array([[1.0, 2.0]]), PARTIAL, Y, "balancebenchmark")
  assert float(penalty) > 0.0  # BB computes the mask but never applies it.


def test_per_example_hinge_vs_batch_sum():
  # Example 1: confidence rises by 0.149738 without the modality; example 2: falls by 0.2311.
  full = jnp.array([[2.0, 1.0], [3.0, 0.0]])
  partial = jnp.array([[2.0, 0.0], [1.0, 0.0]])
  y = jnp.array([0, 0])
  p = lambda z: float(jax.nn.softmax(z)[0])
  rise, fall = p(partial[0]) - p(full[0]), p(partial[1]) - p(full[1])
  intended, _ = calibration_penalty(full, partial, y, "intended")
  bb, _ = calibration_penalty(full, partial, y, "balancebenchmark")
  np.testing.assert_allclose(intended, rise / 2, atol=1e-6)  # Mean of per-example hinges.
  np.testing.assert_allclose(bb, max(rise + fall, 0.0), atol=1e-6)  # Hinge of the batch sum.
  assert float(bb) == 0.0 and float(intended) > 0.0


def test_removal_through_the_concat_head_is_bb_algebra():
  # Notes' bias check: b = (0.5, -0.5); the partial logits are W_a h_a + b = z - z_v + b/2.
  head = FUSIONS.get("concat")(2, 2, init="ogm_ge", rngs=nnx.Rngs(0))
  head.fc_out.kernel.set_value(jnp.array([[2.0, 0.0], [0.0, 0.0], [0.0, 0.5], [0.0, 0.5]]))
  head.fc_out.bias.set_value(jnp.array([0.5, -0.5]))
  feats = {"audio": jnp.array([[1.0, 0.0]]), "visual": jnp.array([[1.0, 1.0]])}
  out = head(feats)
  np.testing.assert_allclose(out.modality_logits["visual"], [[0.25, 0.75]])
  partial = head(apply_modality_mask(feats, keep_masks(jnp.array([1])))).logits
  np.testing.assert_allclose(partial, [[2.5, -0.5]])
  np.testing.assert_allclose(partial, out.logits - out.modality_logits["visual"]
                             + jnp.array([0.25, -0.25]))


def test_matches_pytorch_restatement():
  torch = pytest.importorskip("torch")
  F = torch.nn.functional
  rng = np.random.default_rng(0)
  full, partial = rng.normal(size=(8, 5)) * 2, rng.normal(size=(8, 5)) * 2
  y = rng.integers(0, 5, 8)
  tf = torch.tensor(full, requires_grad=True)
  tp = torch.tensor(partial, requires_grad=True)
  ty = torch.tensor(y)

  def torch_loss(variant):
    cs, ps = F.softmax(tf, -1).max(-1)
    cp, pp = F.softmax(tp, -1).max(-1)
    if variant == "balancebenchmark":  # CML_trainer.py conf_loss: relu of the batch sum.
      return (F.cross_entropy(tf, ty) + F.cross_entropy(tp, ty)) / 2 + 0.1 * F.relu((cp - cs).sum())
    sign = ~((pp == ty) & (ps != ty))  # CPM_Nets.py trick 1, per example.
    return F.cross_entropy(tf, ty) + 0.1 * (F.relu(cp - cs) * sign).mean()

  for variant in ("intended", "balancebenchmark"):
    tf.grad = tp.grad = None
    expected = torch_loss(variant)
    expected.backward()
    fn = lambda a, b, variant=variant: cml_loss(a, b, jnp.asarray(y), 0.1, variant)[0]
    loss, (gf, gp) = jax.value_and_grad(fn, argnums=(0, 1))(
        jnp.asarray(full, jnp.float32), jnp.asarray(partial, jnp.float32))
    np.testing.assert_allclose(loss, expected.item(), rtol=1e-5)
    np.testing.assert_allclose(gf, tf.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gp, tp.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_variant_and_fusion_checks(data_dir):
  c = tiny_config(data_dir, **{"method.name": "cml", "model.fusion": "gated"})
  validate(c)  # The intended form removes a modality through any fusion head.
  c.method.variant = "balancebenchmark"
  with pytest.raises(ConfigError, match="config.model.fusion='gated'"):
    validate(c)
  c.method.variant, c.method.lam = "intended", -1.0
  with pytest.raises(ConfigError, match="lam"):
    validate(c)


def test_configs():
  check_configs("cml")


def test_smoke_cli(data_dir, tmp_path):
  rows = smoke_cli("cml", data_dir, str(tmp_path / "smoke"), "--config.method.variant="
                   "balancebenchmark")
  train = [r for r in rows if r["split"] == "train"][-1]
  assert math.isfinite(train["cml_calibration"]) and 0 <= train["cml_violations"] <= 1


def test_resumes_bit_exactly_mid_epoch(data_dir, tmp_path, monkeypatch):
  config = tiny_config(data_dir, **{"method.name": "cml", "train.checkpoint_every_steps": 4})
  train = check_resume(config, tmp_path, monkeypatch, 8, "batch 2").train
  assert all(r["cml_calibration"] >= 0 and 0 <= r["cml_conf_full"] <= 1 for r in train)
