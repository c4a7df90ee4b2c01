"""MLA: the projector and gradient rules by hand, per-example entropy fusion, a PyTorch
restatement of BalanceBenchmark's GS update and gating, alternation on av_resnet, configs,
resume."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avjax.methods.mla import (entropy_fusion, entropy_weights, modify_kernel_grad,
                               projector_alpha, update_projector)
from avjax.state import ModelFns
from avjax.steps import setup
from avjax.methods.base import StepContext
from tests.helpers import tiny_config
from tests.methods.common import (check_configs, check_refused, check_resume, load_config,
                                   smoke_cli)


def test_projector_updates_by_hand():
  p = update_projector(jnp.eye(2), jnp.array([1.0, 0.0]), 0.1)
  np.testing.assert_allclose(p, np.diag([0.0905357, 0.9958932]), rtol=1e-6, atol=1e-7)
  p2 = update_projector(p, jnp.array([0.0, 1.0]), 0.1)
  np.testing.assert_allclose(p2, np.diag([0.705783, 0.708428]), rtol=2e-6, atol=1e-7)
  # r = (1, 1): the scalar (RLS) denominator 0.1 + r.k = 2.1; BB's element-wise one is 1.1.
  scalar = np.eye(2) - np.ones((2, 2)) / 2.1
  elementwise = np.eye(2) - np.ones((2, 2)) / 1.1
  np.testing.assert_allclose(update_projector(jnp.eye(2), jnp.ones(2), 0.1),
                             scalar / np.linalg.norm(scalar), rtol=1e-6)
  np.testing.assert_allclose(update_projector(jnp.eye(2), jnp.ones(2), 0.1, elementwise=True),
                             elementwise / np.linalg.norm(elementwise), rtol=1e-6)


def test_gradient_rules_on_the_kernel_layout():
  p = jnp.diag(jnp.array([0.0905357, 0.9958932]))
  g_kernel = jnp.array([[1.0], [1.0]])  # (D, C): g_W = [[1, 1]].
  np.testing.assert_allclose(modify_kernel_grad(g_kernel, p, "project")[:, 0],
                             [0.0905357, 0.9958932], rtol=1e-6)
  np.testing.assert_allclose(modify_kernel_grad(g_kernel, p, "add")[:, 0], [1.0905357, 1.9958932],
                             rtol=1e-6)
  np.testing.assert_array_equal(modify_kernel_grad(g_kernel, p, "none"), g_kernel)
  # A non-symmetric P (BB's element-wise update): the kernel form is P G = (g_W P^T)^T.
  q = jnp.array([[1.0, 2.0], [3.0, 4.0]])
  g_w = np.array([[1.0, -1.0], [0.5, 2.0], [0.0, 1.0]])  # (C, D)
  np.testing.assert_allclose(modify_kernel_grad(jnp.asarray(g_w.T), q, "project"),
                             (g_w @ np.asarray(q).T).T, rtol=1e-6)


def test_alpha_schedule():
  assert float(projector_alpha(jnp.int32(0), 10)) == pytest.approx(0.1)
  assert float(projector_alpha(jnp.int32(5), 10)) == pytest.approx(0.0316228, rel=1e-5)


def test_entropy_fusion_by_hand_and_per_example():
  o_a, o_v = jnp.array([[0.0, 0.0]]), jnp.array([[10.0, 0.0]])
  w = entropy_weights({"audio": o_a, "visual": o_v})
  np.testing.assert_allclose(w, [[0.333444, 0.666556]], rtol=2e-5)
  np.testing.assert_allclose(entropy_fusion({"audio": o_a, "visual": o_v}),
                             w[:, :1] * o_a + w[:, 1:] * o_v, rtol=1e-6)
  same = entropy_weights({"audio": jnp.array([[1.0, 2.0]]), "visual": jnp.array([[1.0, 2.0]])})
  np.testing.assert_allclose(same, [[0.5, 0.5]], rtol=1e-6)
  # Per example: an example's fused logits do not depend on the rest of the batch.
  rng = np.random.default_rng(0)
  a, v = jnp.asarray(rng.normal(size=(5, 4)) * 3), jnp.asarray(rng.normal(size=(5, 4)) * 3)
  batch = entropy_fusion({"audio": a, "visual": v})
  for i in range(5):
    alone = entropy_fusion({"audio": a[i:i + 1], "visual": v[i:i + 1]})
    np.testing.assert_allclose(batch[i:i + 1], alone, rtol=1e-6)


def test_matches_a_pytorch_restatement():
  """BB's GSPlugin arithmetic and calculate_gating_weights, restated in torch."""
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(1)
  d, c = 6, 3
  p_np = np.eye(d, dtype=np.float32)
  p_t = torch.eye(d)
  g_w = rng.normal(size=(c, d)).astype(np.float32)
  for step in range(3):
    feats = rng.normal(size=(4, d)).astype(np.float32)
    alpha = 0.1 ** (step / 5 + 1)
    r = torch.mean(torch.tensor(feats), 0, True)
    k = torch.mm(p_t, r.t())
    p_t = p_t - torch.mm(k, k.t()) / (alpha + torch.mm(k, r))  # BB: an element-wise division.
    p_t = p_t / torch.norm(p_t, p="fro")
    p_np = np.asarray(update_projector(jnp.asarray(p_np), jnp.asarray(feats.mean(0)),
                                       jnp.float32(alpha), elementwise=True))
    np.testing.assert_allclose(p_np, p_t.numpy(), rtol=1e-5, atol=1e-6)
  bb = torch.tensor(g_w) + torch.mm(torch.tensor(g_w), p_t.t())
  ours = modify_kernel_grad(jnp.asarray(g_w.T), jnp.asarray(p_np), "add")
  np.testing.assert_allclose(np.asarray(ours).T, bb.numpy(), rtol=1e-5, atol=1e-6)
  logits = {m: rng.normal(size=(5, c)).astype(np.float32) * 4 for m in ("audio", "visual")}
  ent = {m: -torch.sum(torch.softmax(torch.tensor(x), 1) * torch.log(torch.softmax(
      torch.tensor(x), 1)), 1, keepdim=True) for m, x in logits.items()}
  top = torch.max(ent["audio"], ent["visual"])
  gate = {m: torch.exp(top - e) for m, e in ent.items()}
  total = gate["audio"] + gate["visual"]
  fused = sum(gate[m] / total * torch.tensor(logits[m]) for m in logits)
  np.testing.assert_allclose(entropy_fusion({m: jnp.asarray(x) for m, x in logits.items()}),
                             fused.numpy(), rtol=1e-5, atol=1e-6)


