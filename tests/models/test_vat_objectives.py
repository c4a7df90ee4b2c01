"""VAT's loss pieces (avjax/models/vat_objectives.py) against hand-computed values: contrastive loss,
FIFO queues, hard-negative sampling (also on 8 devices), EMA, alpha ramp, temperature clamp."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from avjax import sharding
from avjax.models import vat_objectives as L


def _unit(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


# ------------------------------------------------------------------------- contrastive loss
def test_vac_alpha0_is_infonce_by_hand():
  # a = v = a_m = v_m = I (B = 2), no queue, tau = 1: each row's logits are (1, 0) / (0, 1), so
  # both directions give -log(e / (e + 1)) = log(1 + 1/e).
  eye = jnp.eye(2)
  loss, sims = L.vac_loss(eye, eye, eye, eye, jnp.zeros((0, 2)), jnp.zeros((0, 2)), 1.0, 0.0)
  assert float(loss) == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)
  assert sims["v2a"].shape == (2, 2)


def _random_features(seed, b=3, q=4, e=5):
  rng = np.random.default_rng(seed)
  return [_unit(rng.normal(size=(n, e))) for n in (b, b, b, b, q, q)]


@pytest.mark.parametrize("alpha", [0.0, 0.4, 1.0])
def test_vac_matches_soft_target_formula(alpha):
  a, v, a_m, v_m, qa, qv = _random_features(int(alpha * 10))
  tau = 0.07
  loss, _ = L.vac_loss(*(jnp.asarray(x, jnp.float32) for x in (a, v, a_m, v_m, qa, qv)), tau, alpha)
  total = 0.0
  for x, x_m, keys in ((v, v_m, np.concatenate([a_m, qa])), (a, a_m, np.concatenate([v_m, qv]))):
    hard = np.eye(3, 7)
    soft = np.exp(_log_softmax(x_m @ keys.T / tau))
    targets = alpha * soft + (1 - alpha) * hard
    total += np.mean(-np.sum(targets * _log_softmax(x @ keys.T / tau), -1))
  assert float(loss) == pytest.approx(total / 2, rel=1e-5)
  if alpha == 0.0:  # Plain InfoNCE: -log p(positive) with the positive in column i.
    info = [np.mean(-np.diagonal(_log_softmax(x @ k.T / tau)))
            for x, k in ((v, np.concatenate([a_m, qa])), (a, np.concatenate([v_m, qv])))]
    assert float(loss) == pytest.approx(np.mean(info), rel=1e-5)


# -------------------------------------------------------------------------------- the queue
def test_queue_fifo_order_and_wrap_around():
  queue, ptr = jnp.zeros((6, 2)), jnp.int32(0)
  batches = [jnp.full((2, 2), float(i)) for i in (1, 2, 3, 4)]
  enqueue = jax.jit(L.enqueue)
  rows = []
  for batch in batches:
    queue, ptr = enqueue(queue, batch, ptr)
    rows.append((np.asarray(queue[:, 0]).tolist(), int(ptr)))
  assert rows == [([1, 1, 0, 0, 0, 0], 2), ([1, 1, 2, 2, 0, 0], 4), ([1, 1, 2, 2, 3, 3], 0),
                  ([4, 4, 2, 2, 3, 3], 2)]  # The oldest batch is overwritten first.
  with pytest.raises(ValueError, match="multiple"):
    L.enqueue(jnp.zeros((5, 2)), batches[0], 0)
  empty, ptr = L.enqueue(jnp.zeros((0, 2)), batches[0], jnp.int32(0))
  assert empty.shape == (0, 2) and int(ptr) == 0


# ---------------------------------------------------------------------------- hard negatives
def test_hard_negatives_skip_the_positive_and_follow_the_softmax():
  sim = jnp.asarray([[9.0, 1.0, 2.0, 0.0], [0.5, 9.0, 0.0, 1.5], [3.0, 1.0, 9.0, 2.0],
                     [0.0, 0.0, 1.0, 9.0]])
  n = 20000
  keys = jax.random.split(jax.random.key(0), n)
  video, audio = jax.jit(jax.vmap(L.sample_hard_negatives, in_axes=(0, None, None)))(
      keys, sim, sim.T)
  video, audio = np.asarray(video), np.asarray(audio)
  assert not np.any(video == np.arange(4)) and not np.any(audio == np.arange(4))
  for draws, s in ((video, np.asarray(sim)), (audio, np.asarray(sim).T)):
    p = np.exp(_log_softmax(s))
    np.fill_diagonal(p, 0)
    p /= p.sum(1, keepdims=True)  # softmax with the diagonal removed.
    freq = np.stack([np.bincount(draws[:, i], minlength=4) / n for i in range(4)])
    assert np.all(np.abs(freq - p) <= 4 * np.sqrt(p * (1 - p) / n) + 1e-9), (freq, p)
  # No gradient flows through the sampling weights.
  grad = jax.grad(lambda s: jnp.sum(jnp.where(jnp.isfinite(L.negative_log_weights(s)),
                                              L.negative_log_weights(s), 0.0)))(sim)
  assert float(jnp.abs(grad).max()) == 0.0


def test_hard_negatives_equal_on_1_and_8_devices():
  sim = jax.random.normal(jax.random.key(3), (16, 16))
  key = jax.random.key(5)
  expected = L.sample_hard_negatives(key, sim, sim.T)
  mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=8)))
  sharded = jax.device_put(sim, sharding.batch_sharding(mesh))
  got = jax.jit(L.sample_hard_negatives)(key, sharded, sharded.T)
  for e, g in zip(expected, got):
    np.testing.assert_array_equal(e, g)


# ------------------------------------------------------------------------- EMA and schedules
def test_ema_and_alpha_ramp_hand_values():
  out = L.ema({"w": jnp.array([1.0, 2.0])}, {"w": jnp.array([3.0, 6.0])}, 0.995)
  np.testing.assert_allclose(out["w"], [1.01, 2.02], rtol=1e-6)  # 0.995 * 1 + 0.005 * 3, ...
  ramp = [float(L.ramped_alpha(0.4, s, 10)) for s in (0, 5, 10, 35)]
  assert ramp == pytest.approx([0.0, 0.2, 0.4, 0.4])


def test_temperature_clamp():
  params = {"temp": jnp.float32(0.9), "enc": {"bias": jnp.ones(2)}}
  assert float(L.clamp_temperature(params, ("temp",))["temp"]) == 0.5
  assert float(L.clamp_temperature({**params, "temp": jnp.float32(1e-5)},
                                   ("temp",))["temp"]) == pytest.approx(0.001)
  assert float(L.clamp_temperature(params, ("temp",))["enc"]["bias"][0]) == 1.0
