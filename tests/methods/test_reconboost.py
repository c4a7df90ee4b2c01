"""`reconboost`: alternating boosting stages and global rectification on a shared head."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avjax import config as config_lib
from avjax.methods import METHODS
from avjax.methods.reconboost import apply_head, boost_loss, init_head, stage_position
from avjax.models.outputs import ModelOutput
from avjax.registry import ConfigError
from avjax.steps import setup
from tests.helpers import tiny_config
from tests.methods.common import check_config, check_resume, first_step, load_config, smoke_cli


def _config(data_dir, **overrides):
  return tiny_config(data_dir, **{"method.name": "reconboost", "method.epochs_per_stage": 1,
                                  "method.correct_epochs": 1, **overrides})


def test_boost_loss_by_hand():
  """C = 6, w1 = 5, w2 = 1, p_y = 0.5, q_y = 0.8: (5 - 0.8) ln 2 / 6; q_y = 0: 5 ln 2 / 6."""
  active = jnp.asarray([[math.log(5.0), 0, 0, 0, 0, 0]])  # p_y = 5 / 10.
  others = jnp.asarray([[math.log(20.0), 0, 0, 0, 0, 0]])  # q_y = 20 / 25.
  y = jnp.asarray([0])
  np.testing.assert_allclose(boost_loss(active, others, y, 5.0, 1.0), 0.485203, atol=1e-6)
  never = jnp.asarray([[-1e9, 0, 0, 0, 0, 0]])
  np.testing.assert_allclose(boost_loss(active, never, y, 5.0, 1.0), 0.577623, atol=1e-6)
  grad = jax.grad(lambda o: boost_loss(active, o, y, 5.0, 1.0))(others)
  assert not np.any(grad)  # q is the others' ensemble under no_grad.


def test_boost_loss_matches_the_original_formula_in_torch():
  """train.py:337-340: -(w1 / C) sum_c o_c log p_c + (w2 / C) sum_c o_c q_c log p_c, mean."""
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  a, o = rng.normal(size=(2, 5, 6)).astype(np.float32)
  y = rng.integers(0, 6, size=5)
  ta = torch.tensor(a, requires_grad=True)
  onehot = torch.nn.functional.one_hot(torch.tensor(y), 6).float()
  log_p = torch.log_softmax(ta, -1)
  q = torch.softmax(torch.tensor(o), -1).detach()
  per = -(5.0 / 6) * (onehot * log_p).sum(-1) + (1.0 / 6) * (onehot * q * log_p).sum(-1)
  per.mean().backward()
  value, grad = jax.value_and_grad(boost_loss)(jnp.asarray(a), jnp.asarray(o), jnp.asarray(y),
                                               5.0, 1.0)
  np.testing.assert_allclose(value, per.mean().item(), rtol=1e-6)
  np.testing.assert_allclose(grad, ta.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_stage_schedule_and_inference_rule():
  rows = [stage_position(e, 1, 1) for e in range(6)]
  assert [(int(s), bool(p), int(a), bool(f)) for s, p, a, f in rows] == [
      (0, True, 0, True), (0, False, 0, True), (1, True, 1, True), (1, False, 1, True),
      (2, True, 0, True), (2, False, 0, True)]  # audio, rectify, visual, rectify, audio, ...
  assert [bool(stage_position(e, 4, 4)[3]) for e in range(9)] == [
      True, False, False, False, True, False, False, False, True]
  head = init_head(jax.random.key(0), 3, 0, 2)
  bound = 1 / math.sqrt(3)
  assert np.all(np.abs(head["layer0"]["kernel"]) <= bound)
  c = config_lib.base_config()
  c.method.name = "reconboost"
  method = METHODS.get("reconboost")(c)
  h = {"audio": jnp.ones((1, 3)), "visual": jnp.zeros((1, 3))}
  out = method.predict(ModelOutput(logits=jnp.zeros((1, 2)), modality_logits={}, features=h),
                       {"head": head, "rho": jnp.float32(0.5)})
  expected_a = np.ones((1, 3)) @ head["layer0"]["kernel"] + head["layer0"]["bias"]
  np.testing.assert_allclose(out.modality_logits["audio"], expected_a, rtol=1e-6)
  np.testing.assert_allclose(out.logits, 0.5 * (expected_a + head["layer0"]["bias"]), rtol=1e-6)
  mlp = init_head(jax.random.key(0), 3, 4, 2)
  x = jnp.asarray([[1.0, -2.0, 0.5]])
  manual = jax.nn.relu(x @ mlp["layer0"]["kernel"] + mlp["layer0"]["bias"])
  np.testing.assert_allclose(apply_head(mlp, x), manual @ mlp["layer1"]["kernel"]
                             + mlp["layer1"]["bias"], rtol=1e-6)


def test_settings_are_checked():
  c = config_lib.base_config()
  c.method.name, c.method.variant = "reconboost", "bb"
  with pytest.raises(ConfigError, match="variant='bb'"):
    config_lib.validate(c)
  c.method.variant, c.method.epochs_per_stage = "original", 0
  with pytest.raises(ConfigError, match="epochs_per_stage=0 must be >= 1"):
    config_lib.validate(c)


def test_phase1_trains_the_active_encoder_and_head_only(data_dir):
  c = config_lib.validate(_config(data_dir, **{"optimizer.weight_decay": 0.1}))
  exp = setup(c, 6, 6)
  new, metrics = first_step(exp)  # Epoch 0: phase 1, audio.
  info = exp.method.model
  same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a),
                                                              jax.tree.leaves(b)))
  for p in info.paths("encoder/visual", "fusion"):
    assert same(exp.state.params[p], new.params[p]), p
  assert not same(exp.state.params[info.paths("encoder/audio")[0]],
                  new.params[info.paths("encoder/audio")[0]])
  assert not same(exp.state.method_state["head"], new.method_state["head"])
  assert float(new.method_state["rho"]) == 1.0 == float(metrics["boost_rate"])
  assert float(metrics["phase"]) == 1.0 and float(metrics["loss"]) == float(metrics["loss_boost"])


def test_chained_from_unimodal_runs_and_resumes_bit_exactly(data_dir, unimodal_runs, tmp_path,
                                                            monkeypatch):
  config = _config(data_dir, **{"train.checkpoint_every_steps": 4})
  config.init_from = unimodal_runs["visual"]  # Carries both trained encoders.
  a = check_resume(config, tmp_path, monkeypatch, 8, "batch 2").final  # Epoch 2 (phase 2).
  assert float(a.method_state["rho"]) != 1.0  # Phase 2 trained the boost rate.


@pytest.mark.parametrize("name", ["reconboost_cremad", "reconboost_ks"])
def test_configs(name):
  check_config(name, "reconboost")
  other = "balancebenchmark" if "cremad" in name else "original"
  variants = set()
  for arg in (None, "smoke", other, f"{other}_smoke"):
    c = config_lib.validate(load_config(name, arg))
    variants.add(c.method.variant)
  assert variants == {"original", "balancebenchmark"}
  with pytest.raises(ValueError, match="Unknown config argument"):
    load_config(name, "nope")


def test_smoke_config_trains_from_the_command_line(data_dir, tmp_path):
  smoke_cli("reconboost", data_dir, str(tmp_path / "run"), "--config.train.num_epochs=1",
            arg="balancebenchmark_smoke")
