"""VAVL method: the three steps and their parameter groups, CCC losses, reports with audio-only /
visual-only modes, test CSVs, config checks, and configs/vavl_msp.py end to end."""

import csv
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from avjax import data, metrics, tasks
from avjax.config import base_config, validate
from avjax.evaluators import EvalContext
from avjax.evaluators.standard import PredictionSettings, Predictions
from avjax.methods.vavl import STEP_GROUPS

# The VAVL model's top-level parameter paths, and those each step trains (through its groups).
MODULES = ("audio_encoder", "visual_encoder", "shared", "head_audio", "head_visual",
           "recon_audio", "recon_visual", "fusion")
GROUPS = {"visual": ("visual_encoder", "shared", "head_visual", "recon_visual"),
          "audio": ("audio_encoder", "shared", "head_audio", "recon_audio"),
          "fusion": ("fusion",)}
from avjax.registry import ConfigError
from avjax.steps import setup
from avjax.state import ModelFns
from avjax.tasks import make_task
from tests.helpers import evaluation, restore_final_state
from tests.methods.common import load_config
from tests.xla_env import subprocess_env

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = dict(inputs="features", audio_dim=12, visual_dim=10, proj_dim=6, dim=8, heads=2,
            audio_blocks=1, visual_blocks=1, shared_blocks=1, kernel_size=3, head_hidden=(8, 4),
            dropout=0.1, head_dropout=0.2)


def tiny_vavl_config(task: str = "dimensional") -> ml_collections.ConfigDict:
  c = base_config()
  c.dataset.config = "features"
  c.model.name = "vavl"
  c.model.vavl = ml_collections.ConfigDict(TINY)
  c.method.name = "vavl"
  if task == "dimensional":  # The reference's --label_type names.
    c.task.name, c.task.targets = "regression", ("arousal", "valence", "dominance")
  elif task == "categorical":
    c.task.name, c.task.labels = "classification", "soft_label"
  else:
    c.task.name = task
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-2
  c.optimizer.b1 = 0.95
  c.optimizer.weight_decay = 5e-7
  c.optimizer.schedule = "constant"
  return c


def _batch(b: int = 4) -> dict:
  k = jax.random.split(jax.random.key(3), 3)
  return {"audio": jax.random.normal(k[0], (b, 6, 12)),
          "visual": jax.random.normal(k[1], (b, 4, 10)),
          "audio_mask": jnp.ones((b, 6)).at[0, 3:].set(0.0), "visual_mask": jnp.ones((b, 4)),
          "attributes": jax.random.uniform(k[2], (b, 3)), "label": jnp.arange(b) % 3,
          "modality_mask": jnp.ones((b, 2)), "valid": jnp.ones((b,)), "index": jnp.arange(b)}


@pytest.fixture(scope="module")
def vavl():
  exp = setup(tiny_vavl_config(), num_classes=4)
  model = ModelFns(exp.graphs)
  method, tx = exp.method, exp.tx
  steps = {
      "visual": jax.jit(lambda s, b: method.unimodal_step("visual", model, tx, s.params,
                                                         s.model_state, s.opt_state, b)),
      "audio": jax.jit(lambda s, b: method.unimodal_step("audio", model, tx, s.params,
                                                        s.model_state, s.opt_state, b)),
      "fusion": jax.jit(lambda s, b: method.fusion_step(model, tx, s.params, s.model_state,
                                                       s.opt_state, b)),
  }
  return exp, steps


def _leaves_by_module(tree) -> dict:
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    key = getattr(path[0], "key", None)
    if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)
    out.setdefault(key, []).append(np.asarray(leaf))
  return out


def _same(a: list, b: list) -> bool:
  return all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("step", ["visual", "audio", "fusion"])
def test_each_step_updates_only_its_parameter_groups(vavl, step):
  exp, steps = vavl
  assert set(exp.method.model.paths(*STEP_GROUPS[step])) == set(GROUPS[step])
  state = exp.state
  result = steps[step](state, _batch())
  before, after = _leaves_by_module(state.params), _leaves_by_module(result.params)
  for module in MODULES:
    if module in GROUPS[step]:
      assert not _same(before[module], after[module]), module
    else:
      assert _same(before[module], after[module]), module  # Bit-identical.
    opt_changed = not _same(jax.tree.leaves(state.opt_state[module]),
                            jax.tree.leaves(result.opt_state[module]))
    assert opt_changed == (module in GROUPS[step]), module
  stats_before = _leaves_by_module(state.model_state)
  stats_after = _leaves_by_module(result.model_state)
  bn = lambda leaves: [x for x in leaves if x.dtype == np.float32]  # BatchNorm mean / var.
  if step == "fusion":  # Encoders in eval mode: running statistics untouched.
    for module in ("audio_encoder", "visual_encoder", "shared"):
      assert _same(bn(stats_before[module]), bn(stats_after[module])), module
  else:
    encoder = f"{step}_encoder"
    assert not _same(bn(stats_before[encoder]), bn(stats_after[encoder]))


