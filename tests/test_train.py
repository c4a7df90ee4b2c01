"""The trainer end to end: sharding equivalence, bit-exact resume, non-finite policy."""

import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avjax import data, sharding, writers
from avjax import train as train_lib
from avjax import workdir as workdir_lib
from avjax.config import upgrade_saved, validate
from avjax.methods import METHODS, Method
from avjax.registry import ConfigError
from avjax.models import build_model
from avjax.preemption import Preempted, PreemptionWatcher
from avjax.steps import init_state, make_train_step
from avjax.train import NonFiniteLossError, train_and_evaluate
from tests.helpers import preempt_at, restore_final_state, tiny_config


def _first_batch(config):
  dataset = data.open_dataset(config.dataset, ["train"])
  source = dataset.sources["train"]
  plan = data.shuffled_plan(len(source), config.seed, 0)
  transform = data.make_transform(config.input, train=True)
  batch = next(data.train_batches(source, plan, transform, seed=config.seed, epoch=0,
                                  global_batch_size=config.train.batch_size))
  return dataset, batch


def _steps(config, dataset, batch, num_devices, steps):
  """[(state, metrics)] after each of `steps` train steps on `batch`, on a `num_devices` mesh."""
  config.mesh.data = num_devices
  mesh = sharding.make_mesh(config.mesh)
  method = METHODS.get("baseline")(config)
  model = build_model(config, dataset.num_classes)
  tx = method.optimizer(10)
  graphs, state = init_state(model, tx, method, config.seed)
  state = jax.device_put(state, sharding.replicated(mesh))
  step = jax.jit(make_train_step(graphs, tx, method, 10))
  out = []
  for _ in range(steps):
    state, metrics = step(state, sharding.to_global(batch, mesh), jnp.int32(0))
    out.append(jax.device_get((state, metrics)))
  return out


def _one_step(config, dataset, batch, num_devices):
  return _steps(config, dataset, batch, num_devices, 1)[0]


def test_sharded_step_matches_single_device(data_dir):
  assert jax.device_count() == 8
  config = tiny_config(data_dir)
  dataset, batch = _first_batch(config)
  (one, _), (_, m1) = _steps(config, dataset, batch, 1, steps=2)
  (eight, _), (_, m8) = _steps(config, dataset, batch, 8, steps=2)
  # The whole state after one step (parameters, BatchNorm statistics, SGD momentum), then the
  # second step's loss: the sharded state feeds the next step as the replicated one does. States
  # after two steps are not compared: the meshes sum in different orders, and where a max-pool
  # window's two largest inputs are within that rounding, its gradient goes to the other one (on an
  # AVX2 host only the audio stem's kernel differed after step 2, by 4e-4; every other leaf, its
  # BatchNorm included, within 1e-6).
  for a, b in zip(jax.tree.leaves((one.params, one.model_state, one.opt_state)),
                  jax.tree.leaves((eight.params, eight.model_state, eight.opt_state))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(m1["loss"], m8["loss"], rtol=1e-5)


def test_bfloat16_mixed_precision_keeps_float32_master_weights(data_dir):
  config = tiny_config(data_dir)
  dataset, batch = _first_batch(config)
  reference, m32 = _one_step(config, dataset, batch, 1)
  config.train.compute_dtype = "bfloat16"
  mixed, m16 = _one_step(config, dataset, batch, 1)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(mixed.params))
  assert all(x.dtype == y.dtype for x, y in zip(jax.tree.leaves(mixed.model_state),
                                                jax.tree.leaves(reference.model_state)))
  # The first forward is bfloat16-close (tiny networks at lr 0.05 diverge quickly afterwards).
  assert np.isfinite(m16["loss"]) and abs(float(m16["loss"]) - float(m32["loss"])) < 0.02
  # The updates are bfloat16-close, not equal: the step really ran in low precision.
  diffs = [np.abs(a - b).max() for a, b in zip(jax.tree.leaves(mixed.params),
                                               jax.tree.leaves(reference.params))]
  assert 0 < max(diffs) < 0.5


def _rows(workdir, split):
  rows = [r for r in writers.read_metrics(workdir) if r["split"] == split]
  for r in rows:
    r.pop("examples_per_sec", None)
  return rows


