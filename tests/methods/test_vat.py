"""VAT methods: learning-rate schedule, fine-tuning losses and metrics, validation, the update on
1 vs 8 devices, checkpoint round trip, and pre-training -> fine-tuning through the trainer (the loss
pieces are in tests/models/test_vat_objectives.py)."""

from __future__ import annotations

import json
import logging
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from avjax import sharding
from avjax.checkpoint import Checkpointer, abstract_like
from avjax.config import base_config, validate
from avjax.methods import StepContext
from avjax.methods.vat import decay_mask, vat_optimizer
from avjax.methods.vat_finetune import VATFinetune
from avjax.models import vat_objectives as L
from avjax.models.outputs import ModelOutput
from avjax.models.vat import model_section
from avjax.registry import ConfigError
from avjax.state import ModelFns
from avjax.steps import setup
from tests.methods.common import load_config

TINY = dict(width=16, heads=2, mlp_dim=32, visual_layers=1, audio_layers=1, fusion_layers=1,
            embed_dim=8, audio_size=(64, 64))
B, Q = 8, 16
# Tests compile with XLA's backend optimisations off: same semantics, half the compile time.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


# ------------------------------------------------------------------------------ schedule
def test_logged_learning_rate_is_the_optimizers_own_cosine_to_the_floor():
  c = base_config()
  c.method.name = "vat_finetune"
  c.optimizer.update(dict(name="adamw", learning_rate=1e-4, schedule="cosine", warmup_epochs=0,
                          weight_decay=0.02))
  c.train.num_epochs = 4
  method = VATFinetune(c)
  floor = method.min_learning_rate = 1e-5
  assert method.learning_rate(0, 10) == pytest.approx(1e-4)
  assert method.learning_rate(20, 10) == pytest.approx(floor + (1e-4 - floor) / 2)
  assert method.learning_rate(40, 10) == pytest.approx(floor)
  # The optimizer applies exactly that rate: AdamW's first update is -lr * sign(g) (+ decay).
  tx = vat_optimizer(c, 10, floor)
  params = {"kernel": jnp.zeros((2,))}
  state = tx.init(params)
  for _ in range(20):
    _, state = tx.update({"kernel": jnp.ones((2,))}, state, params)
  updates, _ = tx.update({"kernel": jnp.ones((2,))}, state, params)
  np.testing.assert_allclose(updates["kernel"], -method.learning_rate(20, 10), rtol=1e-3)
  # The trainer's unit-rate form, scaled by that rate, is the same update.
  unit = method.optimizer(10)
  state = unit.init(params)
  for _ in range(20):
    _, state = unit.update({"kernel": jnp.ones((2,))}, state, params)
  scaled, _ = unit.update({"kernel": jnp.ones((2,))}, state, params)
  np.testing.assert_allclose(scaled["kernel"] * method.learning_rate(20, 10), updates["kernel"],
                             rtol=1e-6)


# -------------------------------------------------------------------------- fine-tuning loss
TASK_KEYS = {"task": "name", "target_indices": "target_indices", "target_names": "targets",
             "target_range": "target_range", "regression_weight": "regression_weight"}


def _set(c, **settings) -> None:
  """Method settings into config.method, task settings (named as before) into config.task."""
  for k, v in settings.items():
    if k in TASK_KEYS:
      c.task[TASK_KEYS[k]] = v
      c.task.regression_loss = "mse"  # VAT trains its regression outputs with MSE.
    else:
      c.method[k] = v


def _finetune(**settings) -> VATFinetune:
  c = base_config()
  c.method.name = "vat_finetune"
  _set(c, **settings)
  return VATFinetune(c)


