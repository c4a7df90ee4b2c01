"""AUG (NeurIPS 2025): the ensembles, the boosting loss (by hand and restated in PyTorch), the
confidence difference and the assignment rule, the fixed-shape residual slots, configs, and a
mid-epoch resume that ends bit-exactly where a straight run does."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avjax.config import validate
from avjax.methods.aug import (AUGSettings, assign, assignment_epochs, aug_loss, compose,
                               confidences)
from avjax.methods.base import METHODS
from avjax.models.outputs import ModelOutput
from avjax.registry import ConfigError
from avjax.steps import setup
from tests.helpers import tiny_config
from tests.methods.common import check_config, check_resume, smoke_cli

RNG = np.random.default_rng(0)
BASE = jnp.asarray(RNG.normal(size=(2, 3)), jnp.float32)
RES = jnp.asarray(RNG.normal(size=(2, 4, 3)), jnp.float32)  # K = 4 slots.


def test_composition():
  o, prev, newest = compose(BASE, RES, jnp.int32(2))
  np.testing.assert_allclose(o, BASE + RES[:, 0] + RES[:, 1], rtol=1e-6)
  np.testing.assert_allclose(prev, BASE + RES[:, 0], rtol=1e-6)
  np.testing.assert_allclose(newest, RES[:, 1])
  o, prev, _ = compose(BASE, RES, jnp.int32(1))
  np.testing.assert_allclose(prev, BASE)
  o, _, _ = compose(BASE, RES, jnp.int32(0))
  np.testing.assert_allclose(o, BASE)
  labels = jnp.array([0, 2])
  loss, _ = aug_loss(BASE, RES, jnp.int32(0), labels, 0.5)  # Only CE(o) without residuals.
  ce = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(BASE), labels[:, None], 1))
  assert float(loss) == pytest.approx(float(ce), rel=1e-6)


def test_residual_weight_by_hand():
  # One residual, p_prev(y) = 0.8: the residual's target weight is 1 - 0.5 * 0.8 = 0.6, so its
  # gradient is (q_o - e_y) from CE(o) plus 0.6 (q_r - e_y) from the residual term.
  base = jnp.log(jnp.array([[0.8, 0.1, 0.1]]))
  res = jnp.zeros((1, 3, 3)).at[0, 0].set(jnp.array([0.3, -0.2, 0.5]))
  y = jnp.array([0])
  grad = jax.grad(lambda r: aug_loss(base, r, jnp.int32(1), y, 0.5)[0])(res)[0, 0]
  e_y = jnp.array([1.0, 0, 0])
  q_o = jax.nn.softmax(base[0] + res[0, 0])
  q_r = jax.nn.softmax(res[0, 0])
  np.testing.assert_allclose(grad, (q_o - e_y) + 0.6 * (q_r - e_y), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(jax.grad(lambda r: aug_loss(base, r, jnp.int32(1), y, 0.5)[0])(
      res)[0, 1:], 0.0)  # Slots not in use get nothing.


def test_loss_matches_torch_restatement():
  torch = pytest.importorskip("torch")
  labels = np.array([1, 2])
  # AUG-R's form: CE(o) + CE(prev) + CE(newest) - 0.5 CE(newest, y * softmax(prev)) (one-hot
  # float targets), with two residuals in use.
  b = torch.tensor(np.asarray(BASE), requires_grad=True)
  r = torch.tensor(np.asarray(RES), requires_grad=True)
  o, prev, newest = b + r[:, 0] + r[:, 1], b + r[:, 0], r[:, 1]
  y = torch.nn.functional.one_hot(torch.tensor(labels), 3).float()
  ce = torch.nn.functional.cross_entropy
  p = torch.softmax(prev.detach(), 1)
  loss = ce(o, y) + ce(prev, y) + ce(newest, y) - 0.5 * ce(newest, y * p)
  loss.backward()
  ours, (gb, gr) = jax.value_and_grad(
      lambda bb, rr: aug_loss(bb, rr, jnp.int32(2), jnp.asarray(labels), 0.5)[0],
      argnums=(0, 1))(BASE, RES)
  assert float(ours) == pytest.approx(loss.item(), rel=1e-5)
  np.testing.assert_allclose(gb, b.grad.numpy(), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(gr, r.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_confidences_by_hand():
  base = jnp.log(jnp.array([[0.5, 0.5], [0.9, 0.1]]))
  res = jnp.log(jnp.array([[[0.2, 0.8]], [[0.6, 0.4]]]))  # One slot.
  labels = jnp.array([1, 0])
  code, paper = confidences(base, res, jnp.int32(0), labels)
  assert float(code) == pytest.approx(0.5 + 0.9) and float(paper) == pytest.approx(1.4)
  _, paper = confidences(base, res, jnp.int32(1), labels)
  assert float(paper) == pytest.approx(0.5 + 0.8 + 0.9 + 0.6, rel=1e-6)


def test_assignment_rule():
  code = AUGSettings(confidence="code")
  assert assign(np.array([40.0, 38.0]), None, code) == 1  # rho 1.0526 > 1.01: visual.
  assert assign(np.array([40.2, 40.0]), None, code) is None  # rho 1.005.
  assert assign(np.array([38.0, 40.0]), None, code) == 0  # rho 0.95 < 0.99: audio.
  paper = AUGSettings()  # sigma 1, tau 0.01.
  assert assign(None, np.array([0.9, 0.85]), paper) == 1
  assert assign(None, np.array([0.85, 0.9]), paper) == 0
  assert assign(None, np.array([0.9, 0.895]), paper) is None
  assert assign(None, np.array([0.9, 0.8]), AUGSettings(sigma=1.2)) == 0  # 0.9 - 0.96 < -tau.


def test_assignment_epochs():
  epochs = assignment_epochs(200, 20)
  assert epochs[:3] == [0, 19, 39] and epochs[-1] == 179 and len(epochs) == 10  # 199: last.


def test_prediction_weights_the_ensembles(data_dir):
  config = tiny_config(data_dir, **{"method.name": "aug", "model.name": "av_resnet_aug",
                                    "model.fusion": "sum"})
  method = METHODS.get("aug")(config)
  state = {"active": jnp.array([1, 0], jnp.int32)}
  out = ModelOutput(logits=None, modality_logits={"audio": BASE, "visual": 2 * BASE},
                    features={}, residual_logits={"audio": RES, "visual": RES})
  pred = method.predict(out, state)
  np.testing.assert_allclose(pred.logits, 0.4 * (BASE + RES[:, 0]) + 0.6 * 2 * BASE, rtol=1e-6)


@pytest.mark.parametrize("name", ["aug_cremad", "aug_ks"])
def test_configs_validate(name):
  check_config(name, "aug")


def test_bad_settings_are_one_line_errors(data_dir):
  c = tiny_config(data_dir, **{"method.name": "aug", "model.name": "av_resnet_aug"})
  with pytest.raises(ConfigError, match="fusion='sum'"):
    validate(c)  # tiny_config's concat fusion.
  for key, value in (("confidence", "ratio"), ("beta", 1.5), ("assign_every", 0)):
    bad = tiny_config(data_dir, **{"method.name": "aug", "model.name": "av_resnet_aug",
                                   "model.fusion": "sum"})
    bad.method[key] = value
    with pytest.raises(ConfigError, match="config.method"):
      validate(bad)
  with pytest.raises(ConfigError, match="residual_classifiers"):
    validate(tiny_config(data_dir, **{"method.name": "aug", "model.fusion": "sum"}))


def test_resume_mid_epoch_is_bit_exact_and_unused_slots_stay(data_dir, tmp_path, monkeypatch):
  config = tiny_config(data_dir, **{"method.name": "aug", "model.name": "av_resnet_aug",
                                    "model.fusion": "sum", "train.checkpoint_every_steps": 4})
  config.method.assign_every = 1
  config.method.tau = 0.0  # Assign after epoch 0 whatever the confidences.
  config.method.max_residuals = 2
  a = check_resume(config, tmp_path, monkeypatch, 8, "batch 2").final
  active = np.asarray(a.method_state["active"])
  assert sorted(active.tolist()) == [0, 1]
  initial = jax.device_get(setup(config, 6).state.params)
  for i, m in enumerate(("audio", "visual")):
    kernel = np.asarray(a.params[f"{m}_residuals"]["kernel"][...])
    start = np.asarray(initial[f"{m}_residuals"]["kernel"][...])
    np.testing.assert_array_equal(kernel[active[i]:], start[active[i]:])  # Unused: untouched.
    assert not np.array_equal(kernel[:active[i]], start[:active[i]]) or active[i] == 0


def test_smoke_config_trains_from_the_command_line(data_dir, tmp_path):
  smoke_cli("aug", data_dir, str(tmp_path / "smoke"))
