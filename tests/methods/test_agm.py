"""AGM: the notes' hand-computed oracle, a PyTorch restatement of the hooked backward, the whole
update against plain cross-entropy at alpha 0, validation, and a mid-epoch resume bit for bit."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avjax.config import validate
from avjax.methods.agm import (agm_coefficients, conditional_clip, modulated_logits,
                               response_score, running_means, scale_encoder_grads,
                               shapley_responses)
from avjax.models.contract import ModelInfo
from avjax.steps import make_train_step, setup
from tests.helpers import tiny_config
from tests.methods.common import (FUSIONS, all_finite, check_config, check_refused,
                                   check_resume, check_trains_one_epoch, fusion_config,
                                   load_config, smoke_cli)

f32 = lambda x: jnp.asarray(x, jnp.float32)


def _coeffs(variant, s_a=1.0, s_v=1.5, S_a=1.2, S_v=1.2, alpha=1.5, cap=10.0):
  out = agm_coefficients({"audio": f32(s_a), "visual": f32(s_v)},
                         {"audio": f32(S_a), "visual": f32(S_v)}, alpha, cap, variant)
  return float(out["audio"]), float(out["visual"])


def test_coefficients_oracle_and_balancebenchmark_sign():
  # r_a = e^0.5, r*_a = 1: c_a = exp(1.5 (1 - 1.648721)); r_v = e^-0.5: c_v = exp(1.5 * 0.393469).
  assert _coeffs("original") == pytest.approx((0.377917, 1.804356), rel=1e-5)
  assert _coeffs("balancebenchmark") == pytest.approx((1.804356, 0.377917), rel=1e-5)


def test_coefficient_cap():
  # s_v - s_a = -4: r_a = e^-4, r*_a = e^4 = 54.6 -> gap 54.58 capped at 10 (or 7, or none).
  c_a, _ = _coeffs("original", s_a=3.0, s_v=1.0, S_a=0.0, S_v=4.0, alpha=0.5, cap=10.0)
  assert c_a == pytest.approx(math.exp(5.0), rel=1e-6)
  c_a, _ = _coeffs("original", s_a=3.0, s_v=1.0, S_a=0.0, S_v=4.0, alpha=0.5, cap=None)
  assert c_a == pytest.approx(math.exp(0.5 * (math.exp(4) - math.exp(-2))), rel=1e-5)


def test_running_mean_oracle():
  means = {"audio": f32(0.0)}
  means = running_means(means, {"audio": f32(0.7)}, jnp.int32(0))
  assert float(means["audio"]) == pytest.approx(0.7)
  means = running_means(means, {"audio": f32(0.3)}, jnp.int32(1))
  assert float(means["audio"]) == pytest.approx(0.5)


def test_score_clamps_tiny_probabilities():
  # One sample with p_y = 1e-9 scores -log(1e-8); one with p_y = 0.5 scores log 2.
  logits = f32(np.log([[1e-9, 1 - 1e-9], [0.5, 0.5]]))
  score = float(response_score(logits, jnp.array([0, 0])))
  assert score == pytest.approx((18.420681 + math.log(2)) / 2, rel=1e-6)


def test_shapley_oracle():
  full, visual_only, audio_only = f32([[1, 0]]), f32([[0, 1]]), f32([[2, 0]])
  r = shapley_responses(full, audio_only, visual_only, "original")
  np.testing.assert_allclose(r["audio"], [[1.5, -0.5]])
  np.testing.assert_allclose(r["visual"], [[-0.5, 0.5]])
  np.testing.assert_allclose(r["audio"] + r["visual"], full)
  bb = shapley_responses(full, audio_only, visual_only, "balancebenchmark")
  np.testing.assert_allclose(bb["audio"], [[0.5, -0.5]])


def test_modulated_logits_scale_each_response_gradient():
  responses = {"audio": f32([[1.0, 2.0]]), "visual": f32([[0.5, -1.0]])}
  coeffs = {"audio": f32(0.25), "visual": f32(3.0)}
  value = modulated_logits(responses, coeffs)
  np.testing.assert_allclose(value, [[1.5, 1.0]])
  grads = jax.grad(lambda r: jnp.sum(modulated_logits(r, coeffs) * f32([[1.0, -2.0]])))(responses)
  np.testing.assert_allclose(grads["audio"], [[0.25, -0.5]])
  np.testing.assert_allclose(grads["visual"], [[3.0, -6.0]])


INFO = ModelInfo("toy", frozenset(), (("encoder/audio", ("enc_a",)), ("fusion", ("head",))))


def test_conditional_clip_fires_only_on_large_head_gradients():
  grads = {"enc_a": {"kernel": f32(np.full((2, 2), 3.0)), "bias": f32([40.0])},
           "head": {"kernel": f32([[0.5, -0.9]]), "bias": f32([7.0])}}
  same, fired = conditional_clip(grads, INFO, 1.0, 1.0)  # Head kernel within [-1, 1].
  assert not bool(fired)
  jax.tree.map(np.testing.assert_array_equal, same, grads)
  grads["head"]["kernel"] = f32([[0.5, -1.5]])
  clipped, fired = conditional_clip(grads, INFO, 1.0, 1.0)
  norm = math.sqrt(4 * 9 + 1600 + 0.25 + 2.25 + 49)
  assert bool(fired)
  np.testing.assert_allclose(clipped["enc_a"]["bias"], [40.0 / (norm + 1e-6)], rtol=1e-6)


def test_balancebenchmark_scales_non_1d_encoder_grads_only():
  grads = {"enc_a": {"kernel": f32(np.ones((2, 2))), "bias": f32([1.0])},
           "head": {"kernel": f32([[1.0]])}}
  out = scale_encoder_grads(grads, {"audio": f32(0.5)}, INFO)
  np.testing.assert_allclose(out["enc_a"]["kernel"], 0.5)
  np.testing.assert_allclose(out["enc_a"]["bias"], 1.0)
  np.testing.assert_allclose(out["head"]["kernel"], 1.0)


def test_matches_pytorch_hooks_with_batchnorm():
  """The original's step in PyTorch (train-mode T, eval-mode zeroed-input passes after it, the
  identity modules' backward hooks scaling dL/dm_m) against avjax's pieces on the same toy net:
  per-modality Linear + BatchNorm1d encoders, a concat head."""
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  xa, xv = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)) + 1.0
  labels = np.array([0, 1, 2, 0, 1, 2])
  w = {k: rng.normal(size=s) * 0.7 for k, s in
       dict(wa=(4, 3), wv=(4, 3), ga=(4,), gv=(4,), ba=(4,), bv=(4,), head=(3, 8), hb=(3,)).items()}
  running = {"ma": rng.normal(size=4) * 0.1, "va": 1 + rng.random(4),
             "mv": rng.normal(size=4) * 0.1, "vv": 1 + rng.random(4)}
  alpha, means = 1.5, {"audio": 1.3, "visual": 0.9}

  # --- PyTorch, as run/CREMAD_main.py and model/CREMAD_net.py do it.
  t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in w.items()}
  stats = {k: torch.tensor(v) for k, v in running.items()}  # Updated in place by train mode.
  mode = {"train": True}
  bn = lambda x, m: torch.nn.functional.batch_norm(
      x, stats["m" + m], stats["v" + m], t["g" + m], t["b" + m], mode["train"], 0.1, 1e-5)
  net = lambda a, v: torch.cat([bn(a @ t["wa"].T, "a"), bn(v @ t["wv"].T, "v")], 1) @ t["head"].T \
      + t["hb"]
  ta, tv = torch.tensor(xa), torch.tensor(xv)
  full = net(ta, tv)
  mode["train"] = False
  a_only, v_only = net(ta, torch.zeros_like(tv)), net(torch.zeros_like(ta), tv)
  m_a, m_v = 0.5 * (full - v_only + a_only), 0.5 * (full - a_only + v_only)
  y = torch.tensor(labels)
  score = lambda z: float(torch.nn.functional.cross_entropy(z.detach(), y))
  s_a, s_v = score(m_a), score(m_v)
  c_a = math.exp(alpha * min(math.exp(means["visual"] - means["audio"]) - math.exp(s_v - s_a), 10))
  c_v = math.exp(alpha * min(math.exp(means["audio"] - means["visual"]) - math.exp(s_a - s_v), 10))
  m_a.register_hook(lambda g: g * c_a)
  m_v.register_hook(lambda g: g * c_v)
  torch.nn.functional.cross_entropy(m_a + m_v, y).backward()
  expected = {k: v.grad.numpy() for k, v in t.items()}

  # --- avjax: the same net as a pure function; eval passes read the statistics T updated.
  def bn_apply(x, gamma, beta, stats, train):
    if train:
      mean, var = x.mean(0), x.var(0)
      n = x.shape[0]
      new = (0.9 * stats[0] + 0.1 * mean, 0.9 * stats[1] + 0.1 * var * n / (n - 1))
    else:
      (mean, var), new = stats, stats
    return (x - mean) / jnp.sqrt(var + 1e-5) * gamma + beta, new

  def apply(p, stats, a, v, train):
    ha, sa = bn_apply(a @ p["wa"].T, p["ga"], p["ba"], stats["a"], train)
    hv, sv = bn_apply(v @ p["wv"].T, p["gv"], p["bv"], stats["v"], train)
    return jnp.concatenate([ha, hv], 1) @ p["head"].T + p["hb"], {"a": sa, "v": sv}

  stats = {m: (f32(running["m" + m]), f32(running["v" + m])) for m in "av"}
  a, v, lab = f32(xa), f32(xv), jnp.asarray(labels)

  def loss_fn(p):
    full, new_stats = apply(p, stats, a, v, True)
    new_stats = jax.lax.stop_gradient(new_stats)
    a_only, _ = apply(p, new_stats, a, jnp.zeros_like(v), False)
    v_only, _ = apply(p, new_stats, jnp.zeros_like(a), v, False)
    r = shapley_responses(full, a_only, v_only)
    scores = {m: response_score(r[m], lab) for m in r}
    c = agm_coefficients(scores, {m: f32(x) for m, x in means.items()}, alpha, 10.0)
    logp = jax.nn.log_softmax(modulated_logits(r, c))
    return -jnp.mean(jnp.take_along_axis(logp, lab[:, None], 1)), (c, scores)

  grads, (c, scores) = jax.grad(loss_fn, has_aux=True)({k: f32(x) for k, x in w.items()})
  assert float(c["audio"]) == pytest.approx(c_a, rel=1e-5)
  assert float(scores["visual"]) == pytest.approx(s_v, rel=1e-5)
  for k, g in expected.items():
    np.testing.assert_allclose(grads[k], g, rtol=1e-4, atol=1e-6, err_msg=k)


def _steps(data_dir, method="agm", **settings):
  """One jitted train step on a fixed batch from the initial state, at epoch 0 and at epoch 1."""
  overrides = {"method.name": method, **{f"method.{k}": v for k, v in settings.items()}}
  s = setup(tiny_config(data_dir, **overrides), 4, 6)
  rng = np.random.default_rng(1)
  batch = {"audio": f32(rng.normal(size=(8, 16, 16, 1))),
           "visual": f32(rng.normal(size=(8, 2, 16, 16, 3))), "label": jnp.arange(8) % 4}
  step = jax.jit(make_train_step(s.graphs, s.tx, s.method, 6))
  return [jax.device_get(step(s.state, batch, jnp.int32(e))) for e in (0, 1)]


@pytest.mark.parametrize("variant", ["original", "balancebenchmark"])
def test_update_outside_window_is_plain_cross_entropy(data_dir, variant):
  """Epoch 0 lies before the window (starts 1): c = 1, and the original's gradient is CE(T)'s
  (the zeroed passes' contributions cancel), so the step equals the baseline's (clip off); the
  running means still move. Epoch 1 modulates: with S = 0 at the first step r* = 1, so
  c_a c_v = exp(alpha (2 - r - 1/r)) in both variants."""
  (plain, _), _ = _steps(data_dir, "baseline")
  (state, metrics), (moved, modulated) = _steps(
      data_dir, alpha=1.5, variant=variant, clip_norm=0.0, modulation_starts=1)
  assert float(metrics["agm_coeff_audio"]) == 1.0 == float(metrics["agm_coeff_visual"])
  assert float(metrics["agm_mean_audio"]) == pytest.approx(float(metrics["agm_score_audio"]))
  assert int(state.method_state["count"]) == 1
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6),
               state.params, plain.params)
  jax.tree.map(np.testing.assert_array_equal, state.model_state, plain.model_state)
  c_a, c_v = float(modulated["agm_coeff_audio"]), float(modulated["agm_coeff_visual"])
  ratio = math.exp(float(modulated["agm_score_visual"]) - float(modulated["agm_score_audio"]))
  assert c_a * c_v == pytest.approx(math.exp(1.5 * (2 - ratio - 1 / ratio)), rel=1e-5)
  assert c_a != 1.0
  differs = jax.tree.map(lambda x, y: bool(np.any(x != y)), moved.params, state.params)
  assert any(jax.tree.leaves(differs))


@pytest.mark.parametrize("settings,match", [
    ({"variant": "torch"}, "variant='torch' must be one of"),
    ({"alpha": -1.0}, "alpha=-1.0 must be >= 0"),
    ({"modulation_starts": 5, "modulation_ends": 2}, "0 <= starts <= ends"),
    ({"clip_threshold": 0.0}, "clip_threshold=0.0 must be > 0"),
])
def test_validate_refuses_bad_settings(data_dir, settings, match):
  check_refused(tiny_config(data_dir, **{"method.name": "agm"}), match, **settings)


def test_validate_refuses_model_without_modality_encoders():
  check_refused(load_config("agm_cremad", "smoke"), "modality_encoders", **{"model.name": "vavl"})


@pytest.mark.parametrize("name", ["agm_cremad", "agm_ks"])
def test_configs_validate(name):
  full, _ = check_config(name, "agm")
  assert full.method.alpha > 0


def test_smoke_config_trains_from_the_command_line(data_dir, tmp_path):
  rows = smoke_cli("agm", data_dir, str(tmp_path), "--config.train.num_epochs=1")
  assert all_finite([r for r in rows if r["split"] == "train"], "agm_coeff_audio")


def test_mid_epoch_resume_is_bit_exact(data_dir, tmp_path, monkeypatch):
  config = tiny_config(data_dir, **{"method.name": "agm", "train.num_epochs": 2,
                                    "train.checkpoint_every_steps": 4})
  final = check_resume(config, tmp_path, monkeypatch, 8, "batch 2").final
  assert int(final.method_state["count"]) == 12  # 6 steps per epoch, running means over all.
  assert all(float(x) > 0 for x in final.method_state["means"].values())


@pytest.mark.parametrize("fusion,form", FUSIONS)
def test_every_fusion_validates(data_dir, fusion, form):
  validate(fusion_config(data_dir, "agm", fusion, form))


def test_trains_one_epoch_with_a_non_concat_fusion(data_dir, tmp_path):
  check_trains_one_epoch(fusion_config(data_dir, "agm", "sum"), str(tmp_path / "run"))
