"""valuation_sample / valuation_modality: copy counts, plans, epoch learning rate, the diagnostics
every method gets; end to end through avjax.main on synthetic_av 'debiased' (re-sampled epoch,
per-sample files, recovery of each clip's informative modality) and a mid-epoch resume."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import types

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from avjax import valuation
from avjax import train as train_lib
from avjax.config import validate
from avjax.data.pipeline import shuffled_plan
from avjax.methods import METHODS

from avjax.methods import valuation as vm
from avjax.methods.base import EpochContext, scale_updates
from avjax.optim import schedule_step
from avjax.preemption import Preempted
from avjax.registry import ConfigError
from tests.helpers import preempt_at, restore_final_state, tiny_config
from tests.methods.common import config_module, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (fused ok, audio-only ok, visual-only ok) -> (phi_a, phi_v) -> copies (audio-only, visual-only).
TABLE = [
    ((1, 1, 1), (1.0, 1.0), (0, 0)),
    ((1, 1, 0), (1.5, 0.5), (0, 1)),
    ((1, 0, 1), (0.5, 1.5), (1, 0)),
    ((1, 0, 0), (1.0, 1.0), (0, 0)),
    ((0, 1, 1), (0.0, 0.0), (2, 2)),
    ((0, 1, 0), (0.5, -0.5), (1, 3)),
    ((0, 0, 1), (-0.5, 0.5), (3, 1)),
    ((0, 0, 0), (0.0, 0.0), (2, 2)),
]


@pytest.mark.parametrize("row,phi,copies", TABLE)
def test_copies_for_each_row_of_the_reference_table(row, phi, copies):
  fused, audio, visual = row
  correct = np.array([[0, audio, visual, fused]], np.float64)
  np.testing.assert_allclose(correct @ valuation.contribution_matrix(2, "size"), [phi])
  assert vm.copies_for(np.asarray(phi)).tolist() == list(copies)


def test_copy_thresholds_are_contiguous():
  phi = np.array([-2.0, -0.11, -0.1, 0.0, 0.4, 0.41, 0.9, 0.99, 1.0, 1.5])
  assert vm.copies_for(phi).tolist() == [3, 3, 2, 2, 2, 1, 1, 1, 0, 0]


def test_sample_level_plan_holds_originals_and_single_modality_copies():
  phi = np.array([[1.0, 1.0], [1.5, 0.5], [0.5, -0.5], [0.0, 0.0]])
  plan, copies = vm.sample_level_plan(phi, seed=3, epoch=7)
  assert copies.tolist() == [[0, 0], [0, 1], [1, 3], [2, 2]]
  assert len(plan.indices) == 4 + 9 and plan.modality_masks.shape == (13, 2)
  rows = sorted(zip(plan.indices.tolist(), map(tuple, plan.modality_masks.tolist())))
  assert rows == sorted([(0, (1, 1)), (1, (1, 1)), (2, (1, 1)), (3, (1, 1)), (1, (0, 1)),
                         (2, (1, 0)), (2, (0, 1)), (2, (0, 1)), (2, (0, 1)), (3, (1, 0)),
                         (3, (1, 0)), (3, (0, 1)), (3, (0, 1))])
  again, _ = vm.sample_level_plan(phi, seed=3, epoch=7)
  np.testing.assert_array_equal(plan.indices, again.indices)
  np.testing.assert_array_equal(plan.modality_masks, again.modality_masks)
  other, _ = vm.sample_level_plan(phi, seed=3, epoch=8)
  assert not np.array_equal(plan.indices, other.indices)  # Reshuffled every epoch.


@pytest.mark.parametrize("fn,expected", [("linear", 0.4), ("tanh", math.tanh(0.4)),
                                         ("square", 0.4**1.5)])
def test_resample_fraction_by_hand(fn, expected):
  # gap_a = 1 - 1.2 = -0.2, gap_v = 1 - 0.6 = 0.4: |delta| * 2/3 = 0.4; visual (gap 0.4) is weaker.
  d, weakest = vm.resample_fraction(np.array([1.2, 0.6]), fn, 1.0)
  assert d == pytest.approx(expected) and weakest == 1
  d, weakest = vm.resample_fraction(np.array([0.4, 1.3]), fn, 1.0)  # delta 0.9 * 2/3 = 0.6.
  assert weakest == 0 and d == pytest.approx({"linear": 0.6, "tanh": math.tanh(0.6),
                                             "square": 0.6**1.5}[fn])
  assert vm.resample_fraction(np.array([0.8, 0.8]), fn, 1.0) == (0.0, 1)  # Ties: the later one.
  assert vm.resample_fraction(np.array([1.2, 0.6]), "linear", 0.5)[0] == pytest.approx(0.2)


def test_modality_level_plan_and_subset():
  plan, count = vm.modality_level_plan(50, 0.4, 1, 2, seed=0, epoch=5)
  assert count == 20 and len(plan.indices) == 70
  copies = plan.modality_masks[:, 0] == 0
  assert copies.sum() == 20 and np.all(plan.modality_masks[copies] == [0, 1])
  assert sorted(plan.indices[~copies].tolist()) == list(range(50))
  z = vm.valuation_subset(50, 0.2, seed=0, epoch=5)
  assert len(z) == 10 and len(set(z.tolist())) == 10
  np.testing.assert_array_equal(z, vm.valuation_subset(50, 0.2, seed=0, epoch=5))


def _config(name, **method):
  c = tiny_config("/unused", **{"method.name": name, "train.num_epochs": 6})
  for k, v in method.items():
    c.method[k] = v
  return c


def _context(epoch, workdir, shapley_of, calls):
  """An EpochContext whose training pass returns `shapley_of(indices)` without any model."""

  def run(fn, split, indices):
    assert split == "train"
    calls.append((fn, np.asarray(indices)))
    phi = shapley_of(np.asarray(indices))
    return {"shapley": phi, "subset_correct": np.zeros((len(indices), 4), np.float32),
            "label": np.zeros(len(indices), np.int32), "index": np.asarray(indices)}

  state = types.SimpleNamespace(step=jnp.int32(42))
  del workdir  # Methods write no files: the trainer writes what the hook returns.
  return EpochContext(epoch=epoch, seed=0, num_examples=8, state=state, model=None, run=run)


def test_sample_level_epoch_plans(tmp_path):
  method = METHODS.get("valuation_sample")(_config("valuation_sample", warmup_epochs=2))
  calls = []
  phis = np.array([[1.0, 1.0], [1.5, 0.5], [0.5, 1.5], [1.0, 1.0],
                   [0.0, 0.0], [0.5, -0.5], [-0.5, 0.5], [0.0, 0.0]])
  shapley_of = lambda idx: phis[idx]
  for epoch in (0, 1):  # Warm-up: the baseline's shuffled plan, no valuation.
    plan = method.on_epoch_start(_context(epoch, str(tmp_path), shapley_of, calls)).plan
    np.testing.assert_array_equal(plan.indices, shuffled_plan(8, 0, epoch).indices)
    assert plan.modality_masks is None
  assert not calls
  update = method.on_epoch_start(_context(2, str(tmp_path), shapley_of, calls))
  plan = update.plan
  (fn, indices), = calls
  assert fn is method.valuation_fn and indices.tolist() == list(range(8))
  expected, _ = vm.sample_level_plan(phis, 0, 2)
  np.testing.assert_array_equal(plan.indices, expected.indices)
  np.testing.assert_array_equal(plan.modality_masks, expected.modality_masks)
  assert len(plan.indices) == 8 + sum(sum(c) for _, _, c in TABLE)
  # The valuation of the training set comes back as data; the trainer writes it (state after 2
  # epochs, step 42).
  assert not (tmp_path / "valuation").exists()
  np.testing.assert_array_equal(update.contributions.predictions["shapley_audio"], phis[:, 0])
  train_lib.record_contributions(str(tmp_path), 2, 42, update.contributions)
  table = np.genfromtxt(tmp_path / "valuation" / "train_epoch_0002_step_0000042.csv",
                        delimiter=",", names=True)
  np.testing.assert_array_equal(table["shapley_visual"], phis[:, 1])
  assert table["copies_audio"].tolist() == [c[0] for _, _, c in TABLE]
  row, = [json.loads(line) for line in open(tmp_path / "valuation" / "summary.jsonl")]
  assert row["split"] == "train" and row["epoch"] == 2 and row["copies_visual"] == 9


def test_modality_level_epoch_plan(tmp_path):
  config = _config("valuation_modality", warmup_epochs=1, part_ratio=0.5, alpha=1.0)
  method = METHODS.get("valuation_modality")(config)
  calls = []
  # Mean over Z: phi_a = 1.5, phi_v = 0.0 -> gaps -0.5 / 1.0 -> d = 1.5 * 2/3 = 1: N visual copies.
  update = method.on_epoch_start(_context(
      1, str(tmp_path), lambda idx: np.tile([1.5, 0.0], (len(idx), 1)), calls))
  plan = update.plan
  (_, indices), = calls
  np.testing.assert_array_equal(indices, vm.valuation_subset(8, 0.5, 0, 1))
  assert len(plan.indices) == 16
  assert np.all(plan.modality_masks[plan.modality_masks[:, 0] == 0] == [0, 1])
  assert (plan.modality_masks[:, 0] == 0).sum() == 8
  assert update.contributions.summary["resample_count"] == 8
  train_lib.record_contributions(str(tmp_path), 1, 42, update.contributions)
  row, = [json.loads(line) for line in open(tmp_path / "valuation" / "summary.jsonl")]
  assert row["resample_modality"] == "visual" and row["resample_count"] == 8


@pytest.mark.parametrize("name,key,value,needle", [
    ("valuation_sample", "warmup_epochs", 0, "warmup_epochs"),
    ("valuation_sample", "value_fn", "accuracy", "value_fn"),
    ("valuation_sample", "part_ratio", 0.2, "does not take"),
    ("valuation_modality", "part_ratio", 0.0, "part_ratio"),
    ("valuation_modality", "alpha", -1.0, "alpha"),
    ("valuation_modality", "resample_fn", "cubic", "resample_fn"),
])
def test_validate_errors(name, key, value, needle):
  with pytest.raises(ConfigError, match=needle):
    validate(_config(name, **{key: value}))


def test_learning_rate_counts_epochs_not_steps():
  """Re-sampled epochs are longer (7 steps here, 3 plain): the schedule still steps per epoch."""
  config = _config("valuation_sample")
  config.optimizer.update(dict(name="adam", learning_rate=0.01, schedule="step", step_epochs=2,
                               gamma=0.5, weight_decay=1e-4))
  method = METHODS.get("valuation_sample")(config)
  rate = lambda epoch, i: float(method.learning_rate(
      schedule_step(jnp.int32(epoch), jnp.int32(i), jnp.int32(7), 3), 3))
  assert [rate(e, 0) for e in range(5)] == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.0025])
  assert [rate(1, i) for i in range(7)] == pytest.approx([0.01] * 7)  # All of epoch 1.
  assert rate(2, 6) == pytest.approx(0.005)
  # Unit-rate optimizer scaled by the step's rate == the optimizer at that rate (Adam + L2).
  params = {"w": jnp.array([1.0, -2.0, 3.0])}
  grads = {"w": jnp.array([0.3, 0.1, -0.2])}
  tx = method.optimizer(steps_per_epoch=1)
  reference = optax.chain(optax.add_decayed_weights(1e-4), optax.adam(0.005))
  state, ref_state = tx.init(params), reference.init(params)
  for _ in range(2):
    ours, state = tx.update(grads, state, params)
    theirs, ref_state = reference.update(grads, ref_state, params)
    np.testing.assert_allclose(scale_updates(ours, jnp.float32(0.005))["w"], theirs["w"],
                               rtol=1e-6)


def test_every_run_reports_contributions_by_default():
  """Shapley contributions are an evaluator every config gets, whatever the method."""
  for name in ("baseline", "ogm", "ogm_ge", "mmcosine", "valuation_sample", "valuation_modality"):
    assert "contributions" in validate(_config(name)).evals, name


def test_artifacts_files_and_plot(tmp_path):
  workdir = str(tmp_path)
  preds = {"index": np.array([4, 7]), "label": np.array([1, 0]), "logits": np.zeros((2, 3)),
           "shapley_audio": np.array([1.5, 0.5]), "shapley_visual": np.array([0.5, -0.5]),
           "audio_informative": np.array([1.0, 0.0])}
  path = valuation.write_artifacts(workdir, "validation", 3, 120, preds)
  table = np.genfromtxt(path, delimiter=",", names=True)
  assert table.dtype.names == ("index", "label", "shapley_audio", "shapley_visual",
                               "audio_informative")
  np.testing.assert_array_equal(table["index"], [4, 7])
  assert valuation.contribution_report(preds) == {"shapley_audio": 1.0, "shapley_visual": 0.0}
  # A later final evaluation of an earlier (best) checkpoint does not hide epoch 3's own row.
  valuation.write_artifacts(workdir, "validation", 3, 80, {**preds, "shapley_audio": preds[
      "shapley_audio"] * 0})
  rows = valuation.read_summary(workdir)
  assert [(r["epoch"], r["step"], r["shapley_audio"]) for r in rows] == [(3, 120, 1.0)]
  assert os.path.getsize(os.path.join(workdir, "valuation", "contributions.png")) > 1000
  assert valuation.write_artifacts(workdir, "test", 0, 1, {"logits": np.zeros((2, 3))}) is None


@pytest.mark.parametrize("name", ["valuation_ks", "valuation_modality_ks", "valuation_mmdebiased"])
def test_configs_validate_and_have_smoke_variants(name):
  module = config_module(name)
  full = module.get_config()
  validate(full)
  assert (full.train.num_epochs, full.method.warmup_epochs, full.optimizer.name,
          full.optimizer.learning_rate, full.optimizer.step_epochs, full.optimizer.gamma,
          full.train.batch_size) == (60, 5, "adam", 5e-5, 30, 0.1, 64)
  smoke = module.get_config("smoke")
  validate(smoke)
  assert (smoke.dataset.name, smoke.dataset.config) == ("synthetic_av", "debiased")
  assert smoke.train.num_epochs == 2 and smoke.method.warmup_epochs == 1
  assert smoke.name.endswith("_smoke") and smoke.method.name == full.method.name
  with pytest.raises(ValueError, match="Unknown config argument"):
    module.get_config("nonsense")


def test_config_datasets_and_levels():
  ks, modality, debiased = (config_module(n).get_config() for n in (
      "valuation_ks", "valuation_modality_ks", "valuation_mmdebiased"))
  assert (ks.dataset.name, ks.dataset.config, ks.method.name, ks.input.frame_sampling) == (
      "kinetics_sounds", "ogm_ge", "valuation_sample", "ks")
  assert (modality.method.name, modality.method.part_ratio, modality.method.alpha,
          modality.method.resample_fn) == ("valuation_modality", 0.2, 1.0, "linear")
  assert (debiased.dataset.name, debiased.dataset.config, debiased.method.name) == (
      "vggsound", "mm_debiased", "valuation_sample")


# ------------------------------------------------------------------------- end to end, resume
SMOKE = os.path.join(ROOT, "configs", "valuation_mmdebiased.py")
STEPS_EPOCH0 = 384 // 16  # The smoke config: 384 training clips, batch 16.


@pytest.fixture(scope="module")
def smoke_run(data_dir, tmp_path_factory):
  """configs/valuation_mmdebiased.py:smoke preempted 5 steps into its first re-sampled epoch (in
  process), then resumed to the end by `python -m avjax.main` with the same config (the suite's one
  end-to-end run). Returns (workdir, epochs planned in process, the epoch-1 plan file before the
  resumption (bytes, mtime))."""
  workdir = str(tmp_path_factory.mktemp("valuation") / "smoke")
  config = load_config("valuation_mmdebiased", "smoke")
  config.dataset.data_dir = data_dir
  config.mesh.data = 1
  config.train.progress = False
  planned = []
  original = vm.SampleLevel.resampled_plan

  def counting(self, ctx):
    planned.append((ctx.epoch, int(ctx.state.step)))
    return original(self, ctx)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(vm.SampleLevel, "resampled_plan", counting)
    patch.setattr(train_lib, "PreemptionWatcher", preempt_at(STEPS_EPOCH0 + 5))
    with pytest.raises(Preempted):
      train_lib.train_and_evaluate(config, workdir)
  plan_path = os.path.join(workdir, "plans", "epoch_00001.npz")
  with open(plan_path, "rb") as f:
    plan_before = (f.read(), os.stat(plan_path).st_mtime_ns)
  result = subprocess.run(
      [sys.executable, "-m", "avjax.main", "--config", f"{SMOKE}:smoke",
       f"--config.dataset.data_dir={data_dir}", "--config.mesh.data=1", f"--workdir={workdir}"],
      cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"Resuming from step {STEPS_EPOCH0 + 5}" in result.stderr, result.stderr[-3000:]
  return workdir, planned, plan_before


def _table(path):
  return np.genfromtxt(path, delimiter=",", names=True)


def test_mid_epoch_resume_replays_the_plan(smoke_run):
  """The resumed epoch runs the plan saved when it started (planned from the model after epoch 0),
  not a plan re-made from the mid-epoch model."""
  workdir, planned, (plan_bytes, plan_mtime) = smoke_run
  assert planned == [(1, STEPS_EPOCH0)]  # In process: planned once, at the epoch's start.
  plan_path = os.path.join(workdir, "plans", "epoch_00001.npz")
  with open(plan_path, "rb") as f:
    assert f.read() == plan_bytes
  assert os.stat(plan_path).st_mtime_ns == plan_mtime  # Loaded, never saved again.
  summary = [json.loads(line) for line in open(os.path.join(workdir, "valuation", "summary.jsonl"))]
  assert [(r["epoch"], r["step"]) for r in summary if r["split"] == "train"] == [(1, STEPS_EPOCH0)]
  with np.load(plan_path) as plan:
    length = len(plan["indices"])
  state, meta = restore_final_state(workdir, _config_of(workdir))
  assert meta["epoch"] == 2 and int(state.step) == STEPS_EPOCH0 + length // 16


def _config_of(workdir):
  from avjax.evaluate import load_workdir_config  # pylint: disable=import-outside-toplevel
  return load_workdir_config(workdir)


def test_smoke_run_resamples_and_recovers_the_informative_modality(smoke_run):
  workdir = smoke_run[0]
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  val = [r for r in rows if r["split"] == "val"]
  assert [r["epoch"] for r in val] == [1, 2]
  assert all("shapley_audio" in r and "shapley_visual" in r for r in val)
  assert any(r["split"] == "test" and "shapley_audio" in r for r in rows)
  train = [r for r in rows if r["split"] == "train"]
  assert train[0]["single_modality_frac"] == 0.0 < train[1]["single_modality_frac"]
  assert train[1]["learning_rate"] == pytest.approx(2e-3)  # The rate the epoch trained with.
  # Epoch 1's plan: the 384 originals plus the copies recorded with the training-set valuation.
  files = sorted(os.listdir(os.path.join(workdir, "valuation")))
  assert "contributions.png" in files
  train_csv, = [f for f in files if f.startswith("train_epoch_0001_")]  # After 1 epoch.
  valuated = _table(os.path.join(workdir, "valuation", train_csv))
  assert len(valuated) == 384
  np.testing.assert_array_equal(valuated["copies_audio"], vm.copies_for(valuated["shapley_audio"]))
  with np.load(os.path.join(workdir, "plans", "epoch_00001.npz")) as plan:
    masks = plan["modality_masks"]
  copies = int(valuated["copies_audio"].sum() + valuated["copies_visual"].sum())
  assert len(masks) == 384 + copies and copies > 0
  assert (masks == [1, 0]).all(-1).sum() == valuated["copies_audio"].sum()
  assert (masks == [0, 1]).all(-1).sum() == valuated["copies_visual"].sum()
  # After two epochs, clips whose label only the audio carries get more from audio than from the
  # frames, and vice versa (the ground-truth flags of synthetic_av 'debiased').
  last = _table(os.path.join(workdir, "valuation",
                             max(f for f in files if f.startswith("validation_epoch_0002"))))
  audio = last["audio_informative"] > 0
  assert 0 < audio.sum() < len(audio)
  assert last["shapley_audio"][audio].mean() > last["shapley_visual"][audio].mean()
  assert last["shapley_visual"][~audio].mean() > last["shapley_audio"][~audio].mean()
