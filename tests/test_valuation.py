"""Shapley valuation (avjax.valuation): hand tables for 2 and 3 modalities, efficiency, the traced
per-example pass (fake head and the real classifier), and 1 vs 8 devices."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avjax import data, sharding, valuation
from avjax.evaluate import predict
from avjax.models.outputs import ModelOutput
from avjax.steps import make_per_example_fn, setup
from tests.helpers import evaluation, tiny_config

# The reference notes' table: (fused ok, audio-only ok, visual-only ok) -> (phi_a, phi_v), 'size' form.
TABLE = [
    ((1, 1, 1), (1.0, 1.0)),
    ((1, 1, 0), (1.5, 0.5)),
    ((1, 0, 1), (0.5, 1.5)),
    ((1, 0, 0), (1.0, 1.0)),
    ((0, 1, 1), (0.0, 0.0)),
    ((0, 1, 0), (0.5, -0.5)),
    ((0, 0, 1), (-0.5, 0.5)),
    ((0, 0, 0), (0.0, 0.0)),
]


def _correct_2(fused, audio, visual):
  """Coalition columns (empty, {a}, {v}, {a, v}) of one example."""
  return [0, audio, visual, fused]


def test_coalitions_are_bit_masks():
  np.testing.assert_array_equal(valuation.coalitions(2), [[0, 0], [1, 0], [0, 1], [1, 1]])
  assert valuation.coalitions(3).shape == (8, 3)
  assert valuation.coalitions(3)[5].tolist() == [True, False, True]  # 5 = 0b101: modalities 0, 2.


@pytest.mark.parametrize("row,expected", TABLE)
def test_two_modalities_match_the_reference_table(row, expected):
  correct = np.asarray([_correct_2(*row)], np.float64)
  phi = correct @ valuation.contribution_matrix(2, "size")
  np.testing.assert_allclose(phi[0], expected, atol=1e-12)
  # Same through the general host Shapley of v(S) = |S| * correct(S).
  values = correct * np.array([0, 1, 1, 2])
  np.testing.assert_allclose(valuation.shapley_values(values)[0], expected, atol=1e-12)
  # The reference's closed form: phi_a = (v_a + v_av - v_v) / 2.
  v_a, v_v, v_av = row[1], row[2], 2 * row[0]
  assert expected == ((v_a + v_av - v_v) / 2, (v_v + v_av - v_a) / 2)


@pytest.mark.parametrize("row", [r for r, _ in TABLE])
def test_two_modalities_correct_value_form(row):
  fused, audio, visual = row
  phi = np.asarray([_correct_2(*row)], np.float64) @ valuation.contribution_matrix(2, "correct")
  # v in {0, 1}: phi_a = (v_a + v_av - v_v) / 2 with v_av = 1[fused ok].
  np.testing.assert_allclose(phi[0], [(audio + fused - visual) / 2, (visual + fused - audio) / 2])


# Three modalities (a, b, c); hand-computed with weights 1/3 (|S| = 0), 1/6 (|S| = 1), 1/3 (|S| = 2).
# Each case: the coalitions (as member strings) predicted correctly -> phi ('size'), phi ('correct').
THREE = [
    (("a", "b", "c", "ab", "ac", "bc", "abc"), (1, 1, 1), (1 / 3, 1 / 3, 1 / 3)),
    (("abc",), (1, 1, 1), (1 / 3, 1 / 3, 1 / 3)),
    (("a",), (1 / 3, -1 / 6, -1 / 6), (1 / 3, -1 / 6, -1 / 6)),
    (("a", "ab", "abc"), (5 / 3, 7 / 6, 1 / 6), (5 / 6, 1 / 3, -1 / 6)),
    (("b", "c"), (-1 / 3, 1 / 6, 1 / 6), (-1 / 3, 1 / 6, 1 / 6)),
]


def _correct_3(members):
  correct = np.zeros(8)
  for s, row in enumerate(valuation.coalitions(3)):
    name = "".join(p for p, keep in zip("abc", row) if keep)
    correct[s] = float(name in members)
  return correct


@pytest.mark.parametrize("members,size_phi,correct_phi", THREE)
def test_three_modalities_hand_values(members, size_phi, correct_phi):
  correct = _correct_3(members)[None]
  np.testing.assert_allclose((correct @ valuation.contribution_matrix(3, "size"))[0], size_phi,
                             atol=1e-12)
  np.testing.assert_allclose((correct @ valuation.contribution_matrix(3, "correct"))[0],
                             correct_phi, atol=1e-12)


@pytest.mark.parametrize("m", [2, 3, 4])
def test_efficiency_symmetry_and_null_player(m):
  rng = np.random.default_rng(m)
  values = rng.normal(size=(5, 2**m))  # v(empty) != 0 too.
  phi = valuation.shapley_values(values)
  np.testing.assert_allclose(phi.sum(-1), values[:, -1] - values[:, 0], atol=1e-12)
  # Every 0/1 correctness pattern, both value forms: sum phi = v(all) (v(empty) = 0).
  patterns = np.array(list(itertools.product([0, 1], repeat=2**m)), np.float64)
  patterns[:, 0] = 0
  for form, scale in (("size", m), ("correct", 1)):
    phi = patterns @ valuation.contribution_matrix(m, form)
    np.testing.assert_allclose(phi.sum(-1), scale * patterns[:, -1], atol=1e-12)
  # v(S) = |S and {0}| * 2: player 0 gets everything, the others are null players.
  members = valuation.coalitions(m)
  np.testing.assert_allclose(valuation.shapley_values(2.0 * members[:, 0])[1:], 0, atol=1e-12)
  np.testing.assert_allclose(valuation.shapley_values(2.0 * members[:, 0])[0], 2.0)
  # v(S) = |S|: symmetric players, phi = 1 each.
  np.testing.assert_allclose(valuation.shapley_values(members.sum(1).astype(float)), 1.0)


class _TableHead:
  """A fake model whose fuse predicts class 0 (the label) exactly for the coalitions marked in the
  features: every present modality's feature row is (correct bits per coalition) + 1."""

  def fuse(self, features):
    order = valuation.modality_order(features)
    present = [jnp.any(features[m] != 0, axis=-1) for m in order]
    code = sum(p.astype(jnp.int32) << i for i, p in enumerate(present))
    table = sum(jnp.where(p[:, None], features[m], 0.0) for p, m in zip(present, order))
    table = table / sum(p.astype(jnp.float32) for p in present)[:, None] - 1.0
    hit = jnp.take_along_axis(table, code[:, None], axis=-1)[:, 0]
    logits = jnp.stack([hit, 1.0 - hit], -1)
    return ModelOutput(logits=logits, modality_logits={}, features=dict(features))