def test_resume_is_bit_identical(data_dir, tmp_path):
  config = tiny_config(data_dir, **{"mesh.data": 2, "optimizer.schedule": "step",
                                    "optimizer.step_epochs": 1, "optimizer.gamma": 0.5})
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  train_and_evaluate(config, straight)
  config.train.num_epochs = 1
  train_and_evaluate(config, resumed)
  config.train.num_epochs = 2
  train_and_evaluate(config, resumed)  # Continues from the epoch-1 checkpoint.

  a, meta_a = restore_final_state(straight, config)
  b, meta_b = restore_final_state(resumed, config)
  assert meta_a["epoch"] == meta_b["epoch"] == 2
  assert int(a.step) == int(b.step) > 0
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  assert _rows(straight, "val") == _rows(resumed, "val")
  assert _rows(straight, "train") == _rows(resumed, "train")
  val = _rows(straight, "val")[-1]
  for key in ("accuracy", "accuracy_audio", "accuracy_visual", "macro_f1", "loss"):
    assert key in val


@METHODS.register("test_nan_in_second_epoch")
class _NanInSecondEpoch(Method):
  """Baseline whose loss becomes NaN from the second epoch on (to exercise the policies)."""

  def loss(self, output, batch, state, ctx):
    loss, metrics = super().loss(output, batch, state, ctx)
    loss = jnp.where(ctx.epoch >= 1, jnp.nan, loss)
    return loss, {**metrics, "loss": loss}


def test_nonfinite_stop_keeps_last_good_checkpoint(data_dir, tmp_path):
  config = tiny_config(data_dir, **{"method.name": "test_nan_in_second_epoch",
                                    "train.num_epochs": 3})
  workdir = str(tmp_path / "run")
  with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
    train_and_evaluate(config, workdir)
  state, meta = restore_final_state(workdir, config)
  assert meta["epoch"] == 1
  assert np.all(np.isfinite(np.concatenate([np.ravel(x) for x in jax.tree.leaves(state.params)])))


def test_nonfinite_skip_counts_and_continues(data_dir, tmp_path):
  config = tiny_config(data_dir, **{"method.name": "test_nan_in_second_epoch",
                                    "train.nonfinite": "skip"})
  workdir = str(tmp_path / "run")
  train_and_evaluate(config, workdir)
  state, meta = restore_final_state(workdir, config)
  steps = int(state.step) // 2
  assert int(state.skipped_steps) == steps
  assert _rows(workdir, "train")[-1]["skipped_steps"] == steps


def test_gradient_accumulation_updates_every_k_steps(data_dir, tmp_path):
  config = tiny_config(data_dir, **{"train.grad_accum_steps": 2, "train.num_epochs": 1})
  workdir = str(tmp_path / "run")
  train_and_evaluate(config, workdir)
  state, _ = restore_final_state(workdir, config)
  assert int(state.step) == 6  # 96 clips / batch 16.
  assert int(state.opt_state.gradient_step) == 3  # One optimizer update per 2 steps.


def test_misspelt_or_misdirected_best_metric_is_refused_before_training(data_dir, tmp_path):
  config = tiny_config(data_dir, **{"train.best_metric": "acuracy", "train.num_epochs": 1})
  workdir = str(tmp_path / "run")
  with pytest.raises(ConfigError, match=r"best_metric='acuracy' is not a validation metric of this "
                                        r"run. Did you mean 'accuracy'\? .*'macro_f1'"):
    train_and_evaluate(config, workdir)
  config.train.best_metric = "macro_f1"
  config.train.best_mode = "min"
  with pytest.raises(ConfigError, match=r"'macro_f1' is better when higher.*best_mode='min'.*"
                                        r"--config.train.best_mode=max"):
    train_and_evaluate(config, workdir)
  assert not os.path.exists(os.path.join(workdir, "metrics.jsonl"))  # Nothing trained.
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))
  config.train.best_mode = "max"  # The same workdir takes the corrected settings.
  train_and_evaluate(config, workdir)
  assert [r["epoch"] for r in _rows(workdir, "val")] == [1]


