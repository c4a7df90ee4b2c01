"""Greedy (ICML 2022): the MMTM block, the re-balancing rule, the utilisation rate, a PyTorch
restatement of MMTM, configs, and a mid-epoch resume that ends bit-exactly where a straight run
does."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avjax.config import validate
from avjax.methods.greedy import init_rebalance_state, rebalance, utilisation_rates
from avjax.models.mmtm import MMTMClassifier
from avjax.registry import ConfigError
from tests.helpers import tiny_config
from tests.methods.common import check_config, check_resume, load_config, smoke_cli

INPUTS = {"audio": jax.random.normal(jax.random.key(1), (3, 32, 24, 1)),
          "visual": jax.random.normal(jax.random.key(2), (3, 2, 16, 16, 3))}


def _model(positions=(2, 3, 4), widths=(4, 8, 8, 8), **kw):
  return MMTMClassifier(num_classes=3, widths=widths, mmtm_positions=positions, rngs=nnx.Rngs(0),
                        **kw)


def _zero_mmtm(model):
  for layers in (model.mmtm_squeeze, model.mmtm_audio, model.mmtm_visual):
    for layer in layers:
      layer.kernel[...] = jnp.zeros_like(layer.kernel[...])
      layer.bias[...] = jnp.zeros_like(layer.bias[...])


def test_mmtm_shapes_follow_the_ratio():
  model = _model(positions=(1, 2, 3, 4), widths=(64, 128, 256, 512))
  assert model.mmtm_squeeze[0].kernel.shape == (128, 64)  # (C_a + C_v) -> (C_a + C_v) / 2.
  assert model.mmtm_audio[0].kernel.shape == (64, 64)
  assert model.mmtm_visual[3].kernel.shape == (512, 512)
  assert model.mmtm_squeeze[3].kernel.shape == (1024, 512)


def test_zero_weights_give_gate_one_half():
  model = _model(positions=(4,))
  _zero_mmtm(model)
  for g in model.gates(0, jnp.ones((2, 8)), jnp.ones((2, 8))):
    np.testing.assert_allclose(g, 0.5)
  # The block after layer4 halves both maps, so the pooled features are half the plain
  # encoders' (the same encoder parameters run without MMTM).
  model.eval()
  features = model.encode(INPUTS)
  np.testing.assert_allclose(features["audio"], 0.5 * model.audio_encoder(INPUTS["audio"]),
                             rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(features["visual"], 0.5 * model.visual_encoder(INPUTS["visual"]),
                             rtol=1e-5, atol=1e-7)


def test_running_mean_and_curation():
  model = _model(positions=(4,))
  first = model.gates(0, *_squeezes(model, INPUTS))
  model(INPUTS)
  np.testing.assert_allclose(model.mmtm_stats[0].audio[...], jnp.mean(first[0], 0), rtol=1e-6)
  other = {k: v[::-1] * 2.0 for k, v in INPUTS.items()}
  second = model.gates(0, *_squeezes(model, other))
  model(other)
  np.testing.assert_allclose(model.mmtm_stats[0].visual[...],
                             (jnp.mean(first[1], 0) + jnp.mean(second[1], 0)) / 2, rtol=1e-5)
  assert float(model.mmtm_stats[0].count[...]) == 2.0
  # Eval mode leaves the means alone.
  model.eval()
  model(INPUTS)
  assert float(model.mmtm_stats[0].count[...]) == 2.0

  # In curation with caring = audio, the audio gate is the (updated) mean for every example and
  # no gradient reaches the audio excitation; the visual one still learns.
  model.train()
  graph, params, rest = nnx.split(model, nnx.Param, ...)

  def loss(p):
    m = nnx.merge(graph, p, rest, copy=True)
    return jnp.sum(m(INPUTS, curation=jnp.int32(0)).logits)

  grads = jax.grad(loss)(params)
  assert float(jnp.abs(grads["mmtm_audio"][0]["kernel"][...]).sum()) == 0.0
  assert float(jnp.abs(grads["mmtm_visual"][0]["kernel"][...]).sum()) > 0.0


def _squeezes(model, inputs):
  """Block 0's squeezes as the model's next forward computes them (on a copy: no state change)."""
  s = nnx.clone(model).mmtm_squeezes(inputs)
  return s["audio_0"], s["visual_0"]


def _run(state, steps, ratios, epoch=5, threshold=0.01, window=5, warmup=1):
  out = []
  for _ in range(steps):
    state, d = rebalance(state, jnp.asarray(ratios, jnp.float32), jnp.int32(epoch), threshold,
                         window, warmup)
    out.append((bool(state["curating"]), int(state["caring"]), float(d)))
  return state, out


def test_rebalance_oracle():
  # r_b0 = 0.02, r_m0 = 0.01, r_b1 = r_m1 = 0.01: BDR_0 = log10 2, BDR_1 = 0, d = 0.30103.
  state, steps = _run(init_rebalance_state(), 1, [0.02, 0.01, 0.01, 0.01])
  assert steps[0][0] and steps[0][1] == 0
  assert steps[0][2] == pytest.approx(math.log10(2), abs=1e-6)
  sums = np.asarray(state["sums"])
  # Steps t+1 .. t+5 run in curation (no statistic: the sums stay), step t+6 is normal again.
  state, steps = _run(state, 5, [0.5, 0.01, 0.01, 0.5])
  assert [s[0] for s in steps] == [True, True, True, True, False]
  np.testing.assert_array_equal(state["sums"], sums)
  state, steps = _run(state, 1, [0.01, 0.01, 0.01, 0.01])
  assert not np.array_equal(state["sums"], sums)


def test_rebalance_sign_threshold_and_warmup():
  _, steps = _run(init_rebalance_state(), 1, [0.01, 0.01, 0.02, 0.01])  # d = -0.301.
  assert steps[0][:2] == (True, 1)
  _, steps = _run(init_rebalance_state(), 1, [0.0102, 0.01, 0.01, 0.01])  # d = 0.0086 < eps.
  assert steps[0][:2] == (False, 0)
  state, steps = _run(init_rebalance_state(), 1, [0.02, 0.01, 0.01, 0.01], epoch=0)  # Warm-up.
  assert steps[0][:2] == (False, 0) and float(state["sums"][0]) == pytest.approx(0.02)


def test_utilisation_rates_by_hand():
  full = {"audio": np.array([1, 1, 1, 0]), "visual": np.array([1, 1, 0, 0])}
  off = {"audio": np.array([1, 0, 0, 0]), "visual": np.array([1, 1, 0, 0])}
  rates = utilisation_rates(full, off)
  # The audio branch loses 2 of 3 correct answers without the visual squeeze: u(v|a) = 2/3.
  assert rates["visual"] == pytest.approx(2 / 3)
  assert rates["audio"] == 0.0


def test_mmtm_matches_torch_restatement():
  torch = pytest.importorskip("torch")
  model = _model(positions=(4,))
  feats_a = np.random.default_rng(0).normal(size=(3, 2, 2, 8)).astype(np.float32)  # (B,h,w,C)
  feats_v = np.random.default_rng(1).normal(size=(6, 1, 1, 8)).astype(np.float32)  # (B*T,..)
  linear = lambda layer: (torch.tensor(np.asarray(layer.kernel[...]).T),
                          torch.tensor(np.asarray(layer.bias[...])))
  (ws, bs), (wa, ba), (wv, bv) = map(linear, (model.mmtm_squeeze[0], model.mmtm_audio[0],
                                              model.mmtm_visual[0]))
  # The block in PyTorch's layout: (B, C, h, w) audio, (B, C, T, h, w) visual (BB's reshape).
  ta = torch.tensor(feats_a).permute(0, 3, 1, 2)
  tv = torch.tensor(feats_v).reshape(3, 2, 1, 1, 8).permute(0, 4, 1, 2, 3)
  squeeze = torch.cat([ta.flatten(2).mean(-1), tv.flatten(2).mean(-1)], 1)
  excitation = torch.relu(squeeze @ ws.T + bs)
  gate_a, gate_v = torch.sigmoid(excitation @ wa.T + ba), torch.sigmoid(excitation @ wv.T + bv)
  out_a = (ta * gate_a[:, :, None, None]).permute(0, 2, 3, 1).numpy()
  out_v = (tv * gate_v[:, :, None, None, None]).permute(0, 2, 3, 4, 1).reshape(6, 1, 1, 8).numpy()

  from avjax.models.mmtm import scale_map, squeeze_map
  g_a, g_v = model.gates(0, squeeze_map(jnp.asarray(feats_a), 3),
                         squeeze_map(jnp.asarray(feats_v), 3))
  np.testing.assert_allclose(scale_map(jnp.asarray(feats_a), g_a), out_a, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(scale_map(jnp.asarray(feats_v), g_v), out_v, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["greedy_cremad", "greedy_ks"])
def test_configs_validate(name):
  check_config(name, "greedy")
  c = load_config(name)
  c.method.variant = "balancebenchmark"
  validate(c)


def test_bad_settings_are_one_line_errors(data_dir):
  c = tiny_config(data_dir, **{"method.name": "greedy"})
  with pytest.raises(ConfigError, match="mmtm"):  # av_resnet has no MMTM blocks.
    validate(c)
  c.model.name = "av_resnet_mmtm"
  for key, value, match in (("variant", "bb", "variant"), ("mmtm_positions", (0, 2), "stages"),
                            ("window", 0, "window"), ("loss_head", "mean", "loss_head")):
    bad = tiny_config(data_dir, **{"method.name": "greedy", "model.name": "av_resnet_mmtm"})
    bad.method[key] = value
    with pytest.raises(ConfigError, match=match):
      validate(bad)
  bad = tiny_config(data_dir, **{"method.name": "greedy", "model.name": "av_resnet_mmtm",
                                 "dataset.val_split": ""})
  bad.method.utilisation_every = 1
  with pytest.raises(ConfigError, match="val_split"):
    validate(bad)


def test_resume_mid_epoch_is_bit_exact(data_dir, tmp_path, monkeypatch):
  config = tiny_config(data_dir, **{"method.name": "greedy", "model.name": "av_resnet_mmtm",
                                    "train.checkpoint_every_steps": 4})
  config.method.threshold = 0.0  # Curate as often as the window allows.
  config.method.warmup_epochs = 0
  config.method.window = 2
  config.method.utilisation_every = 1  # The analysis pass at epoch 1's start.
  a = check_resume(config, tmp_path, monkeypatch, 8, "batch 2").final
  assert float(a.method_state["sums"][0]) > 0
  assert float(a.model_state["mmtm_stats"][0]["count"][...]) == 12  # Training forwards only.


def test_smoke_config_trains_from_the_command_line(data_dir, tmp_path):
  smoke_cli("greedy", data_dir, str(tmp_path / "smoke"), "--config.train.num_epochs=1")
