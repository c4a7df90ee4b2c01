"""MMPareto: hand-computed Pareto weights and rescaling, a PyTorch restatement of the original's
per-loss backward passes, which groups change, BalanceBenchmark's x3, configs, resume."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avjax.config import validate
from avjax.methods.mmpareto import combine, min_norm_weight, pareto_weights
from avjax.state import ModelFns
from avjax.steps import make_train_step, setup
from tests.helpers import tiny_config
from tests.methods.common import (all_finite, check_configs, check_refused, check_resume,
                                   load_config, smoke_cli)

GAMMA = 1.5


def _combine(g_mm, g_u, gamma=GAMMA):
  g_mm, g_u = jnp.asarray(g_mm, jnp.float32), jnp.asarray(g_u, jnp.float32)
  out, stats = combine({"w": g_mm}, {"w": g_u}, {"w": g_mm + g_u}, gamma)
  return np.asarray(out["w"]), {k: float(v) for k, v in stats.items()}


def test_conflict_takes_the_min_norm_point_and_rescales():
  # <g1,g1> = 1, <g1,g2> = -1, <g2,g2> = 2: c = (2 + 1) / (1 + 2 + 2) = 0.6; u = (0.2, 0.4);
  # new = (0.4, 0.8), |g_sum| / |new| = 1 / 0.894 > 1: final = 1.5 * (0.4, 0.8) / 0.894.
  out, stats = _combine([1.0, 0.0], [-1.0, 1.0])
  assert stats["cos"] == pytest.approx(-1 / np.sqrt(2), rel=1e-6)
  assert stats["weight_mm"] == pytest.approx(0.6, rel=1e-6)
  np.testing.assert_allclose(out, [0.670820, 1.341641], rtol=1e-5)
  assert np.linalg.norm(out) == pytest.approx(1.5, rel=1e-6)
  u = 0.6 * np.array([1.0, 0.0]) + 0.4 * np.array([-1.0, 1.0])
  assert np.dot(u, [2.0, -1.0]) == pytest.approx(0.0, abs=1e-7)  # u is orthogonal to g1 - g2.


def test_agreement_sums_and_scales_by_gamma():
  out, stats = _combine([1.0, 0.0], [1.0, 1.0])
  assert stats["weight_mm"] == 0.5 and stats["scale"] == pytest.approx(GAMMA)
  np.testing.assert_allclose(out, [3.0, 1.5], rtol=1e-6)


def test_zero_cosine_goes_to_the_solver():
  out, stats = _combine([1.0, 0.0], [0.0, 1.0])
  assert stats["cos"] == 0.0 and stats["weight_mm"] == pytest.approx(0.5)
  np.testing.assert_allclose(out, [1.5, 1.5], rtol=1e-6)


def test_solver_clamps():
  assert float(min_norm_weight(jnp.float32(1), jnp.float32(2), jnp.float32(4))) == \
      pytest.approx(0.999)  # g1 = (1, 0), g2 = (2, 0): <g1,g2> >= <g1,g1>.
  assert float(min_norm_weight(jnp.float32(4), jnp.float32(2), jnp.float32(1))) == \
      pytest.approx(0.001)  # g1 = (2, 0), g2 = (1, 0): <g1,g2> >= <g2,g2>.
  cos, k_mm, k_u = pareto_weights([jnp.array([1.0, 0.0])], [jnp.array([2.0, 0.0])])
  assert float(cos) == pytest.approx(1.0) and float(k_mm) == float(k_u) == 0.5


def test_direction_is_per_encoder_but_magnitude_per_tensor():
  # Two tensors: one direction decision over both, one norm ratio each.
  g_mm = {"a": jnp.array([1.0, 0.0]), "b": jnp.array([0.0, 3.0])}
  g_u = {"a": jnp.array([-4.0, 1.0]), "b": jnp.array([0.0, -1.0])}
  g_sum = jax.tree.map(jnp.add, g_mm, g_u)
  out, stats = combine(g_mm, g_u, g_sum, GAMMA)
  g1 = np.array([1.0, 0.0, 0.0, 3.0])
  g2 = np.array([-4.0, 1.0, 0.0, -1.0])
  c = (g2 @ g2 - g1 @ g2) / ((g1 - g2) @ (g1 - g2))
  assert stats["weight_mm"] == pytest.approx(c, rel=1e-6)
  for k in ("a", "b"):
    new = 2 * (c * np.asarray(g_mm[k]) + (1 - c) * np.asarray(g_u[k]))
    ratio = np.linalg.norm(g_sum[k]) / np.linalg.norm(new)
    np.testing.assert_allclose(out[k], GAMMA * max(1.0, ratio) * new, rtol=1e-5)


# --- PyTorch restatement of the original's step (code/MMPareto.py:88-207) on a tiny model. ---


def _torch_reference(params, x_a, x_v, y):
  """The original's procedure: per-loss backward with zeroing, cosine, MinNormSolver (two
  tasks), backward of the summed loss, per-tensor rescale. Returns {name: final grad}."""
  torch = pytest.importorskip("torch")
  p = {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in params.items()}
  ce = torch.nn.functional.cross_entropy
  h_a = torch.tanh(torch.tensor(x_a) @ p["audio_enc"])
  h_v = torch.tanh(torch.tensor(x_v) @ p["visual_enc"])
  labels = torch.tensor(y)
  out = torch.cat([h_a, h_v], 1) @ p["head"] + p["head_b"]
  losses = [ce(out, labels), ce(h_a @ p["head_audio"], labels), ce(h_v @ p["head_visual"], labels)]
  enc = {"audio": ["audio_enc"], "visual": ["visual_enc"]}
  grads = []
  for loss in losses:
    loss.backward(retain_graph=True)
    grads.append({k: p[k].grad.clone() if p[k].grad is not None else torch.zeros_like(p[k])
                  for k in p})
    for v in p.values():
      v.grad = None
  weights = {}
  for i, m in ((1, "audio"), (2, "visual")):
    flat = lambda g: torch.cat([g[k].flatten() for k in enc[m]])
    g1, g2 = flat(grads[0]), flat(grads[i])
    cos = torch.nn.functional.cosine_similarity(g1, g2, dim=0)
    if cos > 0:
      weights[m] = (0.5, 0.5)
    else:
      v11, v12, v22 = g1 @ g1, g1 @ g2, g2 @ g2
      if v12 >= v11:
        c = 0.999
      elif v12 >= v22:
        c = 0.001
      else:
        c = float((v22 - v12) / (v11 + v22 - 2 * v12))
      weights[m] = (c, 1 - c)
  sum(losses).backward()
  final = {k: v.grad.clone() for k, v in p.items()}
  for i, m in ((1, "audio"), (2, "visual")):
    for k in enc[m]:
      new = 2 * (weights[m][0] * grads[0][k] + weights[m][1] * grads[i][k])
      r = final[k].norm() / new.norm()
      final[k] = (r * new if r > 1 else new) * GAMMA
  return {k: v.numpy() for k, v in final.items()}, weights


def test_matches_a_pytorch_restatement_of_the_original():
  pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  shapes = {"audio_enc": (5, 4), "visual_enc": (6, 4), "head": (8, 3), "head_b": (3,),
            "head_audio": (4, 3), "head_visual": (4, 3)}
  params = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
  x_a, x_v = rng.normal(size=(7, 5)).astype(np.float32), rng.normal(size=(7, 6)).astype(np.float32)
  y = rng.integers(0, 3, size=7)

  def losses(p):
    h_a, h_v = jnp.tanh(x_a @ p["audio_enc"]), jnp.tanh(x_v @ p["visual_enc"])
    ce = lambda z: jnp.mean(jax.nn.logsumexp(z, -1) - jnp.take_along_axis(z, y[:, None], 1)[:, 0])
    out = jnp.concatenate([h_a, h_v], 1) @ p["head"] + p["head_b"]
    return jnp.stack([ce(out), ce(h_a @ p["head_audio"]), ce(h_v @ p["head_visual"])])

  values, pull = jax.vjp(losses, {k: jnp.asarray(v) for k, v in params.items()})
  per_loss = [pull(row)[0] for row in jnp.eye(3)]
  g_sum = jax.tree.map(lambda *g: sum(g), *per_loss)
  ours = dict(g_sum)
  weights = {}
  for i, m in ((1, "audio"), (2, "visual")):
    key = f"{m}_enc"
    new, stats = combine({key: per_loss[0][key]}, {key: per_loss[i][key]}, {key: g_sum[key]},
                         GAMMA)
    ours.update(new)
    weights[m] = float(stats["weight_mm"])
  expected, torch_weights = _torch_reference(params, x_a, x_v, y)
  for m in ("audio", "visual"):
    assert weights[m] == pytest.approx(torch_weights[m][0], rel=1e-5)
  for k in shapes:
    np.testing.assert_allclose(np.asarray(ours[k]), expected[k], rtol=2e-5, atol=1e-6,
                               err_msg=k)


# --- The method on the av_resnet model. --------------------------------------------------------


def _sgd_config(data_dir, variant):
  c = tiny_config(data_dir, **{"method.name": "mmpareto", "optimizer.learning_rate": 1.0})
  c.method.variant = variant
  c.optimizer.momentum = 0.0
  c.optimizer.weight_decay = 0.0
  return c


def _batch(b=8):
  k = jax.random.split(jax.random.key(0), 2)
  return {"audio": jax.random.normal(k[0], (b, 16, 12, 1)),
          "visual": jax.random.normal(k[1], (b, 2, 16, 16, 3)),
          "label": jnp.arange(b) % 3}


@pytest.mark.parametrize("variant", ["original", "balancebenchmark"])
def test_groups_get_the_documented_gradients(data_dir, variant):
  """With SGD at rate 1 the parameter change is minus the gradient: heads and fusion take the
  summed loss's gradient; encoders the rescaled one (BB: exactly 3x the summed gradient)."""
  exp = setup(_sgd_config(data_dir, variant), num_classes=3)
  info = exp.method.model
  groups = dict(info.groups)
  assert ("head/audio" in groups) == (variant == "original")
  model = ModelFns(exp.graphs)

  def summed(params):
    output, _ = model.forward(params, exp.state.model_state, _batch())
    return jnp.sum(exp.method._losses(output, _batch()))  # pylint: disable=protected-access

  g_sum = jax.grad(summed)(exp.state.params)
  ctx_state = exp.state
  step = make_train_step(exp.graphs, exp.tx, exp.method, 1)
  new, metrics = jax.jit(step)(ctx_state, _batch(), jnp.int32(0))
  delta = jax.tree.map(lambda a, b: np.asarray(b) - np.asarray(a), exp.state.params, new.params)
  for group, paths in groups.items():
    for p in paths:
      got, plain = jax.tree.leaves(delta[p]), jax.tree.leaves(g_sum[p])
      for d, g in zip(got, plain):
        if group.startswith("encoder/") and variant == "balancebenchmark":
          np.testing.assert_allclose(d, -3.0 * np.asarray(g), rtol=2e-3, atol=2e-4)
        elif not group.startswith("encoder/"):
          np.testing.assert_allclose(d, -np.asarray(g), rtol=2e-3, atol=2e-4)
  if variant == "original":  # Encoders: at least gamma times the plain sum, never smaller.
    for m in ("audio", "visual"):
      d = np.concatenate([x.ravel() for x in jax.tree.leaves(delta[info.paths(f"encoder/{m}")[0]])])
      assert np.linalg.norm(d) >= GAMMA * 0.999 * np.linalg.norm(np.concatenate(
          [x.ravel() for x in jax.tree.leaves(g_sum[info.paths(f"encoder/{m}")[0]])]))
      assert -1.0 <= float(metrics[f"mmpareto_cos_{m}"]) <= 1.0
  assert float(metrics["loss"]) == pytest.approx(
      float(metrics["loss_mm"] + metrics["loss_audio"] + metrics["loss_visual"]), rel=1e-6)


def test_configs_validate_and_bad_settings_name_the_fix():
  check_configs("mmpareto")
  for fusion, form in (("sum", "ogm_ge"), ("film", "ogm_ge"), ("gated", "mmcosine")):
    c = load_config("mmpareto_cremad")  # Defined for every fusion: a head per modality.
    c.model.fusion, c.model.fusion_kwargs.form = fusion, form
    validate(c)
  check_refused(load_config("mmpareto_cremad"), "variant", variant="bb")
  check_refused(load_config("mmpareto_cremad"), "gamma", gamma=0.0)
  check_refused(load_config("mmpareto_cremad"), "modality_heads", **{"model.name": "vavl"})


def test_resumes_mid_epoch_bit_exactly(data_dir, tmp_path, monkeypatch):
  config = tiny_config(data_dir, **{"method.name": "mmpareto", "train.num_epochs": 2,
                                    "train.checkpoint_every_steps": 4})
  check_resume(config, tmp_path, monkeypatch, 8, "batch 2")


def test_smoke_config_trains_through_main(data_dir, tmp_path):
  rows = smoke_cli("mmpareto", data_dir, str(tmp_path / "run"))
  assert all_finite([r for r in rows if r["split"] == "train"], "mmpareto_cos_visual")