def test_preemption_at_an_epochs_last_step_evaluates_and_checkpoints_that_epoch(
    data_dir, tmp_path, monkeypatch):
  # As if SIGTERM arrived during the 6th step: the last of epoch 1 (96 clips / 16).
  monkeypatch.setattr(train_lib, "PreemptionWatcher", preempt_at(6))
  config = tiny_config(data_dir, **{"train.num_epochs": 2})
  workdir = str(tmp_path / "run")
  with pytest.raises(Preempted, match="at the end of epoch 1"):
    train_and_evaluate(config, workdir)
  assert [r["epoch"] for r in _rows(workdir, "val")] == [1]
  state, meta = restore_final_state(workdir, config)  # Epoch 1 done, ranked by its val metrics.
  assert (meta["epoch"], meta["step_in_epoch"], int(state.step)) == (1, 0, 6)
  assert "accuracy" in meta["metrics"]
  monkeypatch.setattr(train_lib, "PreemptionWatcher", PreemptionWatcher)
  train_and_evaluate(config, workdir)
  assert [r["epoch"] for r in _rows(workdir, "train")] == [1, 2]


def test_workdirs_from_before_method_resolution_still_resume():
  # Older config.json files stored every config.method key (compare_balancing: all methods').
  saved = {"method.name": "ogm_ge", "method.alpha": 0.8, "method.scaling": 5.0,
           "method.value_fn": "size", "train.batch_size": 32}
  assert workdir_lib.run_method_settings_only(saved) == {
      "method.name": "ogm_ge", "method.alpha": 0.8, "train.batch_size": 32}


def test_workdirs_from_before_task_and_evals_resume(data_dir, tmp_path):
  """A config.json written before config.task / config.evals existed (VAVL, dimensional) is read
  as today's config: the same run resumes, and evaluate sees its task and evaluators."""
  config = validate(tiny_config(data_dir))
  saved = json.loads(config.to_json())
  del saved["task"], saved["evals"]
  saved["method"].update(name="vavl", task="dimensional")
  upgraded = upgrade_saved(saved)
  assert upgraded["task"]["name"] == "regression" and "task" not in upgraded["method"]
  assert upgraded["task"]["targets"] == ["arousal", "valence", "dominance"]
  assert set(upgraded["evals"]) == {"report", "contributions", "predictions"}
  old = json.loads(config.to_json())
  del old["task"], old["evals"]  # A baseline run from before: resumes under today's config.
  (tmp_path / "config.json").write_text(json.dumps(old))
  workdir_lib.check_resume(config, str(tmp_path), write=False)
  assert workdir_lib.read_config(str(tmp_path)).task.name == "classification"


def test_damaged_workdir_config_is_a_config_error(tmp_path):
  (tmp_path / "config.json").write_text('{"train": {"batch_')
  with pytest.raises(ConfigError, match="config.json is not valid JSON"):
    workdir_lib.check_resume(tiny_config(str(tmp_path)), str(tmp_path), write=True)
  assert (tmp_path / "config.json").read_text() == '{"train": {"batch_'  # Left as it was.


def test_finished_run_has_nothing_to_do_and_test_rows_carry_their_checkpoint(
    data_dir, tmp_path, caplog, monkeypatch):
  config = tiny_config(data_dir)
  workdir = str(tmp_path / "run")
  train_and_evaluate(config, workdir)
  rows = writers.read_metrics(workdir)
  with caplog.at_level(logging.INFO):
    again = train_and_evaluate(config, workdir)
  assert "Run complete (2/2 epochs, best checkpoint " in caplog.text
  assert "nothing to do" in caplog.text
  assert writers.read_metrics(workdir) == rows  # No evaluation or row again.
  assert again == pytest.approx({k: v for k, v in rows[-1].items()
                                 if k not in ("step", "epoch", "split", "checkpoint_step", "selected_on")})

  # Another best checkpoint (as a changed best_metric may pick): its evaluation is asked for.
  other = ({6, 12} - {rows[-1]["step"]}).pop()
  monkeypatch.setattr(train_lib.Checkpointer, "best_step", lambda self: other)
  train_and_evaluate(config, workdir)
  val = {r["step"]: r["epoch"] for r in _rows(workdir, "val")}
  tests = _rows(workdir, "test")
  assert len(tests) == 2 and tests[0]["step"] != tests[1]["step"]
  for row in tests:  # Each test row has its checkpoint's step and epoch, not the last epoch's.
    assert row["checkpoint_step"] == row["step"] and row["epoch"] == val[row["step"]]
  assert _rows(workdir, "val") == [r for r in _rows_of(rows, "val")]


