"""The `cmvqvae` method: its loss and evaluation metrics on hand-computed values, clear config errors,
and the smoke experiment end to end (`python -m avjax.main`): metrics, pictures, and a run resumed
from its epoch-1 checkpoint (EMA codebooks included) that is bit-identical to the uninterrupted one."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avjax import writers
from avjax.methods import METHODS
from avjax.methods.base import StepContext
from avjax.evaluators.cmvqvae import CMVQVAEEvaluator, CMVQVAESettings, mask_report
from avjax.models.outputs import FusionMask, ModelOutput, Quantization
from avjax.registry import ConfigError
from avjax.train import train_and_evaluate
from tests.helpers import restore_final_state
from tests.methods.common import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CTX = StepContext(step=jnp.int32(0), epoch=jnp.int32(0), rng=jax.random.key(0))
# The smoke config on the tests' shared tiny synthetic build, one residual block, 2 of 8 devices.
OVERRIDES = {"dataset.build_overrides.num_train": 96, "dataset.build_overrides.num_validation": 32,
             "dataset.build_overrides.num_test": 32, "train.batch_size": 16, "mesh.data": 2,
             "model.cmvqvae.num_residual_layers": 1, "train.progress": False}


def smoke_config(data_dir: str, **extra):
  config = load_config("cmvqvae_cremad", "smoke")
  config.dataset.data_dir = data_dir
  for key, value in {**OVERRIDES, **extra}.items():
    *sections, name = key.split(".")
    node = config
    for section in sections:
      node = node[section]
    node[name] = value
  return config


def _method(data_dir: str, **extra):
  config = smoke_config(data_dir, **extra)
  return METHODS.get("cmvqvae")(config)


def test_loss_adds_every_term_by_hand(data_dir):
  method = _method(data_dir)
  audio = jnp.zeros((2, 4, 4, 1))
  visual = jnp.zeros((2, 1, 3, 3, 3))
  batch = {"audio": audio, "visual": visual, "label": jnp.array([0, 3])}
  codes = jnp.zeros((2, 1, 1), jnp.int32)
  stats = lambda loss: Quantization(loss=jnp.float32(loss), perplexity=jnp.float32(1.0),
                                    codes=codes, num_codes=4)
  output = ModelOutput(
      logits=jnp.zeros((2, 4)), modality_logits={}, features={},
      reconstructions={"audio": audio + 1.0, "visual": visual[:, 0] + 2.0},
      quantization={"audio": stats(0.1), "visual": stats(0.2)},
      fusion_mask=FusionMask(values=jnp.asarray([2.0, 1.0]), thresholded=jnp.ones(2),
                             shared={"audio": jnp.float32(1), "visual": jnp.float32(1)}))
  loss, metrics = method.loss(output, batch, {}, CTX)
  # MSE 1 + MSE 4 + CE ln 4 + VQ 0.1 + 0.2 + 1e-4 * 3.
  np.testing.assert_allclose(loss, 1 + 4 + math.log(4) + 0.3 + 3e-4, rtol=1e-6)
  np.testing.assert_allclose(metrics["recon_visual"], 4.0, rtol=1e-6)
  np.testing.assert_allclose(metrics["loss_ce"], math.log(4), rtol=1e-6)
  bare = ModelOutput(logits=jnp.zeros((2, 4)), modality_logits={}, features={})
  np.testing.assert_allclose(method.loss(bare, batch, {}, CTX)[0], math.log(4), rtol=1e-6)


def test_evaluator_report_by_hand(data_dir):
  method = _method(data_dir)
  evaluator = CMVQVAEEvaluator(method.config, method.task, CMVQVAESettings())
  logits = np.eye(3, dtype=np.float32)[[0, 1, 2, 2]]
  predictions = {
      "logits": logits, "label": np.array([0, 1, 1, 2]),
      "code_counts_audio": np.array([[2, 2, 0, 0], [0, 0, 0, 4], [0] * 4, [0] * 4]),
      "recon_audio": np.array([1.0, 2.0, 3.0, 6.0]),
      "mask_shared_visual": np.full(4, 3.0), "mask_shared_audio": np.full(4, 1.0),
      "mask_channels": np.full(4, 16.0)}
  report = {**method.task.report(predictions), **evaluator.report(predictions)}
  # Histogram [2, 2, 0, 4] / 8: exp(-(2 * 0.25 ln 0.25 + 0.5 ln 0.5)) = 2^1.5.
  np.testing.assert_allclose(report["vq_perplexity_audio"], 2 ** 1.5, rtol=1e-9)
  assert report["recon_mse_audio"] == 3.0
  assert report["mask_shared_ratio_visual"] == 18.75 and report["mask_shared_ratio_audio"] == 6.25
  np.testing.assert_allclose(report["complementarity"], 1 / 3)
  assert (report["accuracy_class_0"], report["accuracy_class_1"], report["accuracy_class_2"]) == (
      1.0, 0.5, 1.0)
  assert report["accuracy"] == 0.75 and "vq_perplexity_visual" not in report
  assert mask_report(0.0, 0.0, 16)["complementarity"] == 0.0


@pytest.mark.parametrize("key,value,needle", [
    ("model.name", "av_resnet", "config.model.name='cmvqvae'"),
    ("input.num_frames", 2, "num_frames=1"),
    ("model.cmvqvae.ablation", 5, "ablation=5"),
    ("model.cmvqvae.threshold_fn", "sigmoid", "threshold_fn='sigmoid'"),
    ("model.cmvqvae.decay", 1.0, "decay=1.0"),
    ("method.mask_weight", -1.0, "mask_weight=-1.0"),
    ("input.image_size", 64, "latent_size=(8, 8)"),
])
def test_impossible_settings_are_config_errors(data_dir, key, value, needle):
  config = smoke_config(data_dir, **{key: value})
  with pytest.raises(ConfigError, match=re.escape(needle)):
    METHODS.get("cmvqvae").validate(config)


@pytest.fixture
def compilation_cache(tmp_path):
  """A persistent compilation cache shared by the CLI run and the in-process run below, so the
  same train / eval steps compile once."""
  from jax._src import compilation_cache as cc  # pylint: disable=import-outside-toplevel
  path = str(tmp_path / "jax_cache")
  names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
           "jax_persistent_cache_min_entry_size_bytes")
  old = {n: getattr(jax.config, n) for n in names}
  for name, value in zip(names, (path, 0, 0)):
    jax.config.update(name, value)
  cc.reset_cache()
  yield path
  for name, value in old.items():
    jax.config.update(name, value)
  cc.reset_cache()


def _rows(workdir, split):
  rows = [r for r in writers.read_metrics(workdir) if r["split"] == split]
  for r in rows:
    r.pop("examples_per_sec", None)
  return rows


def test_smoke_run_reports_metrics_writes_pictures_and_resumes_exactly(data_dir, tmp_path,
                                                                       compilation_cache):
  straight = tmp_path / "straight"
  flags = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=compilation_cache,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  result = subprocess.run(
      [sys.executable, "-m", "avjax.main", "--config", "configs/cmvqvae_cremad.py:smoke",
       f"--config.dataset.data_dir={data_dir}", f"--workdir={straight}", *flags],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  val = _rows(straight, "val")
  assert len(val) == 2
  for key in ("loss", "accuracy", "accuracy_audio", "accuracy_visual", "accuracy_class_0",
              "vq_perplexity_audio", "vq_perplexity_visual", "mask_shared_ratio_audio",
              "mask_shared_ratio_visual", "complementarity", "recon_mse_audio"):
    assert key in val[-1], key
  assert 0.99 <= val[-1]["vq_perplexity_audio"] <= 32  # 1 (+ the 1e-10 in the log) to K.
  assert 0 <= val[-1]["mask_shared_ratio_visual"] <= 50
  train = _rows(straight, "train")[-1]
  for key in ("loss_ce", "recon_audio", "recon_visual", "vq_loss_audio", "mask_sum"):
    assert key in train, key
  pictures = sorted(os.listdir(straight / "pictures"))
  assert "validation_epoch002_mask.png" in pictures
  test_epoch = _rows(straight, "test")[-1]["epoch"]  # The selected checkpoint's epoch (1-based).
  assert f"test_epoch{test_epoch:03d}_reconstructions.png" in pictures

  # Resume from the straight run's epoch-1 checkpoint (as an interrupted run would) in a new
  # workdir: the second epoch must reproduce the straight run's bit for bit.
  resumed = tmp_path / "resumed"
  steps = sorted(int(s) for s in os.listdir(straight / "checkpoints"))
  shutil.copytree(straight / "checkpoints" / str(steps[0]),
                  resumed / "checkpoints" / str(steps[0]))
  shutil.copytree(straight / "plans", resumed / "plans")
  shutil.copy(straight / "config.json", resumed / "config.json")
  config = smoke_config(data_dir)
  train_and_evaluate(config, str(resumed))
  a, meta_a = restore_final_state(str(straight), config)
  b, meta_b = restore_final_state(str(resumed), config)
  assert meta_a["epoch"] == meta_b["epoch"] == 2 and int(a.step) == 2 * steps[0]
  # The EMA state is model_state, checkpointed and updated (cluster sizes start at 0).
  assert "audio_vq" not in a.params and np.all(a.model_state["audio_vq"]["cluster_size"][...] > 0)
  as_numbers = lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(
      x.dtype, jax.dtypes.prng_key) else x  # Dropout / randomizer RNG keys.
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(as_numbers(x), as_numbers(y))
  assert _rows(straight, "val")[1:] == _rows(resumed, "val")
  assert _rows(straight, "train")[1:] == _rows(resumed, "train")
  with open(straight / "config.json") as f:
    assert json.load(f)["train"]["best_metric"] == "loss"