def test_shared_head_scores_every_modality_with_one_layer():
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from avjax.models.fusion import FUSIONS  # pylint: disable=import-outside-toplevel
  head = FUSIONS.get("shared_head")(3, 2, rngs=nnx.Rngs(0))
  kernel = jnp.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
  head.fc_out.kernel[...] = kernel
  head.fc_out.bias[...] = jnp.array([0.5, -0.5])
  a, v = jnp.array([[1.0, 2.0, 3.0]]), jnp.array([[0.0, 1.0, 0.0]])
  out = head({"audio": a, "visual": v})
  np.testing.assert_allclose(out.modality_logits["audio"], [[4.5, 6.5]], rtol=1e-6)
  np.testing.assert_allclose(out.modality_logits["visual"], [[0.5, 1.5]], rtol=1e-6)
  np.testing.assert_allclose(out.logits, [[2.5, 4.0]], rtol=1e-6)  # Their mean.
  assert len(jax.tree.leaves(nnx.state(head, nnx.Param))) == 2  # One kernel, one bias.


def test_predict_is_the_configured_inference_rule():
  from avjax.methods.mla import MLA  # pylint: disable=import-outside-toplevel
  from avjax.models.outputs import ModelOutput  # pylint: disable=import-outside-toplevel
  logits = {"audio": jnp.array([[0.0, 0.0]]), "visual": jnp.array([[10.0, 0.0]])}
  output = ModelOutput(logits=jnp.zeros((1, 2)), modality_logits=logits, features={})
  c = load_config("mla_cremad")
  np.testing.assert_allclose(MLA(c).predict(output, {}).logits, entropy_fusion(logits), rtol=1e-6)
  c.method.inference = "fixed"
  np.testing.assert_allclose(MLA(c).predict(output, {}).logits, [[4.5, 0.0]], rtol=1e-6)