def test_ccc_loss_terms_against_hand_values():
  y = jnp.array([1.0, 2.0, 3.0, 4.0])
  stack = lambda *cols: jnp.stack(cols, axis=-1)
  # Perfect; shifted by 1 (var 1.25 each, cov 1.25: 2.5 / 3.5); constant prediction (0).
  preds, targets = stack(y, y + 1.0, jnp.full(4, 2.5)), stack(y, y, y)
  np.testing.assert_allclose(tasks.ccc_per_output(preds, targets), [1.0, 5 / 7, 0.0], atol=1e-6)
  assert float(tasks.ccc_per_output(jnp.ones((3, 1)), jnp.ones((3, 1)))[0]) == 1.0
  # A zero weight leaves an example out exactly.
  junk = stack(jnp.append(y, 9.0), jnp.append(y + 1.0, -3.0), jnp.append(jnp.full(4, 2.5), 7.0))
  weighted = tasks.ccc_per_output(junk, stack(*[jnp.append(y, 0.0)] * 3),
                                    jnp.array([1, 1, 1, 1, 0.0]))
  np.testing.assert_allclose(weighted, [1.0, 5 / 7, 0.0], atol=1e-6)
  loss, terms = make_task(tiny_vavl_config("dimensional")).loss(preds, {"attributes": targets})
  np.testing.assert_allclose(loss, 2 - 5 / 7, rtol=1e-6)
  assert float(terms["ccc_valence"]) == pytest.approx(5 / 7, rel=1e-6)
  # Against the whole-split metric.
  p, t = np.random.default_rng(0).normal(size=(2, 50))
  assert float(tasks.ccc_per_output(jnp.asarray(p)[:, None], jnp.asarray(t)[:, None])[0]) == (
      pytest.approx(metrics.ccc(t, p), rel=1e-5))


def test_categorical_targets_are_the_argmax_of_soft_labels():
  batch = {"label": jnp.array([0, 1]), "soft_label": jnp.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]])}
  task = make_task(tiny_vavl_config("categorical"))
  np.testing.assert_array_equal(task.class_targets(batch), [1, 0])
  np.testing.assert_array_equal(task.class_targets({"label": jnp.array([2, 0])}), [2, 0])
  plain = make_task(base_config())  # labels='label' (the default) ignores the soft labels.
  np.testing.assert_array_equal(plain.class_targets(batch), [0, 1])


def test_modality_reports_read_their_own_heads(vavl):
  """Eval-mode predictions: `_audio` / `_visual` results come from head_audio / head_visual."""
  exp, _ = vavl
  eval_step, _, report_of = evaluation(exp.method.config, exp.graphs)
  preds = jax.tree.map(np.asarray, eval_step(exp.state, _batch(8)))
  for key in ("logits", "logits_audio", "logits_visual", "targets"):
    assert preds[key].shape == (8, 3), key
  report = report_of(preds)
  for suffix, key in (("", "logits"), ("_audio", "logits_audio"), ("_visual", "logits_visual")):
    expected = metrics.ccc(preds["targets"][:, 0], preds[key][:, 0])
    assert report[f"ccc_arousal{suffix}"] == pytest.approx(expected)
    total = sum(report[f"ccc_{n}{suffix}"] for n in ("arousal", "valence", "dominance"))
    assert report[f"ccc_loss{suffix}"] == pytest.approx(3 - total)
  assert report["ccc_loss_audio"] != report["ccc_loss"] != report["ccc_loss_visual"]


