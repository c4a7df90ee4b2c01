"""PMR: the notes' prototype distances, coefficients and EMA by hand, a PyTorch restatement of the
original's loss (EU_dist, the binary rule), the prototype pass's subset, PER (the option the
released code lacks), validation, configs, and a mid-epoch resume bit for bit."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avjax.config import validate
from avjax.methods import METHODS, StepContext
from avjax.methods.base import EpochContext
from avjax.methods.pmr import (blend, class_means, euclidean_distances, modality_weights,
                               prototype_entropy, prototype_score)
from avjax.models.contract import ModelInfo
from avjax.models.outputs import ModelOutput
from tests.helpers import tiny_config
from tests.methods.common import (FUSIONS, all_finite, check_config, check_refused,
                                   check_resume, check_trains_one_epoch, fusion_config,
                                   load_config, smoke_cli)

f32 = lambda x: jnp.asarray(x, jnp.float32)


def test_distance_oracle():
  d = euclidean_distances(f32([[0, 0], [3, 4]]), f32([[0, 0], [3, 4]]))
  np.testing.assert_allclose(d, [[0, 5], [5, 0]])
  p = jax.nn.softmax(-d, axis=-1)
  np.testing.assert_allclose(np.diag(p), [0.993307, 0.993307], rtol=1e-6)
  assert float(prototype_score(-d, jnp.array([0, 1]))) == pytest.approx(2 * 0.993307, rel=1e-6)
  # A zero distance has a finite (zero) gradient.
  g = jax.grad(lambda h: jnp.sum(euclidean_distances(h, f32([[0, 0], [3, 4]]))))(f32([[0, 0]]))
  np.testing.assert_allclose(g, [[-0.6, -0.8]], rtol=1e-6)


def test_binary_and_continuous_weights():
  assert {k: float(v) for k, v in modality_weights(f32(1.3)).items()} == {"audio": 0, "visual": 1}
  assert {k: float(v) for k, v in modality_weights(f32(0.8)).items()} == {"audio": 1, "visual": 0}
  assert {k: float(v) for k, v in modality_weights(f32(1.0)).items()} == {"audio": 0, "visual": 0}
  w = modality_weights(f32(1.3), "continuous")
  assert (float(w["audio"]), float(w["visual"])) == pytest.approx((0.0, 0.3), abs=1e-6)
  w = modality_weights(f32(0.8), "continuous")
  assert (float(w["audio"]), float(w["visual"])) == pytest.approx((0.25, 0.0), abs=1e-6)
  assert float(modality_weights(f32(3.0), "continuous")["visual"]) == 1.0  # Clipped.


def test_ema_oracle_and_variants():
  new, old = np.array([2.0, 2.0]), np.array([0.0, 0.0])
  np.testing.assert_allclose(blend(new, old, 2, 0.5), [1, 1])
  np.testing.assert_allclose(blend(new, old, 1, 0.5), [2, 2])  # First post-epoch update: raw.
  np.testing.assert_allclose(blend(new, old, 1, 0.5, "balancebenchmark"), [1, 1])
  np.testing.assert_allclose(blend(new, old, 0, 0.5, "balancebenchmark"), [2, 2])


def test_class_means_keep_missing_classes():
  previous = np.full((3, 2), 7.0, np.float32)
  means = class_means(np.array([[1, 2], [3, 4], [5, 6]], np.float32), np.array([0, 0, 2]),
                      previous)
  np.testing.assert_allclose(means, [[2, 3], [7, 7], [5, 6]])


def test_prototype_entropy():
  uniform = prototype_entropy(jnp.zeros((2, 4)))
  assert float(uniform) == pytest.approx(2 * math.log(4), rel=1e-6)


def _method(**settings):
  c = tiny_config("/nonexistent", **{"method.name": "pmr"})
  for k, v in settings.items():
    c.method[k] = v
  info = ModelInfo("av_resnet", frozenset(), (), num_outputs=2)
  return METHODS.get("pmr")(c, info)


def _output(a, v):
  z = jnp.zeros((len(a), 2), jnp.float32)
  return ModelOutput(logits=z, modality_logits={"audio": z, "visual": z},
                     features={"audio": f32(a), "visual": f32(v)})


def _ctx(epoch):
  return StepContext(step=jnp.int32(0), epoch=jnp.int32(epoch), rng=jax.random.key(0))


@pytest.mark.parametrize("swap", [False, True])
def test_loss_matches_pytorch_restatement(swap):
  """The original's step loss (main_Prototype_grad.py: EU_dist by loops, batch-sum scores, the
  binary rule) in torch, value and feature gradients, against the method's loss."""
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  a, v = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)) * 2
  pa, pv = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
  logits, labels = rng.normal(size=(5, 2)), np.array([0, 1, 1, 0, 1])
  alpha = 2.0
  if swap:  # The other modality leads: the other branch of the rule.
    a, v, pa, pv = v, a, pv, pa

  ta, tv = torch.tensor(a, requires_grad=True), torch.tensor(v, requires_grad=True)

  def eu_dist(x, p):
    return torch.stack([torch.stack([torch.sqrt(torch.dot(x[i] - p[j], x[i] - p[j]))
                                     for j in range(p.shape[0])]) for i in range(x.shape[0])])

  y = torch.tensor(labels)
  sim_a, sim_v = -eu_dist(ta, torch.tensor(pa)), -eu_dist(tv, torch.tensor(pv))
  score = lambda s: sum(torch.softmax(s, 1)[i][y[i]] for i in range(len(y)))
  rho = score(sim_a) / score(sim_v)
  ce = torch.nn.functional.cross_entropy
  loss = ce(torch.tensor(logits), y)
  if rho > 1:
    loss = loss + alpha * ce(sim_v, y)
  elif rho < 1:
    loss = loss + alpha * ce(sim_a, y)
  loss.backward()

  method = _method(alpha=alpha)
  state = {"prototypes": {"audio": f32(pa), "visual": f32(pv)}}

  def fn(feats):
    out = ModelOutput(logits=f32(logits), modality_logits={}, features=feats)
    return method.loss(out, {"label": jnp.asarray(labels)}, state, _ctx(0))

  (value, metrics), grads = jax.value_and_grad(fn, has_aux=True)({"audio": f32(a),
                                                                  "visual": f32(v)})
  assert float(value) == pytest.approx(loss.item(), rel=1e-5)
  assert float(metrics["pmr_ratio"]) == pytest.approx(rho.item(), rel=1e-5)
  for m, t in (("audio", ta), ("visual", tv)):  # The leading modality gets no PCE gradient.
    want = np.zeros_like(a) if t.grad is None else t.grad.numpy()
    np.testing.assert_allclose(grads[m], want, rtol=1e-4, atol=1e-6)


