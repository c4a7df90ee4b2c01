"""InfoReg: window indicator, coefficients, proximal term, Fisher traces (hand-computed and against
a PyTorch restatement of the original's loop), the step on a real model, configs, and a mid-epoch
resume."""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avjax import data
from avjax.checkpoint import Checkpointer, abstract_like
from avjax.config import base_config, validate
from avjax.methods.base import StepContext
from avjax.methods.base import true_class_scores as scores
from avjax.methods.inforeg import coefficients, fisher_trace_step, proximal, push, window_indicator
from avjax.state import ModelFns
from avjax.steps import setup
from tests.helpers import tiny_config
from tests.methods.common import (FUSIONS, check_config, check_refused, check_resume,
                                   fusion_config, smoke_cli)


def _k_sequence(traces, window=10):
  """k_e for e = 0..len(traces) through avjax's fixed-length history buffer."""
  history, out = np.zeros(window + 1, np.float32), [window_indicator(np.zeros(window + 1), 0)]
  for e, t in enumerate(traces, start=1):
    history = push(history, t)
    out.append(window_indicator(history, e, window))
  return out


def _k_original(traces, epoch):
  """main.py's rule: a list starting with ten zeros, k = (tr1 - tr2) / tr1."""
  if epoch == 0:
    return 1
  trace_list = [0] * 10 + [float(t) for t in traces[:epoch]]  # .item(): Python floats.
  tr1, tr2 = sum(trace_list[-10:]) / 10, sum(trace_list[-11:-1]) / 10
  return (tr1 - tr2) / tr1


# ------------------------------------------------------------------------- the notes' oracles
def test_window_indicator_by_hand():
  k = _k_sequence([3.0] * 20)  # Constant traces: k_e = 1/e for e = 1..10, then 0.
  assert k[0] == 1.0
  np.testing.assert_allclose(k[1:11], [1 / e for e in range(1, 11)], rtol=1e-12)
  assert all(v == 0 for v in k[11:])
  assert [e for e, v in enumerate(k) if v > 0.05] == list(range(11))  # Epochs 0-10 regulate.
  assert _k_sequence([1.0, 2.0])[2] == pytest.approx(2 / 3)
  traces = list(np.random.default_rng(0).uniform(0.1, 2.0, 25).astype(np.float32))
  np.testing.assert_allclose(_k_sequence(traces), [_k_original(traces, e) for e in range(26)],
                             rtol=1e-9)


def test_coefficients_and_proximal_by_hand():
  beta = lambda sa, sv, variant=True: {m: float(v) for m, v in coefficients(
      {"audio": jnp.float32(sa), "visual": jnp.float32(sv)}, jnp.bool_(True), 0.95, 0.1,
      variant).items()}
  assert beta(12.0, 2.0) == pytest.approx({"audio": 2.582368, "visual": 0.0}, abs=1e-6)
  assert beta(1.5, 1.0)["audio"] == pytest.approx(1.508060, abs=1e-6)
  assert beta(1.0, 1.5) == pytest.approx({"audio": 0.0, "visual": 0.158743}, abs=1e-6)
  assert beta(1.0, 1.5, False) == {"audio": 0.0, "visual": 0.0}  # The first upload's branch.
  assert beta(1.0, 1.0) == {"audio": 0.0, "visual": 0.0}
  closed = coefficients({"audio": jnp.float32(9.0), "visual": jnp.float32(1.0)}, jnp.bool_(False),
                        0.95, 0.1)
  assert float(closed["audio"]) == 0.0
  g = proximal({"w": jnp.float32(0.1)}, {"w": jnp.float32(1.2)}, {"w": jnp.float32(1.0)},
               jnp.float32(2.0))
  assert float(g["w"]) == pytest.approx(0.1 + 0.4, abs=1e-6)
  # Batch sums of the true class's probability: (0.5 + 0.3) for 2-class logits log(p, 1 - p).
  p = np.array([0.5, 0.3])
  logits = jnp.asarray(np.log(np.stack([p, 1 - p], -1)), jnp.float32)
  s = scores({"audio": logits, "visual": logits}, jnp.zeros(2, jnp.int32))
  assert float(s["audio"]) == pytest.approx(0.8, abs=1e-6)