def test_traced_contributions_match_tables():
  rows2 = np.asarray([_correct_2(*row) for row, _ in TABLE], np.float32)
  feats = {"visual": jnp.asarray(rows2 + 1), "audio": jnp.asarray(rows2 + 1)}  # Order-independent.
  labels = jnp.zeros(len(rows2), jnp.int32)
  out = jax.jit(lambda f, y: valuation.contributions(_TableHead(), f, y))(feats, labels)
  np.testing.assert_array_equal(out["subset_correct"], rows2)
  np.testing.assert_allclose(out["shapley"], [e for _, e in TABLE], atol=1e-6)
  rows3 = np.stack([_correct_3(members) for members, _, _ in THREE]).astype(np.float32)
  feats3 = {k: jnp.asarray(rows3 + 1) for k in ("audio", "visual", "flow")}
  for form, column in (("size", 1), ("correct", 2)):
    out = valuation.contributions(_TableHead(), feats3, jnp.zeros(len(rows3), jnp.int32), form,
                                  order=("audio", "visual", "flow"))
    np.testing.assert_allclose(out["shapley"], [case[column] for case in THREE], atol=1e-6)


def test_value_fn_is_checked():
  with pytest.raises(ValueError, match="value_fn"):
    valuation.make_valuation_fn("accuracy")


def test_one_and_eight_devices_give_identical_values(data_dir):
  """The valuation pass sharded on 1 and 8 devices, and the eval step's own contributions (from
  the forward's features: no second encoder pass), agree exactly per sample."""
  config = tiny_config(data_dir)
  dataset = data.open_dataset(config.dataset, ["validation"])
  source = dataset.sources["validation"]
  exp = setup(config, dataset.num_classes)
  transform = data.make_transform(config.input, train=False)
  fn = valuation.make_valuation_fn("size")
  outs = []
  for devices in (1, 8):
    config.mesh.data = devices
    mesh = sharding.make_mesh(config.mesh)
    state = jax.device_put(exp.state, sharding.replicated(mesh))
    outs.append(predict(jax.jit(make_per_example_fn(exp.graphs, fn, config.input)), state, source, transform,
                        batch_size=16, mesh=mesh))
  one, eight = outs
  assert len(one["index"]) == len(source)
  for key in ("shapley", "subset_correct", "index", "label"):
    np.testing.assert_array_equal(one[key], eight[key])
  assert len(np.unique(one["subset_correct"], axis=0)) > 1  # Not a degenerate constant answer.
  np.testing.assert_array_equal(one["shapley"].sum(-1), 2 * one["subset_correct"][:, -1])

  eval_step, _, report_of = evaluation(config, exp.graphs)
  preds = predict(eval_step, state, source, transform, batch_size=16, mesh=mesh)
  np.testing.assert_array_equal(preds["index"], one["index"])
  np.testing.assert_allclose(np.stack([preds["shapley_audio"], preds["shapley_visual"]], -1),
                             one["shapley"], atol=1e-6)
  fused_ok = np.argmax(preds["logits"], -1) == preds["label"]
  np.testing.assert_array_equal(fused_ok, one["subset_correct"][:, -1] > 0)
  report = report_of(preds)
  assert report["shapley_audio"] == pytest.approx(float(np.mean(one["shapley"][:, 0])))
  assert report["shapley_visual"] == pytest.approx(float(np.mean(one["shapley"][:, 1])))