# --- On av_resnet. ------------------------------------------------------------------------------


def _batch(b=8):
  k = jax.random.split(jax.random.key(0), 2)
  return {"audio": jax.random.normal(k[0], (b, 16, 12, 1)),
          "visual": jax.random.normal(k[1], (b, 2, 16, 16, 3)), "label": jnp.arange(b) % 3}


def _config(data_dir, **kw):
  return tiny_config(data_dir, **{"method.name": "mla", "model.fusion": "shared_head", **kw})


def _leaves(tree, path):
  return [np.asarray(x) for x in jax.tree.leaves(tree[path])]


def test_audio_step_leaves_the_visual_encoder_and_its_state_alone(data_dir):
  exp = setup(_config(data_dir, **{"optimizer.momentum": 0.9}), num_classes=3)
  method, s = exp.method, exp.state
  info = method.model
  ctx = StepContext(step=jnp.int32(3), epoch=jnp.int32(0), rng=jax.random.key(0),
                    learning_rate=jnp.float32(0.05), model=info, steps_per_epoch=6)

  def audio_step(state, first):
    return method.modality_step("audio", first, ModelFns(exp.graphs), exp.tx, state.params,
                                state.model_state, state.opt_state,
                                state.method_state["projector"], _batch(), ctx, jnp.float32(0.1))

  params, model_state, opt_state, projector, *_ = jax.jit(audio_step)(s, jnp.bool_(False))
  visual = info.paths("encoder/visual")[0]
  audio, head = info.paths("encoder/audio")[0], info.paths("fusion")[0]
  for a, b in zip(_leaves(s.params, visual), _leaves(params, visual)):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(s.opt_state[visual]), jax.tree.leaves(opt_state[visual])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for a, b in zip(_leaves(s.model_state, visual), _leaves(model_state, visual)):
    np.testing.assert_array_equal(a, b)  # Its BatchNorm statistics too.
  for path in (audio, head):
    assert any(not np.array_equal(a, b) for a, b in zip(_leaves(s.params, path),
                                                         _leaves(params, path))), path
  assert not np.allclose(projector, np.eye(projector.shape[0]))
  # The very first modality step of training leaves P at I.
  *_, first_projector, _, _, _, _ = jax.jit(audio_step)(s, jnp.bool_(True))
  np.testing.assert_array_equal(first_projector, np.eye(projector.shape[0]))


def test_configs_validate_and_errors_name_the_fix():
  check_configs("mla")
  check_refused(load_config("mla_cremad"), "shared_head", **{"model.fusion": "concat"})
  check_refused(load_config("mla_cremad"), "grad_accum_steps", **{"train.grad_accum_steps": 2})
  check_refused(load_config("mla_cremad"), "gradient_rule", gradient_rule="orthogonal")


def test_resumes_mid_epoch_bit_exactly(data_dir, tmp_path, monkeypatch):
  config = _config(data_dir, **{"train.num_epochs": 2, "train.checkpoint_every_steps": 4})
  projector = check_resume(config, tmp_path, monkeypatch, 8, "batch 2").final.method_state[
      "projector"]
  assert not np.allclose(projector, np.eye(projector.shape[0]))
  assert np.linalg.norm(projector) == pytest.approx(1.0, rel=1e-5)


def test_smoke_config_trains_through_main(data_dir, tmp_path):
  rows = smoke_cli("mla", data_dir, str(tmp_path / "run"))
  train = [r for r in rows if r["split"] == "train"]
  assert train and all(0 < r["mla_entropy_weight_audio"] < 1 for r in train)