def test_loss_window_and_per_option():
  # Audio features sit on their prototypes, visual ones do not: rho > 1, visual PCE added.
  a, v = [[0, 0], [3, 4]], [[1, 1], [2, 2]]
  state = {"prototypes": {"audio": f32([[0, 0], [3, 4]]), "visual": f32([[2, 2], [1, 1]])}}
  labels = {"label": jnp.array([0, 1])}
  ce = math.log(2)
  loss, m = _method(alpha=2.0).loss(_output(a, v), labels, state, _ctx(0))
  assert float(m["pmr_ratio"]) > 1 and float(m["pmr_coeff_visual"]) == 2.0
  assert float(loss) == pytest.approx(ce + 2 * float(m["pmr_loss_proto_visual"]), rel=1e-6)
  loss, m = _method(alpha=2.0, modulation_ends=3).loss(_output(a, v), labels, state, _ctx(4))
  assert float(loss) == pytest.approx(ce, rel=1e-6) and float(m["pmr_coeff_visual"]) == 0.0
  # PER: minus mu times the leading (audio) modality's summed prototype entropy.
  per = _method(alpha=2.0, entropy_weight=0.01, entropy_epochs=1)
  loss_per, m = per.loss(_output(a, v), labels, state, _ctx(1))
  h_a = float(m["pmr_entropy_audio"]) * 2
  base_loss, _ = _method(alpha=2.0).loss(_output(a, v), labels, state, _ctx(1))
  assert float(loss_per) == pytest.approx(float(base_loss) - 0.01 * h_a, rel=1e-6)
  after, _ = per.loss(_output(a, v), labels, state, _ctx(2))  # Past entropy_epochs.
  assert float(after) == pytest.approx(float(base_loss), rel=1e-6)


def test_prototype_examples_are_a_seeded_tenth():
  method = _method()  # batch 16: 96 examples -> 6 batches -> max(1, 0) = 1 batch of 16.
  ctx = EpochContext(epoch=3, seed=0, num_examples=96, state=None, model=None, run=None)
  picked = method.prototype_examples(ctx)
  assert len(picked) == 16 and len(set(picked)) == 16
  np.testing.assert_array_equal(picked, method.prototype_examples(ctx))
  other = method.prototype_examples(EpochContext(**{**ctx.__dict__, "epoch": 4}))
  assert set(other) != set(picked)
  big = EpochContext(**{**ctx.__dict__, "num_examples": 1000})  # 63 batches -> 6 -> 96 examples.
  assert len(method.prototype_examples(big)) == 96


@pytest.mark.parametrize("settings,match", [
    ({"coefficients": "soft"}, "coefficients='soft' must be one of"),
    ({"prototype_fraction": 0.0}, "prototype_fraction=0.0 must lie"),
    ({"momentum": 1.5}, "momentum=1.5 must lie"),
    ({"variant": "x"}, "variant='x' must be one of"),
])
def test_validate_refuses_bad_settings(data_dir, settings, match):
  check_refused(tiny_config(data_dir, **{"method.name": "pmr"}), match, **settings)


def test_validate_refuses_model_without_pooled_encoders():
  check_refused(load_config("pmr_cremad", "smoke"), "modality_encoders", **{"model.name": "vavl"})


@pytest.mark.parametrize("name", ["pmr_cremad", "pmr_ks"])
def test_configs_validate(name):
  full, _ = check_config(name, "pmr")
  assert full.method.alpha > 0


def test_smoke_config_trains_from_the_command_line(data_dir, tmp_path):
  rows = smoke_cli("pmr", data_dir, str(tmp_path), "--config.train.num_epochs=1")
  assert all_finite([r for r in rows if r["split"] == "train"], "pmr_ratio")


def test_mid_epoch_resume_is_bit_exact(data_dir, tmp_path, monkeypatch):
  config = tiny_config(data_dir, **{"method.name": "pmr", "train.num_epochs": 2,
                                    "train.checkpoint_every_steps": 4})
  config.method.momentum = 0.5
  config.method.alpha = 2.0
  run = check_resume(config, tmp_path, monkeypatch, 8, "batch 2")
  for m, prototypes in run.final.method_state["prototypes"].items():
    assert np.all(np.any(prototypes != 0, axis=1)), m  # Every class seen by the pass.
    np.testing.assert_array_equal(run.mid.method_state["prototypes"][m], prototypes)


@pytest.mark.parametrize("fusion,form", FUSIONS)
def test_every_fusion_validates(data_dir, fusion, form):
  validate(fusion_config(data_dir, "pmr", fusion, form))


def test_trains_one_epoch_with_a_non_concat_fusion(data_dir, tmp_path):
  check_trains_one_epoch(fusion_config(data_dir, "pmr", "gated", "ogm_ge"), str(tmp_path / "run"))