def test_step_against_torch_restatement():
  """Three steps of main.py's per-step rule in torch (scores, beta, grad += beta (p - p_e), the
  FIM accumulation over conv / linear weights, the trace as a sum of per-layer means) against
  avjax's functions on the same numbers."""
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  shapes = {"conv1": (3, 3, 2, 4), "bn": (4,), "fc": (4, 6)}
  params = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
  anchor = {k: v - rng.normal(size=v.shape).astype(np.float32) * 0.1 for k, v in params.items()}
  labels = rng.integers(0, 6, 8)
  fim = {k: torch.zeros(shapes[k]) for k in ("conv1", "fc")}
  ours = jnp.zeros((), jnp.float32)
  for _ in range(3):
    grads = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    za, zv = rng.normal(size=(8, 6)).astype(np.float32), rng.normal(size=(8, 6)).astype(np.float32)
    # torch, as main.py: scores, the branch, the proximal gradient, the FIM accumulators.
    sm = torch.nn.Softmax(dim=1)
    s_a = sum(sm(torch.from_numpy(za))[i][labels[i]] for i in range(8))
    s_v = sum(sm(torch.from_numpy(zv))[i][labels[i]] for i in range(8))
    beta_t = 0.95 * torch.exp(torch.tanh(s_a - s_v)) if s_a > s_v else 0.0
    g_t = {k: torch.from_numpy(grads[k]) + beta_t * (torch.from_numpy(params[k])
                                                    - torch.from_numpy(anchor[k])) for k in grads}
    for k in fim:
      fim[k] += g_t[k] * g_t[k]
    # avjax.
    s = scores({"audio": jnp.asarray(za), "visual": jnp.asarray(zv)}, jnp.asarray(labels))
    beta = coefficients(s, jnp.bool_(True), 0.95, 0.1)
    assert float(s["audio"]) == pytest.approx(float(s_a), rel=1e-6)
    assert float(beta["audio"]) == pytest.approx(float(beta_t), rel=1e-6)
    g = proximal(jax.tree.map(jnp.asarray, grads), jax.tree.map(jnp.asarray, params),
                 jax.tree.map(jnp.asarray, anchor), beta["audio"])
    for k in grads:
      np.testing.assert_allclose(np.asarray(g[k]), g_t[k].numpy(), rtol=1e-6, atol=1e-7)
    ours = ours + fisher_trace_step(g)
  trace_torch = sum(fim[k].mean().item() for k in fim)
  assert float(ours) == pytest.approx(trace_torch, rel=1e-6)


# ------------------------------------------------------------------------ the step on a model
@pytest.mark.parametrize("fusion", ["concat", "gated"])
def test_update_adds_the_proximal_term_to_the_leading_encoder_only(data_dir, fusion):
  config = tiny_config(data_dir, **{"method.name": "inforeg", "optimizer.weight_decay": 0.0,
                                    "optimizer.momentum": 0.0, "model.fusion": fusion})
  exp = setup(config, num_classes=6)
  method, state = exp.method, exp.state
  anchor = jax.tree.map(lambda x: x - 0.5, state.method_state["anchor"])  # theta - theta_e = 0.5.
  batch = {"audio": jnp.asarray(np.random.default_rng(0).normal(size=(8, 16, 16, 1)), jnp.float32),
           "visual": jnp.asarray(np.random.default_rng(1).normal(size=(8, 2, 16, 16, 3)),
                                 jnp.float32),
           "label": jnp.arange(8) % 6}
  ctx = StepContext(step=jnp.int32(0), epoch=jnp.int32(0), rng=jax.random.key(0),
                    learning_rate=jnp.float32(1.0), model=method.model)
  update = jax.jit(lambda s, b: method.update(ModelFns(exp.graphs), exp.tx, s, b, ctx))
  run = lambda open_: update(state.replace(method_state=dict(
      state.method_state, anchor=anchor, window_open=jnp.bool_(open_))), batch)
  opened, _, m_open = run(True)
  closed, _, m_closed = run(False)
  lead = "audio" if float(m_open["inforeg_score_audio"]) > float(m_open["inforeg_score_visual"]) \
      else "visual"
  beta = float(m_open[f"inforeg_beta_{lead}"])
  assert beta > 0 and float(m_closed[f"inforeg_beta_{lead}"]) == 0.0
  assert float(m_open["loss"]) == pytest.approx(float(m_open["loss_fused"] + m_open["loss_audio"]
                                                      + m_open["loss_visual"]), rel=1e-6)
  for path in ("audio_encoder", "visual_encoder", "fusion"):
    diff = jax.tree.map(lambda c, o: np.asarray(c) - np.asarray(o), closed.params[path],
                        opened.params[path])  # SGD at rate 1: the difference is beta * 0.5.
    want = beta * 0.5 if path == f"{lead}_encoder" else 0.0
    for leaf in jax.tree.leaves(diff):
      np.testing.assert_allclose(leaf, want, atol=2e-5, err_msg=path)
  assert float(opened.method_state["fisher"][lead]) > float(closed.method_state["fisher"][lead])