def _rows_of(rows, split):
  return [{k: v for k, v in r.items() if k != "examples_per_sec"} for r in rows
          if r["split"] == split]


def test_progress_rate_starts_after_the_compiled_first_step(data_dir, tmp_path, monkeypatch,
                                                            caplog):
  bars = []

  def progress_bar(total, desc="", disable=False, *, initial=0, **kw):
    bars.append((desc, initial))
    return writers.progress_bar.__wrapped__(total, desc, True, initial=initial, **kw)

  progress_bar.__wrapped__ = writers.progress_bar
  monkeypatch.setattr(train_lib.writers, "progress_bar", progress_bar)
  config = tiny_config(data_dir, **{"train.progress": True})
  with caplog.at_level(logging.INFO):
    train_and_evaluate(config, str(tmp_path / "run"))
  assert "epoch 1/2: compiling the train step..." in caplog.text
  # Epoch 1's bar opens once its first (compiling) step is done; epoch 2's at once.
  assert bars == [("epoch 1/2", 1), ("epoch 2/2", 0)]


def test_step_rows_and_whole_epoch_means_across_a_mid_epoch_resume(data_dir, tmp_path,
                                                                   monkeypatch):
  config = tiny_config(data_dir, **{"train.num_epochs": 1, "train.log_every_steps": 2})
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  train_and_evaluate(config, straight)
  assert [(r["step"], r["epoch"]) for r in _rows(straight, writers.STEP_SPLIT)] == [
      (2, 1), (4, 1), (6, 1)]
  monkeypatch.setattr(train_lib, "PreemptionWatcher", preempt_at(4))  # Stops after step 4 of 6.
  with pytest.raises(Preempted, match="at step 4 "):
    train_and_evaluate(config, resumed)
  monkeypatch.setattr(train_lib, "PreemptionWatcher", PreemptionWatcher)
  train_and_evaluate(config, resumed)
  # The resumed epoch's train row averages all 6 steps (the first 4 came in the checkpoint).
  assert _rows(resumed, "train") == _rows(straight, "train")
  assert _rows(resumed, writers.STEP_SPLIT) == _rows(straight, writers.STEP_SPLIT)
  assert os.listdir(os.path.join(resumed, "tensorboard", writers.STEP_SPLIT))
  assert os.listdir(os.path.join(resumed, "tensorboard", "run"))  # The config, as text.
  # The pictures evaluators draw (here the contributions plot of the last epoch's and the final
  # evaluation), as TensorBoard images.
  from tests.test_fault_tolerance import _event_steps  # pylint: disable=import-outside-toplevel
  events = _event_steps(os.path.join(straight, "tensorboard", "pictures"))
  assert [e for e in events if e[0] != "purge"] == [("contributions", 6), ("contributions", 6)]


def test_console_shows_each_tasks_headline_metrics(data_dir):
  from avjax.config import base_config  # pylint: disable=import-outside-toplevel
  from avjax.tasks import make_task  # pylint: disable=import-outside-toplevel
  # A dimensional run's log lines, table and plot show CCC per attribute, not only the loss.
  regression = base_config()
  regression.task.name, regression.task.targets = "regression", ("arousal", "valence", "dominance")
  assert make_task(regression).columns() == ("loss", "ccc_mean", "ccc_arousal", "ccc_valence",
                                             "ccc_dominance")
  # A report of many per-class numbers (CM-VQVAE's) keeps its log line to the headline ones.
  classification = make_task(tiny_config(data_dir)).columns()
  report = {"loss": 1.0, "accuracy": 0.5, **{f"accuracy_class_{k}": 0.1 for k in range(40)}}
  brief = train_lib._brief  # pylint: disable=protected-access
  assert brief(report, classification) == "loss=1.0000, accuracy=0.5000"
  # A method's own logged values are plotted beside them (OGM-GE's coefficients).
  assert {"ogm_coeff_audio", "ogm_coeff_visual"} <= set(METHODS.get("ogm_ge").diagnostics)
