"""Optimizers match PyTorch's update rules; schedules step per epoch like torch StepLR."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from avjax.config import base_config
from avjax.optim import make_optimizer, make_schedule, schedule_step


def _cfg(**kw) -> ml_collections.ConfigDict:
  c = base_config().optimizer
  c.update(kw)
  return c


def _run(tx, grads, p0=1.0):
  params = jnp.array([p0])
  state = tx.init(params)
  out = []
  for g in grads:
    updates, state = tx.update(jnp.array([g]), state, params)
    params = optax.apply_updates(params, updates)
    out.append(float(params[0]))
  return out


def test_sgd_momentum_with_l2_like_torch():
  # torch.optim.SGD(lr=.1, momentum=.9, weight_decay=.1): d = g + wd p; buf = m buf + d; p -= lr buf.
  # p1 = 1 - .1 * .6 = .94; d2 = .5 + .094 = .594; buf2 = .54 + .594 = 1.134; p2 = .94 - .1134.
  tx = make_optimizer(_cfg(name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=0.1,
                           schedule="constant"), 1, 1)
  np.testing.assert_allclose(_run(tx, [0.5, 0.5]), [0.94, 0.8266], rtol=1e-6)


def test_adam_l2_vs_adamw_decoupled():
  # One step: Adam's first update is -lr * sign(d); L2 folds wd into d, AdamW decays separately.
  adam = make_optimizer(_cfg(name="adam", learning_rate=0.1, weight_decay=0.5,
                             schedule="constant", eps=0.0), 1, 1)
  adamw = make_optimizer(_cfg(name="adamw", learning_rate=0.1, weight_decay=0.5,
                              schedule="constant", eps=0.0), 1, 1)
  np.testing.assert_allclose(_run(adam, [-0.2]), [1.0 - 0.1 * 1.0], rtol=1e-6)  # d = .3 > 0
  np.testing.assert_allclose(_run(adamw, [-0.2]), [1.0 + 0.1 - 0.1 * 0.5], rtol=1e-6)


@pytest.mark.parametrize("step,expected", [(0, 1.0), (29, 1.0), (30, 0.1), (59, 0.1), (60, 0.01),
                                           (90, 1e-3)])
def test_step_schedule_is_per_epoch(step, expected):
  # 10 steps per epoch, StepLR(step_size=3 epochs, gamma=.1): drops at steps 30, 60, ...
  schedule = make_schedule(_cfg(learning_rate=1.0, schedule="step", step_epochs=3, gamma=0.1),
                           10, 5)
  np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-6)


def test_cosine_schedule_with_warmup():
  schedule = make_schedule(_cfg(learning_rate=1.0, schedule="cosine", warmup_epochs=1), 10, 3)
  assert float(schedule(0)) == 0.0
  np.testing.assert_allclose(float(schedule(10)), 1.0, rtol=1e-6)
  assert float(schedule(30)) < 1e-6


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_unit_rate_optimizer_scaled_by_the_schedule_is_bit_identical(name):
  """The trainer's form (unit-rate optimizer, updates times the schedule's rate at schedule_step)
  gives the very same bits as the optimizer with its schedule inside, on plain epochs."""
  cfg = _cfg(name=name, learning_rate=0.1, momentum=0.9, weight_decay=0.01, schedule="step",
             step_epochs=2, gamma=0.5)
  inside = make_optimizer(cfg, 3, 10)
  unit = make_optimizer(cfg, 3, 10, unit_rate=True)
  schedule = make_schedule(cfg, 3, 10)
  params = {"w": jnp.array([1.0, -2.0, 3.0])}
  a_state, b_state = inside.init(params), unit.init(params)
  assert jax.tree.structure(a_state) == jax.tree.structure(b_state)  # Checkpoints stay readable.
  for step in range(8):
    grads = {"w": jnp.array([0.3, 0.1, -0.2]) * (step + 1)}
    a, a_state = jax.jit(inside.update)(grads, a_state, params)
    b, b_state = jax.jit(unit.update)(grads, b_state, params)
    count = schedule_step(jnp.int32(step // 3), jnp.int32(step % 3), jnp.int32(3), 3)
    assert int(count) == step
    lr = jnp.asarray(schedule(count), jnp.float32)
    np.testing.assert_array_equal(a["w"], b["w"] * lr)
