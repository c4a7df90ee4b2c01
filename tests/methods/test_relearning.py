"""Diagnosing & Re-learning: purity, weights, schedule, k-means, the re-initialisation step, and a
mid-epoch resume across a re-initialisation."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avjax.config import base_config, validate
from avjax.methods.base import StepContext
from avjax.methods.relearning import (interpolate, kmeans, minmax_scale, purity, reinit_due,
                                      reinit_weight)
from avjax.state import ModelFns
from avjax.steps import setup
from tests.helpers import tiny_config
from tests.methods.common import (FUSIONS, check_config, check_refused, check_resume,
                                   fusion_config, smoke_cli)


# ------------------------------------------------------------------------- the notes' oracles
def test_purity_by_hand():
  assert purity(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1])) == 0.75
  # Non-contiguous labels, cluster ids that are not 0..k-1: clusters {0,2,2 | 5,5} -> 2 + 2.
  assert purity(np.array([0, 2, 2, 5, 5]), np.array([7, 7, 7, 3, 3])) == pytest.approx(4 / 5)
  assert purity(np.array([1, 2, 3]), np.array([0, 0, 0])) == pytest.approx(1 / 3)


def test_weight_interpolation_and_schedule_by_hand():
  assert reinit_weight(0.75, 0.5, 3.0) == pytest.approx(0.635149, abs=1e-6)
  assert reinit_weight(0.5, 0.75, 3.0) == reinit_weight(0.75, 0.5, 3.0)  # |gap|.
  assert reinit_weight(0.6, 0.6, 3.0) == 0.0
  out = interpolate({"w": jnp.float32(1.0)}, {"w": jnp.float32(3.0)}, jnp.float32(0.5),
                    jnp.float32(0.5))
  assert float(out["w"]) == 2.0
  # reinit_epoch 20, reinit_num 3 over 90 epochs: after epochs 20, 40 and 60 only.
  assert [e for e in range(90) if reinit_due(e, 20, 3)] == [20, 40, 60]
  assert [e for e in range(10) if reinit_due(e, 1, 2)] == [1, 2]
  assert not any(reinit_due(e, 5, 0) for e in range(30))


def test_minmax_scale_matches_sklearn():
  sk = pytest.importorskip("sklearn.preprocessing")
  x = np.random.default_rng(0).normal(size=(50, 7)).astype(np.float32)
  x[:, 3] = 2.0  # A constant dimension.
  want = sk.MinMaxScaler(feature_range=(-1, 1)).fit_transform(x.astype(np.float64))
  np.testing.assert_allclose(minmax_scale(x), want, atol=1e-12)


def _blobs(seed=0, per=40, k=5, dim=8, spread=0.3):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(k, dim)) * 4
  labels = np.repeat(np.arange(k), per)
  return centres[labels] + spread * rng.normal(size=(k * per, dim)), labels


def test_kmeans_is_deterministic_and_agrees_with_sklearn():
  cluster = pytest.importorskip("sklearn.cluster")
  x, labels = _blobs()
  ours = kmeans(x, 5, n_init=10, seed=0)
  np.testing.assert_array_equal(ours, kmeans(x, 5, n_init=10, seed=0))
  theirs = cluster.KMeans(n_clusters=5, random_state=0, n_init=10).fit_predict(x)
  assert purity(labels, ours) == purity(labels, theirs) == 1.0
  # Overlapping clusters: both find partitions of (nearly) the same purity and inertia.
  x, labels = _blobs(seed=1, spread=3.0)
  ours = kmeans(minmax_scale(x), 5, seed=0)
  theirs = cluster.KMeans(n_clusters=5, random_state=0, n_init=10).fit_predict(minmax_scale(x))
  inertia = lambda c: sum(np.sum((minmax_scale(x)[c == j] - minmax_scale(x)[c == j].mean(0)) ** 2)
                          for j in np.unique(c))
  assert inertia(ours) <= inertia(theirs) * 1.02
  assert abs(purity(labels, ours) - purity(labels, theirs)) < 0.1


def test_interpolation_matches_torch_original():
  """ours.py's reinit: the gap is a numpy float64, so the weight is a float64 0-dim tensor; times
  float32 tensors torch computes in float32 with w and 1 - w rounded once from float64, as avjax
  stores them: bit-identical."""
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(3)
  init, cur = rng.normal(size=(64,)).astype(np.float32), rng.normal(size=(64,)).astype(np.float32)
  gap = np.abs(0.8125 - 0.4302)  # np.float64, as purity_gap_audio in ours.py:122.
  w_t = torch.tanh(torch.tensor(3.0 * gap))
  want = (w_t * torch.from_numpy(init) + (1 - w_t) * torch.from_numpy(cur)).numpy()
  w = reinit_weight(0.8125, 0.4302, 3.0)
  got = interpolate(jnp.asarray(init), jnp.asarray(cur), jnp.float32(w), jnp.float32(1 - w))
  np.testing.assert_array_equal(np.asarray(got), want)


# ----------------------------------------------------------------- the step applies a re-init
def test_pending_reinit_moves_only_encoders_once(data_dir):
  config = tiny_config(data_dir, **{"method.name": "relearning", "optimizer.learning_rate": 0.0,
                                    "optimizer.weight_decay": 0.0})
  exp = setup(config, num_classes=6)
  state, method = exp.state, exp.method
  params0 = jax.tree.map(np.asarray, state.params)
  moved = jax.tree.map(lambda p: p + 1.0, state.params)  # As if trained away from init.
  ms = dict(state.method_state, pending=jnp.bool_(True),
            weight={"audio": jnp.float32(0.25), "visual": jnp.float32(0.5)},
            keep={"audio": jnp.float32(0.75), "visual": jnp.float32(0.5)})
  state = state.replace(params=moved, method_state=ms)
  batch = {"audio": jnp.zeros((4, 16, 16, 1)), "visual": jnp.zeros((4, 2, 16, 16, 3)),
           "label": jnp.arange(4) % 6}
  ctx = StepContext(step=jnp.int32(0), epoch=jnp.int32(2), rng=jax.random.key(0),
                    learning_rate=jnp.float32(0.0), model=method.model)
  update = jax.jit(lambda s, b: method.update(ModelFns(exp.graphs), exp.tx, s, b, ctx))
  new, _, metrics = update(state, batch)
  assert not bool(new.method_state["pending"])
  for path, w in (("audio_encoder", 0.25), ("visual_encoder", 0.5), ("fusion", None)):
    for a, b, c in zip(jax.tree.leaves(params0[path]), jax.tree.leaves(moved[path]),
                       jax.tree.leaves(new.params[path])):
      want = np.asarray(b) if w is None else np.float32(w) * a + np.float32(1 - w) * np.asarray(b)
      np.testing.assert_allclose(np.asarray(c), want, rtol=1e-6, atol=1e-6, err_msg=path)
  again, _, _ = update(new, batch)  # Not pending any more: the params stay.
  jax.tree.map(np.testing.assert_array_equal, again.params, new.params)
  assert "relearning_weight_audio" in metrics


# --------------------------------------------------------------------------- configs, refusals
@pytest.mark.parametrize("name", ["relearning_cremad", "relearning_ks"])
def test_configs_validate(name):
  full, _ = check_config(name, "relearning")
  assert full.method.move_lambda == 3.0


@pytest.mark.parametrize("fusion,form", FUSIONS)
def test_every_av_resnet_fusion_validates(data_dir, fusion, form):
  validate(fusion_config(data_dir, "relearning", fusion, form))


def test_bad_settings_and_models_are_refused():
  c = base_config()
  c.method.name = "relearning"
  check_refused(c, "reinit_epoch", reinit_epoch=0)
  check_refused(c, "encode_fuse|modality_encoders", reinit_epoch=20, **{"model.name": "vavl"})


def test_smoke_config_trains_from_the_command_line(data_dir, tmp_path):
  rows = smoke_cli("relearning", data_dir, str(tmp_path / "w"))
  train = [r for r in rows if r["split"] == "train"]
  assert [r["relearning_reinits"] for r in train] == [0.0, 0.0, 1.0]
  assert 0 < train[-1]["relearning_purity_train_audio"] <= 1


# ------------------------------------------------------------------- resume across a re-init
def test_mid_epoch_resume_across_a_reinit_is_bit_exact(data_dir, tmp_path, monkeypatch):
  # 96 clips: a held-out fold of 19, 77 to train on (4 steps per epoch); re-init after epoch 1.
  config = tiny_config(data_dir, **{"method.name": "relearning", "train.num_epochs": 3,
                                    "train.checkpoint_every_steps": 4})
  config.method.reinit_epoch, config.method.reinit_num = 1, 1
  # Stop during step 10: the third epoch's second batch, after the step that re-initialised.
  run = check_resume(config, tmp_path, monkeypatch, 10, "batch 2")
  assert (run.mid_meta["epoch"], run.mid_meta["step_in_epoch"]) == (2, 2)
  assert int(run.mid.method_state["reinits"]) == 1 and not bool(run.mid.method_state["pending"])
  a = run.final
  ms = a.method_state
  for m in ("audio", "visual"):
    p_train, p_held = float(ms["purity_train"][m]), float(ms["purity_heldout"][m])
    assert 0 < p_train <= 1 and 0 < p_held <= 1
    assert float(ms["weight"][m]) == pytest.approx(math.tanh(3.0 * abs(p_train - p_held)),
                                                   rel=1e-6)
  # Trained on the 77 examples of the fit fold only: 4 steps per epoch.
  assert int(a.step) == 12
