"""`unimodal`: cross-entropy on one modality's own logits, everything else frozen."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avjax import config as config_lib
from avjax import data
from avjax.methods import METHODS
from avjax.methods.base import StepContext
from avjax.methods.unimodal import only_modality_mask, pathway_groups
from avjax.models import build_model, info_of
from avjax.models.outputs import ModelOutput
from avjax.registry import ConfigError
from avjax.state import ModelFns
from avjax.steps import make_train_step, setup
from tests.helpers import tiny_config
from tests.methods.common import check_config, check_resume, load_config, smoke_cli


def _config(data_dir, modality="audio", **overrides):
  c = tiny_config(data_dir, **{"method.name": "unimodal", **overrides})
  c.method.modality = modality
  return c


def test_loss_and_prediction_are_the_modality_logits_by_hand():
  c = config_lib.base_config()
  c.method.name, c.method.modality = "unimodal", "visual"
  method = METHODS.get("unimodal")(c)
  out = ModelOutput(logits=jnp.asarray([[9.0, 9.0, 9.0]]),
                    modality_logits={"audio": jnp.asarray([[5.0, 0.0, 0.0]]),
                                     "visual": jnp.asarray([[1.0, 2.0, 0.0]])},
                    features={})
  batch = {"label": jnp.asarray([1])}
  loss, metrics = method.loss(out, batch, {}, None)
  # -log softmax([1, 2, 0])[1] = log(e + e^2 + 1) - 2.
  np.testing.assert_allclose(loss, math.log(math.e + math.e ** 2 + 1) - 2, rtol=1e-6)
  assert metrics["loss"] == loss
  np.testing.assert_array_equal(method.predict(out, {}).logits, [[1.0, 2.0, 0.0]])
  assert method.train_metrics(out, batch)["accuracy"] == 1.0  # The visual argmax is 1.
  mask = only_modality_mask({"audio": jnp.zeros((2, 3)), "modality_mask": jnp.asarray(
      [[1.0, 1.0], [1.0, 0.0]])}, "visual")
  np.testing.assert_array_equal(mask, [[0.0, 1.0], [0.0, 0.0]])


def test_modality_is_required_and_checked():
  c = config_lib.base_config()
  c.method.name = "unimodal"
  with pytest.raises(ConfigError, match="config.method.modality=''"):
    config_lib.validate(c)
  c.method.modality = "text"
  with pytest.raises(ConfigError, match="one of \\('audio', 'visual'\\)"):
    config_lib.validate(c)


def test_pathway_groups_of_every_model_family():
  assert pathway_groups("audio", ("encoder/audio", "encoder/visual", "fusion", "head/audio",
                                  "head/visual")) == ("encoder/audio", "head/audio")
  vavl = ("shared", "fusion", "encoder/audio", "head/audio", "recon/audio", "encoder/visual",
          "head/visual", "recon/visual")
  assert pathway_groups("visual", vavl) == ("encoder/visual", "shared", "head/visual")
  for name in ("vavl_cremad.py", "vat_mer.py"):  # Their own heads: no override, groups exist.
    c = load_config(name, "smoke")
    with c.unlocked():
      c.method = type(c.method)({"name": "unimodal", "modality": "visual"})
    method_cls = METHODS.get("unimodal")
    overrides = method_cls(c).model_overrides()
    assert overrides == {}
    model = nnx.eval_shape(lambda c=c: build_model(c, 4, overrides))
    method = method_cls(c, info_of(c, model, 4))
    assert "encoder/visual" in method.trained_groups() and "head/visual" in method.trained_groups()


def test_only_the_modality_pathway_moves_and_the_other_input_has_no_influence(data_dir):
  c = _config(data_dir, "audio")
  c.optimizer.weight_decay = 0.1  # Decay would move frozen parameters if they were optimised.
  exp = setup(config_lib.validate(c), 6, 6)
  assert METHODS.get("unimodal")(c).model_overrides() == {"modality_heads": "separate"}
  source = data.open_dataset(c.dataset, ["train"]).sources["train"]
  transform = data.make_transform(c.input, train=False)
  batch = {k: np.stack([transform(source[i])[k] for i in range(8)])
           for k in ("audio", "visual", "label")}
  step = jax.jit(make_train_step(exp.graphs, exp.tx, exp.method, 6))
  new, metrics = step(exp.state, batch, jnp.asarray(0, jnp.int32))
  info = exp.method.model
  for group in ("encoder/visual", "head/visual", "fusion"):
    for p in info.paths(group):
      jax.tree.map(np.testing.assert_array_equal, exp.state.params[p], new.params[p])
  for p in info.paths("encoder/audio", "head/audio"):
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.any(a != b)),
                                         exp.state.params[p], new.params[p]))
    assert any(moved), p
  # The loss does not see the visual input.
  model = ModelFns(exp.graphs)
  ctx = StepContext(step=jnp.int32(0), epoch=jnp.int32(0), rng=jax.random.key(0), model=info)

  def loss_of(visual):
    b = {**batch, "visual": visual, "modality_mask": only_modality_mask(batch, "audio")}
    out, _ = model.forward(exp.state.params, exp.state.model_state, b)
    return exp.method.loss(out, b, {}, ctx)[0]

  grad = jax.grad(loss_of)(jnp.asarray(batch["visual"], jnp.float32))
  assert float(jnp.max(jnp.abs(grad))) == 0.0
  np.testing.assert_allclose(metrics["loss"], loss_of(jnp.asarray(batch["visual"], jnp.float32)),
                             rtol=1e-5)


def test_resumes_mid_epoch_bit_exactly(data_dir, tmp_path, monkeypatch):
  config = _config(data_dir, "visual", **{"train.checkpoint_every_steps": 4})
  final = check_resume(config, tmp_path, monkeypatch, 8, "batch 2").metrics
  # The prediction is the visual head's: fused and visual-only accuracy coincide.
  assert final["accuracy"] == final["accuracy_visual"]


@pytest.mark.parametrize("name", ["unimodal_cremad", "unimodal_ks"])
def test_configs(name):
  check_config(name, "unimodal")
  for arg, modality in ((None, "audio"), ("visual", "visual"), ("visual_smoke", "visual")):
    c = config_lib.validate(load_config(name, arg))
    assert c.method.modality == modality
  assert load_config(name, "smoke").dataset.name == "synthetic_av"
  with pytest.raises(ValueError, match="Unknown config argument"):
    load_config(name, "audio_visual")


def test_smoke_config_trains_from_the_command_line(data_dir, tmp_path):
  smoke_cli("unimodal", data_dir, str(tmp_path / "run"), "--config.train.num_epochs=1",
            arg="visual_smoke")
