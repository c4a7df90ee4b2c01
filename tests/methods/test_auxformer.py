"""AuxFormer method: mean of three task losses, per-batch modality dropout, missing modalities."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from avjax.config import base_config, validate
from avjax.methods.auxformer import AuxFormerMethod, batch_modality_drop
from avjax.methods.base import StepContext
from avjax.models.outputs import ModelOutput
from avjax.registry import ConfigError
from avjax.state import ModelFns
from tests.helpers import evaluation
from avjax.steps import setup


def tiny_config() -> ml_collections.ConfigDict:
  c = base_config()
  c.dataset.config = "features"
  c.model.name = "auxformer"
  c.model.auxformer = ml_collections.ConfigDict(dict(
      inputs="features", audio_dim=6, visual_dim=5, dim=4, heads=2, layers=1, aux_hidden=(4, 4),
      aux_repeats=2, attn_dropout=0.0, relu_dropout=0.0, res_dropout=0.0, embed_dropout=0.0,
      out_dropout=0.0))  # No dropout: a smaller program to compile; the checks do not need it.
  c.method.name = "auxformer"
  c.task.labels = "soft_label"  # CE on the argmax of the soft labels.
  c.optimizer.name = "adam"
  c.optimizer.weight_decay = 0.0
  c.optimizer.schedule = "constant"
  return c


def _batch(b: int = 4) -> dict:
  k = jax.random.split(jax.random.key(0), 2)
  return {"audio": jax.random.normal(k[0], (b, 5, 6)), "visual": jax.random.normal(k[1], (b, 3, 5)),
          "label": jnp.arange(b) % 3, "modality_mask": jnp.ones((b, 2)), "valid": jnp.ones((b,)),
          "index": jnp.arange(b)}


def test_loss_is_the_mean_of_the_three_cross_entropies():
  method = AuxFormerMethod(tiny_config())
  labels = jnp.array([0, 2])
  logits = {n: jax.random.normal(jax.random.key(i), (2, 3)) for i, n in enumerate("mav")}
  out = ModelOutput(logits=jnp.zeros((2, 3)), features={},
                    modality_logits={"audio": logits["a"], "visual": logits["v"]},
                    joint_logits=logits["m"])
  loss, parts = method.loss(out, {"label": labels}, {}, None)
  ce = lambda z: float(jnp.mean(optax.softmax_cross_entropy_with_integer_labels(z, labels)))
  assert float(loss) == pytest.approx((ce(logits["m"]) + ce(logits["a"]) + ce(logits["v"])) / 3,
                                      rel=1e-6)
  assert float(parts["loss_aux_visual"]) == pytest.approx(ce(logits["v"]), rel=1e-6)


def test_modality_dropout_is_per_batch_with_the_reference_probabilities():
  keys = jax.random.split(jax.random.key(1), 4000)
  masks = np.asarray(jax.vmap(lambda k: batch_modality_drop(k, 3, 0.2, 0.2))(keys))
  assert (masks == masks[:, :1]).all()  # The whole batch shares one draw.
  first = masks[:, 0]
  assert not ((first[:, 0] == 0) & (first[:, 1] == 0)).any()  # Never both.
  assert np.mean(first[:, 0] == 0) == pytest.approx(0.2, abs=0.03)
  assert np.mean(first[:, 1] == 0) == pytest.approx(0.2, abs=0.03)


@pytest.fixture(scope="module")
def experiment():
  return setup(tiny_config(), num_classes=3)


def test_training_step_drops_whole_modalities(experiment):
  model, method = ModelFns(experiment.graphs), experiment.method
  step = jax.jit(lambda s, b, key: method.update(
      model, experiment.tx, s, b, StepContext(step=jnp.int32(0), epoch=jnp.int32(0), rng=key,
                                                model=method.model)))
  dropped = set()
  for seed in range(12):
    state, _, metrics = step(experiment.state, _batch(), jax.random.key(seed))
    dropped.add((float(metrics["dropped_audio"]), float(metrics["dropped_visual"])))
    assert np.isfinite(metrics["loss"])
  assert (0.0, 0.0) in dropped and len(dropped) >= 2 and (1.0, 1.0) not in dropped
  assert not jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), state.params,
                                       experiment.state.params))


def test_missing_modality_predictions(experiment):
  config = tiny_config()
  config.evals.ablation = {}
  eval_step, _, report_of = evaluation(config, experiment.graphs)
  batch = _batch()
  preds = jax.tree.map(np.asarray, eval_step(experiment.state, batch))
  model = ModelFns(experiment.graphs)
  without_visual, _ = jax.jit(lambda s: model.forward(
      s.params, s.model_state, batch, train=False,
      modality_mask=jnp.array([[1.0, 0.0]] * 4)))(experiment.state)
  np.testing.assert_allclose(preds["logits_only_audio"], without_visual.logits, rtol=1e-5,
                             atol=1e-6)
  assert np.abs(preds["logits_only_visual"] - preds["logits"]).max() > 1e-5
  report = report_of(preds)
  for key in ("accuracy", "accuracy_audio", "accuracy_visual", "micro_f1_visual", "loss_audio",
              "accuracy_only_audio", "loss_only_visual"):
    assert key in report, key
  assert report["loss_only_audio"] != report["loss"]
  # `_audio` is the auxiliary audio head; `_only_audio` the whole model without the frames.
  assert report["loss_audio"] != report["loss_only_audio"]


def test_config_checks():
  c = tiny_config()
  c.method.drop_audio = 0.7
  c.method.drop_visual = 0.5
  with pytest.raises(ConfigError, match="sum to at most 1"):
    validate(c)
  c = tiny_config()
  c.model.name = "vavl"
  with pytest.raises(ConfigError, match="config.model.name='auxformer'"):
    validate(c)
