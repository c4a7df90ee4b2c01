"""DI-MML (ACM MM 2024): dimension selection, DUC, certainty weighting (by hand and restated in
PyTorch), what each stage trains, configs, and a mid-epoch resume of stage 1 that ends bit-exactly
where a straight run does."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avjax.config import validate
from avjax.methods.dimml import certainty_weighted, duc_term, select_dimensions
from avjax.registry import ConfigError
from avjax.steps import setup
from avjax.train import train_and_evaluate
from tests.helpers import restore_final_state, tiny_config
from tests.methods.common import check_config, check_resume, load_config, smoke_cli


def test_dimension_selection_oracle():
  # Audio: class 0 at (0, 5) twice, class 1 at (1, 5) twice. Dimension 0 separates them
  # (acc 1); dimension 1 ties, so class 0 always wins (acc 0.5). Mean 0.75: T_a = {0}.
  audio = np.array([[0, 5], [0, 5], [1, 5], [1, 5]], np.float32)
  visual = audio[:, ::-1]  # Mirrored: T_v = {1}.
  dims = select_dimensions({"audio": audio, "visual": visual}, np.array([0, 0, 1, 1]), 2)
  np.testing.assert_array_equal(dims["audio"], [True, False])
  np.testing.assert_array_equal(dims["visual"], [False, True])
  # The same dimension discriminative in both: in neither D.
  both = select_dimensions({"audio": audio, "visual": audio}, np.array([0, 0, 1, 1]), 2)
  assert not both["audio"].any() and not both["visual"].any()


def test_dimension_selection_chunks_and_empty_classes():
  rng = np.random.default_rng(0)
  feats = {m: rng.normal(size=(50, 7)) for m in ("audio", "visual")}
  labels = rng.integers(0, 3, 50)  # Class 3 of 4 has no example.
  a = select_dimensions(feats, labels, 4, chunk=7)
  b = select_dimensions(feats, labels, 4)
  for m in a:
    np.testing.assert_array_equal(a[m], b[m])


def test_duc_by_hand():
  one = jnp.ones((1, 3))
  assert float(duc_term(one, one, jnp.ones(3, bool), 1.0)) == 0.0  # B = 1: log 1.
  same = jnp.ones((2, 3))
  assert float(duc_term(same, same, jnp.ones(3, bool), 50.0)) == pytest.approx(math.log(2))
  # Masked dimensions do not count, and the teacher side gets no gradient.
  student = jnp.array([[1.0, 9.0], [2.0, -3.0]])
  teacher = jnp.array([[0.5, 4.0], [1.0, 7.0]])
  dims = jnp.array([True, False])
  logits = np.outer([1.0, 2.0], [0.5, 1.0])
  expected = np.mean([np.log(np.exp(r).sum()) - r[i] for i, r in enumerate(logits)])
  assert float(duc_term(student, teacher, dims, 1.0)) == pytest.approx(expected, rel=1e-6)
  grad_teacher = jax.grad(lambda t: duc_term(student, t, dims, 1.0))(teacher)
  np.testing.assert_array_equal(grad_teacher, 0.0)


def _two_class(p):
  return jnp.log(jnp.array([[p, 1 - p]]))


@pytest.mark.parametrize("tau,weights", [(1.0, (0.377978, 0.280013, 0.342009)),
                                         (3.0, (0.348183, 0.315049, 0.336768))])
def test_certainty_weighting_oracle(tau, weights):
  logits = [_two_class(0.9), _two_class(0.6), _two_class(0.8)]
  out = certainty_weighted(logits, tau)
  expected = sum(w * l for w, l in zip(weights, logits))
  np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_duc_and_weighting_match_torch_restatement():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(3)
  a, v = rng.normal(size=(2, 5, 6)).astype(np.float32)
  dims = rng.random(6) > 0.5
  # DIM's loss: raw features on the selected dimensions, the positive in the denominator,
  # cross-entropy against the diagonal, the teacher detached.
  ta = torch.tensor(a[:, dims], requires_grad=True)
  tv = torch.tensor(v[:, dims], requires_grad=True)
  ce = torch.nn.functional.cross_entropy
  loss = ce(tv @ ta.detach().T / 0.7, torch.arange(5))
  loss.backward()
  ours = jax.value_and_grad(lambda s: duc_term(s, jnp.asarray(a), jnp.asarray(dims), 0.7))(
      jnp.asarray(v))
  assert float(ours[0]) == pytest.approx(loss.item(), rel=1e-5)
  np.testing.assert_allclose(np.asarray(ours[1])[:, dims], tv.grad.numpy(), rtol=1e-4, atol=1e-6)
  assert ta.grad is None
  logits = [rng.normal(size=(4, 3)).astype(np.float32) for _ in range(3)]
  tl = [torch.tensor(x) for x in logits]
  c = torch.stack([torch.softmax(x, 1).max(1).values for x in tl], 1)  # (B, 3)
  w = torch.softmax(c / 3.0, 1)
  expected = sum(w[:, k:k + 1] * tl[k] for k in range(3)).numpy()
  np.testing.assert_allclose(certainty_weighted([jnp.asarray(x) for x in logits], 3.0), expected,
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["dimml_cremad", "dimml_ks"])
def test_configs_validate(name, tmp_path):
  check_config(name, "dimml")
  with pytest.raises(ConfigError, match="init_from"):
    validate(load_config(name, "stage2"))
  c = load_config(name, "stage2")
  c.init_from = str(tmp_path)
  assert validate(c).method.stage == 2


def test_bad_settings_are_one_line_errors(data_dir):
  for key, value in (("stage", 3), ("temperature", 0.0), ("duc_start", -1)):
    c = tiny_config(data_dir, **{"method.name": "dimml"})
    c.method[key] = value
    with pytest.raises(ConfigError, match="config.method"):
      validate(c)


def _stage1(data_dir):
  c = tiny_config(data_dir, **{"method.name": "dimml", "train.checkpoint_every_steps": 4})
  c.method.duc_start = 1
  c.method.temperature = 5.0
  return c


def test_stage1_resumes_bit_exactly_and_stage2_trains_only_the_fusion(data_dir, tmp_path,
                                                                      monkeypatch):
  config = _stage1(data_dir)
  run = check_resume(config, tmp_path, monkeypatch, 8, "batch 2")  # Mid epoch 2 (DUC on).
  a, straight = run.final, run.straight
  assert bool(a.method_state["selected"]) and a.method_state["dims"].any()
  initial = setup(config, 6).state.params  # Stage 1 never updates the fusion head.
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(initial["fusion"]),
               a.params["fusion"])

  stage2 = _stage1(data_dir)
  stage2.method.stage, stage2.init_from, stage2.train.num_epochs = 2, straight, 1
  second = str(tmp_path / "stage2")
  train_and_evaluate(stage2, second)
  c, _ = restore_final_state(second, stage2)
  for path in ("audio_encoder", "visual_encoder", "audio_head", "shared_head"):
    jax.tree.map(np.testing.assert_array_equal, a.params[path], c.params[path])
  jax.tree.map(np.testing.assert_array_equal, a.model_state, c.model_state)  # Eval-mode BN.
  changed = [not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a.params["fusion"]),
                                                      jax.tree.leaves(c.params["fusion"]))]
  assert all(changed)


def test_smoke_config_trains_from_the_command_line(data_dir, tmp_path):
  smoke_cli("dimml", data_dir, str(tmp_path / "smoke"))