# --------------------------------------------------------------------------- configs, refusals
@pytest.mark.parametrize("name", ["inforeg_cremad", "inforeg_ks"])
def test_configs_validate(name):
  full, _ = check_config(name, "inforeg")
  assert full.method.threshold == 0.05


@pytest.mark.parametrize("fusion,form", FUSIONS)
def test_every_av_resnet_fusion_validates(data_dir, fusion, form):
  validate(fusion_config(data_dir, "inforeg", fusion, form))


def test_bad_settings_and_models_are_refused():
  c = base_config()
  c.method.name = "inforeg"
  check_refused(c, "variant", variant="march")
  check_refused(c, "modality_logits|modality_encoders", variant="first_upload",
                **{"model.name": "vavl"})


def test_smoke_config_trains_from_the_command_line(data_dir, tmp_path):
  rows = smoke_cli("inforeg", data_dir, str(tmp_path / "w"))
  train = [r for r in rows if r["split"] == "train"]
  assert [r["inforeg_k"] for r in train] == [1.0, 1.0]  # k_0 = 1, k_1 = t/10 / (t/10) = 1.
  assert train[0]["inforeg_trace_audio"] == 0 and train[1]["inforeg_trace_audio"] > 0


# ------------------------------------------------------------------------ mid-epoch resume
def _restore(workdir, config, step):
  """The state a run checkpointed at `step`, as numpy leaves."""
  dataset = data.open_dataset(config.dataset, ["train"])
  steps = data.steps_per_epoch(len(dataset.sources["train"]), config.train.batch_size)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=5, best_metric="accuracy",
                      best_mode="max")
  state, _ = ckpt.restore(step, abstract_like(setup(config, dataset.num_classes, steps).state))
  ckpt.close()
  return jax.device_get(state)


def test_mid_epoch_resume_is_bit_exact(data_dir, tmp_path, monkeypatch):
  config = tiny_config(data_dir, **{"method.name": "inforeg", "train.num_epochs": 2,
                                    "train.checkpoint_every_steps": 4,
                                    "train.keep_checkpoints": 5})
  # As if SIGTERM arrived during step 8: the middle of epoch 2 (6 steps per epoch).
  run = check_resume(config, tmp_path, monkeypatch, 8, "batch 2")
  assert (run.mid_meta["epoch"], run.mid_meta["step_in_epoch"]) == (1, 2)
  a, mid = run.final, run.mid
  # The anchor is the encoders at the start of epoch 2 (the epoch-1 checkpoint, step 6), and the
  # resumed epoch kept it.
  epoch_end = _restore(run.straight, config, 6)
  for m in ("audio", "visual"):
    jax.tree.map(np.testing.assert_array_equal, a.method_state["anchor"][m][f"{m}_encoder"],
                 epoch_end.params[f"{m}_encoder"])
    assert float(a.method_state["trace"][m]) > 0 and float(a.method_state["history"][m][-1]) > 0
  jax.tree.map(np.testing.assert_array_equal, mid.method_state["anchor"], a.method_state["anchor"])
  assert math.isclose(float(a.method_state["k"]), 1.0, rel_tol=1e-6)