def test_categorical_report_and_prediction_csvs(tmp_path):
  logits = np.array([[2.0, 0, 0], [0, 2.0, 0], [0, 0, 2.0], [2.0, 0, 0]])
  preds = {"logits": logits, "logits_audio": logits[::-1].copy(), "logits_visual": logits,
           "target": np.array([0, 1, 2, 1]), "label": np.array([0, 0, 0, 0]),
           "index": np.array([3, 0, 2, 1])}
  report = make_task(tiny_vavl_config("categorical")).report(preds)
  assert report["accuracy"] == pytest.approx(0.75) and report["micro_f1"] == pytest.approx(0.75)
  assert report["macro_f1"] == pytest.approx((1 / 1.5 + 2 / 3 + 1) / 3)
  assert report["accuracy_audio"] == pytest.approx(0.25)
  config = tiny_vavl_config("categorical")
  writer = Predictions(config, make_task(config), PredictionSettings())  # splits=('test',)
  writer.write(EvalContext(split="test", epoch=1, step=7, predictions=preds, sample={},
                           apply=None, workdir=str(tmp_path), is_chief=True))
  root = tmp_path / "predictions" / "test"
  assert json.loads((root / "checkpoint.json").read_text())["step"] == 7
  rows = list(csv.reader(open(root / "acoustic" / "y_pred.csv")))
  assert rows[0] == ["index", "0", "1", "2"] and [r[0] for r in rows[1:]] == ["0", "1", "2", "3"]
  assert float(rows[1][1]) == logits[::-1][1][0]  # Index 0 is the second example.
  truth = list(csv.reader(open(root / "audiovisual" / "y_true.csv")))
  assert [r[1] for r in truth[1:]] == ["1", "1", "2", "0"]
  rows = list(csv.reader(open(root / "audiovisual" / "confusion.csv")))
  confusion = np.array([r[1:] for r in rows[1:]], int)
  np.testing.assert_array_equal(confusion, [[1, 0, 0], [1, 1, 0], [0, 0, 1]])
  writer.write(EvalContext(split="validation", epoch=1, step=7, predictions=preds,
                           sample={}, apply=None, workdir=str(tmp_path / "v"), is_chief=True))
  assert not (tmp_path / "v").exists()  # Only the test split is written.


def test_config_errors_name_the_fix():
  c = tiny_vavl_config()
  c.model.name = "av_resnet"
  with pytest.raises(ConfigError, match="config.model.name='vavl'"):
    validate(c)
  c = tiny_vavl_config()
  c.dataset.config = "logmel_p1"
  with pytest.raises(ConfigError, match="inputs='raw'"):
    validate(c)
  c = tiny_vavl_config()
  c.task.name = "ordinal"
  with pytest.raises(ConfigError, match="task"):
    validate(c)


def test_vavl_msp_stops_at_once_when_msp_improv_is_not_built(tmp_path):
  config = load_config("vavl_msp")
  config.dataset.partition = 3
  config.dataset.data_dir = str(tmp_path / "empty")
  validate(config)
  with pytest.raises(data.DatasetNotBuiltError) as e:
    data.open_dataset(config.dataset, ["train"])
  message = str(e.value)
  assert "msp_improv/features_p3 is not built" in message
  assert ("python -m avjax.tfds build data_builders/msp_improv --config=features_p3 "
          "--manual_dir=") in message
  assert "data_builders/msp_improv/README.md" in message


def load_smoke_config(data_dir: str) -> ml_collections.ConfigDict:
  """configs/vavl_msp.py:smoke as the end-to-end test runs it."""
  c = load_config("vavl_msp", "smoke")
  c.dataset.data_dir = data_dir
  c.train.num_epochs = 1
  c.model.vavl.dropout = 0.0
  c.model.vavl.head_dropout = 0.0
  c.mesh.data = 1
  return c


def test_vavl_msp_smoke_through_main(tmp_path, data_dir):
  """configs/vavl_msp.py:smoke via `python -m avjax.main` (dropout off: a cheaper compile)."""
  workdir = tmp_path / "vavl"
  env = subprocess_env()
  result = subprocess.run(
      [sys.executable, "-m", "avjax.main", "--config", "configs/vavl_msp.py:smoke",
       f"--config.dataset.data_dir={data_dir}", f"--workdir={workdir}",
       "--config.train.num_epochs=1", "--config.model.vavl.dropout=0.0",
       "--config.model.vavl.head_dropout=0.0", "--config.mesh.data=1"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  val = [r for r in rows if r["split"] == "val"][-1]
  for key in ("ccc_arousal", "ccc_valence", "ccc_dominance", "ccc_loss", "ccc_arousal_audio",
              "ccc_loss_visual"):
    assert np.isfinite(val[key]), key
  train = [r for r in rows if r["split"] == "train"][-1]
  for key in ("loss", "loss_visual", "loss_audio", "recon_visual", "recon_audio", "ccc_arousal"):
    assert np.isfinite(train[key]), key
  # The three steps per batch, each with its own optimizer state: `shared` is stepped twice.
  state, _ = restore_final_state(str(workdir), load_smoke_config(data_dir))
  steps = int(state.step)
  counts = {m: int(jax.tree.leaves(state.opt_state[m])[0]) for m in MODULES}
  assert steps > 0 and counts == {m: 2 * steps if m == "shared" else steps for m in MODULES}
  test_dir = workdir / "predictions" / "test"
  for mode in ("audiovisual", "acoustic", "visual"):
    header = next(csv.reader(open(test_dir / mode / "y_pred.csv")))
    assert header == ["index", "id", "arousal", "valence", "dominance"]
