"""G-Blending: the notes' weights from given losses, the blended loss, the schedule of the model's
own epochs, the configs, a CLI smoke run and an end-to-end run (held-out fold out of training,
model untouched while estimating, bit-exact mid-epoch resume)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avjax import data
from avjax import workdir as workdir_lib
from avjax.checkpoint import Checkpointer, abstract_like
from avjax.config import validate, with_method
from avjax.methods.base import heldout_fold
from avjax.methods.gblending import GBlending, blending_weights, head_losses
from avjax.models.outputs import ModelOutput
from avjax.registry import ConfigError
from avjax.steps import setup
from tests.helpers import tiny_config
from tests.methods.common import check_configs, check_resume, smoke_cli


def test_weights_from_given_losses():
  # Notes §1 oracle: A: T 1.0 -> 0.5, V 1.1 -> 0.9; B: T 1.2 -> 1.0, V 1.25 -> 1.1;
  # MM: T 0.9 -> 0.3, V 1.0 -> 0.85.
  out = blending_weights([1.0, 1.2, 0.9], [1.1, 1.25, 1.0], [0.5, 1.0, 0.3], [0.9, 1.1, 0.85])
  np.testing.assert_allclose(out["raw"], [2.222222, 60.0, 0.740741], rtol=1e-6)
  np.testing.assert_allclose(out["weights"], [0.035294, 0.952941, 0.011765], atol=1e-6)
  np.testing.assert_allclose(out["gain"], [0.2, 0.15, 0.15], atol=1e-12)
  np.testing.assert_allclose(out["overfit"], [0.3, 0.05, 0.45], atol=1e-12)


def test_a_head_whose_held_out_loss_rises_gets_no_weight():
  out = blending_weights([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [0.5, 0.5, 0.5], [1.2, 0.9, 0.8])
  assert out["weights"][0] == 0.0 and np.isclose(out["weights"].sum(), 1.0)
  none = blending_weights([1.0] * 3, [1.0] * 3, [0.5] * 3, [1.2] * 3)  # Every head got worse.
  np.testing.assert_allclose(none["weights"], [1 / 3] * 3)
  flat = blending_weights([1.0] * 3, [1.0] * 3, [1.0] * 3, [0.9] * 3)  # dO = 0: guarded.
  assert np.all(np.isfinite(flat["raw"]))


def test_blended_loss_is_the_weighted_sum_and_matches_pytorch():
  rng = np.random.default_rng(0)
  logits = {k: rng.normal(size=(6, 4)).astype(np.float32) for k in ("audio", "visual", "fused")}
  y = rng.integers(0, 4, 6)
  w = np.array([0.5, 0.3, 0.2], np.float32)

  def blended(z):
    out = ModelOutput(logits=z["fused"], modality_logits={"audio": z["audio"],
                                                          "visual": z["visual"]}, features={})
    losses = head_losses(out, jnp.asarray(y))
    return sum(w[i] * jnp.mean(losses[k]) for i, k in enumerate(("audio", "visual", "fused")))

  z = {k: jnp.asarray(v) for k, v in logits.items()}
  value, grads = jax.value_and_grad(blended)(z)
  torch = pytest.importorskip("torch")
  t = {k: torch.tensor(v, requires_grad=True) for k, v in logits.items()}
  ce = torch.nn.functional.cross_entropy
  ty = torch.tensor(y)
  expected = 0.5 * ce(t["audio"], ty) + 0.3 * ce(t["visual"], ty) + 0.2 * ce(t["fused"], ty)
  expected.backward()
  np.testing.assert_allclose(value, expected.item(), rtol=1e-6)
  for k in logits:
    np.testing.assert_allclose(grads[k], t[k].grad.numpy(), rtol=1e-5, atol=1e-7)


def test_schedule_counts_only_the_models_epochs(data_dir):
  c = tiny_config(data_dir, **{"method.name": "gblending", "optimizer.schedule": "step",
                               "optimizer.step_epochs": 1, "optimizer.gamma": 0.1})
  c.method.super_epoch, c.method.estimate_epochs = 2, 1  # Cycle: estimate, train, train.
  method = GBlending(with_method(validate(c)))
  rate = lambda epoch, within=0: float(method.learning_rate(jnp.int32(epoch * 10 + within), 10))
  # Trainer epochs 0 (estimate), 1, 2 (model epochs 0, 1), 3 (estimate), 4, 5 (model 2, 3).
  np.testing.assert_allclose([rate(e) for e in range(6)],
                             [0.05, 0.05, 0.005, 0.0005, 0.0005, 0.00005], rtol=1e-6)
  np.testing.assert_allclose(rate(3, 7), 0.0005, rtol=1e-6)  # Frozen inside an estimate.


def test_settings_checks(data_dir):
  c = tiny_config(data_dir, **{"method.name": "gblending", "model.fusion": "film"})
  validate(c)  # Separate heads: every fusion.
  c.optimizer.grad_clip_norm = 1.0
  with pytest.raises(ConfigError, match="grad_clip_norm"):
    validate(c)
  c.optimizer.grad_clip_norm, c.method.super_epoch = 0.0, 0
  with pytest.raises(ConfigError, match="super_epoch"):
    validate(c)


def test_configs():
  check_configs("gblending")


def test_smoke_cli(data_dir, tmp_path):
  rows = smoke_cli("gblending", data_dir, str(tmp_path / "smoke"))
  train = [r for r in rows if r["split"] == "train"]
  assert [r["gb_estimating"] for r in train] == [1.0, 0.0]
  np.testing.assert_allclose(sum(train[-1][f"gb_weight_{k}"] for k in
                                 ("audio", "visual", "fused")), 1.0, rtol=1e-5)


def test_end_to_end_resumes_bit_exactly_mid_estimate(data_dir, tmp_path, monkeypatch):
  config = tiny_config(data_dir, **{"method.name": "gblending", "train.num_epochs": 3,
                                    "train.checkpoint_every_steps": 3,
                                    "train.keep_checkpoints": 10})
  config.method.super_epoch, config.method.estimate_epochs = 1, 1
  # 77 fit examples: 4 steps per epoch; epochs 0 and 2 estimate, epoch 1 trains with the weights
  # the first estimate gave. Stop during step 10 (epoch 2: the copies are in the checkpoint).
  run = check_resume(config, tmp_path, monkeypatch, 10, "batch 2")
  final, train = run.final, run.train
  weights = final.method_state["weights"]
  np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-6)
  assert [r["gb_estimating"] for r in train] == [1.0, 0.0, 1.0]
  assert not np.allclose(weights, 1 / 3)  # Estimated, not the initial uniform weights.

  workdir = str(tmp_path / "straight")
  _, held = heldout_fold(config.seed, 96)
  plans = data.PlanStore(workdir_lib.plans(workdir), enabled=False)
  for epoch in (1, 2):  # The newest two plans are kept.
    visited = plans.load(epoch).indices
    assert len(visited) == 96 - len(held) and not set(visited) & set(held)

  # The estimation epoch left the model (params, BatchNorm statistics, optimizer) untouched.
  exp = setup(with_method(validate(config)), 6, 4)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=5, best_metric="accuracy",
                      best_mode="max")
  after_estimate, meta = ckpt.restore(4, abstract_like(exp.state))
  ckpt.close()
  assert meta["epoch"] == 1
  for field in ("params", "model_state", "opt_state"):
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(getattr(exp.state, field)),
                 jax.device_get(getattr(after_estimate, field)))