def test_finetune_classification_loss_by_hand():
  logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
  teacher = jnp.array([[1.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
  zeros = jnp.zeros((2, 3))
  out = ModelOutput(logits=logits, modality_logits={"audio": zeros, "visual": zeros}, features={})
  t_out = ModelOutput(logits=teacher, modality_logits={}, features={})
  labels = np.array([0, 1])
  loss, metrics = _finetune().finetune_loss(out, t_out, {"label": jnp.asarray(labels)}, 0.4)
  lp, pm = _log_softmax(np.asarray(logits, np.float64)), np.exp(_log_softmax(np.asarray(teacher)))
  ce = -np.mean(lp[[0, 1], labels])
  kd = -np.mean(np.sum(pm * lp, -1))
  main = 0.6 * ce + 0.4 * kd
  assert float(metrics["loss_main"]) == pytest.approx(main, rel=1e-5)
  # Detached per-modality probes (modality_weight 0) add their own CE, log(3) each here.
  assert float(loss) == pytest.approx(main + 2 * math.log(3), rel=1e-5)


def test_finetune_regression_loss_by_hand():
  pred, teacher = jnp.array([[0.2, 0.5], [0.9, 0.1]]), jnp.array([[0.3, 0.5], [0.5, 0.1]])
  attrs = jnp.array([[0.0, 0.4, 0.7], [0.0, 0.8, 0.2]])  # Targets: columns (2, 1).
  out = ModelOutput(logits=pred, modality_logits={}, features={}, regression=pred,
                    modality_regression={"audio": pred, "visual": pred})
  method = _finetune(task="regression", target_indices=(2, 1), target_names=("x", "y"),
                     modality_weight=0.5)
  loss, metrics = method.finetune_loss(out, ModelOutput(
      logits=teacher, modality_logits={}, features={}, regression=teacher),
      {"attributes": attrs}, 0.25)
  targets = np.array([[0.7, 0.4], [0.2, 0.8]])
  mse = np.mean((np.asarray(pred) - targets) ** 2)
  main = 0.75 * mse + 0.25 * np.mean((np.asarray(pred) - np.asarray(teacher)) ** 2)
  assert float(metrics["loss_mse"]) == pytest.approx(mse, rel=1e-5)
  assert float(loss) == pytest.approx(main + 0.5 * 2 * mse, rel=1e-5)


def test_mer_score_and_pearson_reports():
  method = _finetune(task="classification_regression", target_indices=(1,),
                     target_names=("valence",))
  labels = np.array([0, 0, 1, 1])
  logits = np.eye(2)[[0, 1, 1, 1]]
  preds = {"label": labels, "logits": logits, "logits_audio": logits, "logits_visual": logits,
           "targets": np.array([[0.1], [0.2], [0.3], [0.4]])}
  regression = np.array([[0.1], [0.2], [0.3], [0.6]])
  preds.update(regression=regression, regression_audio=regression, regression_visual=regression)
  report = method.task.report(preds)
  # F1: class 0 = 2/3, class 1 = 4/5, support 2 / 2 -> 0.7333; MSE(valence) = 0.2^2 / 4 = 0.01.
  assert report["weighted_f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)
  assert report["mse_valence"] == pytest.approx(0.01)
  assert report["mer_score"] == pytest.approx((2 / 3 + 4 / 5) / 2 - 0.25 * 0.01)
  muse = _finetune(task="regression", target_indices=(0, 1), target_names=("a", "b"))
  t = np.array([[0.1, 0.9], [0.5, 0.2], [0.9, 0.4]])
  p = np.array([[0.2, 0.8], [0.4, 0.1], [0.6, 0.7]])
  # Regression alone: the model's logits are its regression outputs.
  report = muse.task.report({"targets": t, "logits": p, "logits_audio": p, "logits_visual": t})
  r = [np.corrcoef(t[:, i], p[:, i])[0, 1] for i in range(2)]
  assert report["pearson"] == pytest.approx(np.mean(r), rel=1e-6)
  assert report["pearson_visual"] == pytest.approx(1.0)
  assert report["loss"] == report["mse"] and "mer_score" not in report and "accuracy" not in report


def test_decay_mask_spares_biases_and_norm_scales():
  """timm's rule as ALBEF uses it, by leaf name (scanned layers stack the 1-D tensors to 2-D)."""
  params = {"temp": jnp.float32(0.9), "enc": {"bias": jnp.ones(2), "kernel": jnp.ones((2, 2)),
                                              "scale": jnp.ones((3, 2))}}
  assert decay_mask(params) == {"temp": True, "enc": {"bias": False, "kernel": True,
                                                        "scale": False}}


# --------------------------------------------------------------------------------- validation
def _pretrain_config(**method) -> ml_collections.ConfigDict:
  c = base_config()
  c.model.name = "vat"
  c.model.vat = model_section("small", **TINY)
  c.input.num_frames, c.input.image_size = 2, 16
  c.method.name = "vat_pretrain"
  c.evals = ml_collections.ConfigDict({"matching": {}})
  for k, v in dict(dict(queue_size=Q), **method).items():
    c.method[k] = v
  # SGD: updates linear in the gradients, so 1 and 8 devices can be compared parameter by parameter.
  c.optimizer.name, c.optimizer.learning_rate, c.optimizer.schedule = "sgd", 0.05, "constant"
  c.train.batch_size, c.train.best_metric, c.train.best_mode = B, "loss", "min"
  c.seed = 1
  return c


@pytest.mark.parametrize("change,needle", [
    (("method.queue_size", 12), "multiple of the\\s+global batch size"),
    (("model.name", "vat_classifier"), "embeddings.*config.model.name='vat'"),
    (("input.modality_dropout", 0.2), "modality_dropout=0"),
    (("train.best_metric", "accuracy"), "not reported"),
    (("method.temperature", 0.7), "must lie in"),
    (("method.queue_sise", 8), "does not take"),
    (("evals.ablation", ml_collections.ConfigDict()), "'ablation'.*needs model capabilities "
                                                       "\\['task_outputs'\\]"),
])
def test_pretrain_validate(change, needle):
  c = _pretrain_config()
  validate(c)
  section, key = change[0].split(".")
  c[section][key] = change[1]
  with pytest.raises(ConfigError, match=needle):
    validate(c)


@pytest.mark.parametrize("method,needle", [
    (dict(task="regression"), "needs config.task.targets"),
    (dict(task="classification", target_indices=(1,), target_names=("v",)), "ignores it"),
    (dict(task="multi"), "Unknown task 'multi'"),
])
def test_finetune_validate(method, needle):
  c = base_config()
  c.model.name, c.method.name = "vat_classifier", "vat_finetune"
  c.model.vat = model_section("small", **TINY)
  c.input.num_frames, c.input.image_size = 2, 16
  c.train.best_metric, c.train.best_mode = "accuracy", "max"
  validate(c)
  _set(c, **method)
  with pytest.raises(ConfigError, match=needle):
    validate(c)


# -------------------------------------------------------------- the pre-training update, jitted
def _batch(seed: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  return {"audio": rng.normal(size=(B, 64, 64, 1)).astype(np.float32),
          "visual": rng.normal(size=(B, 2, 16, 16, 3)).astype(np.float32),
          "label": rng.integers(0, 4, B).astype(np.int32),
          "modality_mask": np.ones((B, 2), np.float32), "valid": np.ones(B, np.float32),
          "index": np.arange(B, dtype=np.int32)}


@pytest.fixture(scope="module")
def pretrain():
  """The tiny pre-training experiment and its update (state -> state, metrics) jitted per mesh."""
  exp = setup(_pretrain_config(), 4, steps_per_epoch=4)
  model = ModelFns(exp.graphs)

  def step(state, batch):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    ctx = StepContext(step=state.step, epoch=jnp.int32(0), rng=rng, model=exp.method.model,
                      steps_per_epoch=exp.steps_per_epoch)
    new, _, metrics = exp.method.update(model, exp.tx, state, batch, ctx)
    return new.replace(step=state.step + 1), metrics

  meshes = {n: sharding.make_mesh(ml_collections.ConfigDict(dict(data=n))) for n in (1, 8)}
  jitted = {n: jax.jit(step, compiler_options=FAST_COMPILE) for n in meshes}

  def run(n, state, seeds):
    state = jax.device_put(state, sharding.replicated(meshes[n]))
    history = []
    for seed in seeds:
      state, metrics = jitted[n](state, sharding.to_global(_batch(seed), meshes[n]))
      history.append((state, metrics))
    return history

  return exp, run


def test_update_applies_ema_before_the_forward_and_fills_the_queue(pretrain):
  exp, run = pretrain
  state0 = exp.state
  (state1, m1), (state2, _), (state3, _) = run(1, state0, (0, 1, 2))
  sub = lambda s: jax.device_get({k: s.params[k] for k in exp.method.model.paths("momentum")})
  mom = lambda s: jax.device_get(s.method_state["momentum"])
  close = lambda a, b, **kw: jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **kw), a, b)
  # Momentum starts as the params, so after step 1 it is params_0; after step 2 it is
  # m params_0 + (1 - m) params_1: updated with the params BEFORE each step's optimizer update.
  close(mom(state1), sub(state0), rtol=1e-6, atol=1e-7)
  close(mom(state2), L.ema(sub(state0), sub(state1), 0.995), rtol=1e-6, atol=1e-7)
  assert float(m1["alpha"]) == 0.0 and float(m1["temperature"]) == pytest.approx(0.07)
  assert set(m1) >= {"loss", "vac_loss", "vam_loss", "vam_accuracy"}
  assert float(m1["loss"]) == pytest.approx(float(m1["vac_loss"] + m1["vam_loss"]), rel=1e-6)
  # The queue holds the momentum embeddings of each batch in order, and wraps after Q / B = 2.
  assert [int(s.method_state["queue_ptr"]) for s in (state1, state2, state3)] == [8, 0, 8]
  queue = np.asarray(state3.method_state["queue_audio"])
  np.testing.assert_allclose(np.linalg.norm(queue, axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(queue[8:], np.asarray(state2.method_state["queue_audio"])[8:])
  emb, _ = ModelFns(exp.graphs).apply(
      jax.device_get(state0.params), state0.model_state,
      lambda m: m.embed(m.encode({k: jnp.asarray(v) for k, v in _batch(0).items()
                                  if k in ("audio", "visual")})))
  np.testing.assert_allclose(np.asarray(state1.method_state["queue_audio"])[:8], emb["audio"],
                             rtol=1e-4, atol=1e-5)


def test_update_on_8_devices_equals_1_device(pretrain):
  exp, run = pretrain
  one, eight = run(1, exp.state, (0, 1)), run(8, exp.state, (0, 1))
  for (s1, m1), (s8, m8) in zip(one, eight):
    for key in ("loss", "vac_loss", "vam_loss", "vam_accuracy"):
      assert float(m8[key]) == pytest.approx(float(m1[key]), rel=2e-5, abs=1e-6), key
    for key in ("queue_audio", "queue_visual"):
      np.testing.assert_allclose(s8.method_state[key], s1.method_state[key], atol=2e-5)
    assert int(s8.method_state["queue_ptr"]) == int(s1.method_state["queue_ptr"])
    for a, b in zip(jax.tree.leaves(s8.params), jax.tree.leaves(s1.params)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6)


def test_momentum_and_queues_survive_checkpoint_bit_exactly(pretrain, tmp_path):
  exp, run = pretrain
  (_, _), (state, _) = run(1, exp.state, (0, 1))
  ckpt = Checkpointer(str(tmp_path / "ckpt"), keep=2, best_metric="loss", best_mode="min")
  ckpt.save(2, state, {"epoch": 0, "step_in_epoch": 2}, None)
  ckpt.wait()
  restored, meta = ckpt.restore(2, abstract_like(state))
  ckpt.close()
  assert meta["step_in_epoch"] == 2
  same = lambda a, b: [np.testing.assert_array_equal(x, y) for x, y in
                       zip(jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b)))]
  same(restored.method_state, state.method_state)
  (cont, _), = run(1, state, (2,))
  (resumed, _), = run(1, restored, (2,))
  same(resumed, cont)  # The next step from the restored state is bit-identical.


# ------------------------------------------------ pre-training -> fine-tuning, through the trainer
@pytest.mark.parametrize("name", ["vat_pretrain", "vat_mer", "vat_muse"])
def test_config_files_validate(name):
  for arg in (None, "smoke"):
    validate(load_config(name, arg))
  with pytest.raises(ValueError, match="Unknown config argument"):
    load_config(name, "large")


def _smoke(name: str, data_dir: str, workdir_overrides: dict) -> ml_collections.ConfigDict:
  c = load_config(name, "smoke")
  c.dataset.data_dir = data_dir
  c.dataset.build_overrides = ml_collections.ConfigDict(  # Shared with tests.helpers.tiny_config.
      dict(num_train=96, num_validation=32, num_test=32))
  c.dataset.test_split = ""
  c.input.image_size = 16
  c.model.vat = model_section("small", **TINY)
  c.train.batch_size, c.train.num_epochs, c.train.progress = 16, 1, False
  for key, value in workdir_overrides.items():
    section, name = key.split(".")
    c[section][name] = value
  return c


def test_pretrain_then_finetune_through_the_trainer(data_dir, tmp_path, caplog):
  """configs/vat_pretrain.py:smoke on 8 devices, then configs/vat_mer.py:smoke on 1 device
  initialised from it (`config.init_from`), both shrunk further."""
  from avjax.train import train_and_evaluate  # pylint: disable=import-outside-toplevel
  pre_dir, fine_dir = str(tmp_path / "pre"), str(tmp_path / "fine")
  pre = _smoke("vat_pretrain", data_dir, {"mesh.data": 8, "method.queue_size": 32})
  report = train_and_evaluate(pre, pre_dir)
  assert set(report) == {"loss", "vac_loss", "vam_loss", "vam_accuracy"}
  assert all(np.isfinite(v) for v in report.values())

  fine = _smoke("vat_mer", data_dir, {"mesh.data": 1})
  fine.init_from = pre_dir
  with caplog.at_level(logging.INFO, logger="avjax.train"):
    final = train_and_evaluate(fine, fine_dir)
  # Encoders come from pre-training; the heads (fused MLP 4 arrays, 2 linear 2 each) start fresh
  # and the projections / matching head / temperature (7 arrays) are not used.
  counts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Initialised")]
  assert counts and "'kept_fresh': 8, 'unused': 7}" in counts[0], counts
  for key in ("accuracy", "accuracy_audio", "accuracy_visual", "weighted_f1", "mer_score",
              "pearson", "mse_valence", "pearson_audio"):
    assert np.isfinite(final[key]), key
  rows = [json.loads(line) for line in open(os.path.join(fine_dir, "metrics.jsonl"))]
  train_rows = [r for r in rows if r["split"] == "train"]
  assert train_rows and {"loss_ce", "loss_mse", "alpha", "accuracy_audio"} <= set(train_rows[0])
