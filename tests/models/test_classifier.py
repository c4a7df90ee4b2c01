"""AVClassifier: outputs, modality masking, fusion selection, train / eval mode."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avjax.models.classifier import AVClassifier
from avjax.models.outputs import MODALITIES, ModelOutput
from avjax.registry import ConfigError
from tests.helpers import output_fields

TINY = (8, 16, 32, 64)
B, C = 3, 4


def _inputs(seed: int = 0, batch: int = B) -> dict[str, jax.Array]:
  ka, kv = jax.random.split(jax.random.key(seed))
  return {"audio": jax.random.normal(ka, (batch, 33, 24, 1)),
          "visual": jax.random.normal(kv, (batch, 2, 32, 32, 3))}


@pytest.fixture(scope="module")
def model() -> AVClassifier:
  return AVClassifier(num_classes=C, widths=TINY, rngs=nnx.Rngs(0))


def test_output_structure(model):
  model.eval()
  out = model(_inputs())
  assert isinstance(out, ModelOutput)
  assert out.logits.shape == (B, C)
  assert set(out.modality_logits) == set(MODALITIES) == set(out.features)
  assert all(out.modality_logits[m].shape == (B, C) and out.features[m].shape == (B, 64) for m in MODALITIES)
  assert set(output_fields(out)) == {"head_inputs_audio", "head_inputs_visual"}
  feats = model.encode(_inputs())
  for m in MODALITIES:
    np.testing.assert_allclose(out.features[m], feats[m], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(output_fields(out)[f"head_inputs_{m}"], feats[m], rtol=1e-5, atol=1e-6)  # concat
  np.testing.assert_allclose(out.modality_logits["audio"] + out.modality_logits["visual"], out.logits,
                             rtol=1e-5, atol=1e-5)


def test_modality_mask_zeroes_the_right_features(model):
  model.eval()
  x = _inputs(1)
  mask = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
  full = model(x)
  masked = model(x, mask)
  np.testing.assert_array_equal(masked.features["audio"][1], 0)
  np.testing.assert_array_equal(masked.features["visual"][0], 0)
  np.testing.assert_allclose(np.asarray(masked.features["audio"])[[0, 2]],
                             np.asarray(full.features["audio"])[[0, 2]], rtol=1e-6)
  np.testing.assert_allclose(masked.features["visual"][1:], full.features["visual"][1:], rtol=1e-6)
  # Masking happens before fusion: the fused logits are the fusion of the masked features.
  np.testing.assert_allclose(masked.logits, model.fuse(masked.features).logits, rtol=1e-6)
  # Concat: with audio removed, the audio logits are just b/2.
  half_bias = np.asarray(model.fusion.fc_out.bias[...]) / 2
  np.testing.assert_allclose(masked.modality_logits["audio"][1], half_bias, atol=1e-6)
  np.testing.assert_allclose(model(x, jnp.ones((B, 2))).logits, full.logits, rtol=1e-6)
  with pytest.raises(ValueError, match="modality_mask"):
    model(x, jnp.ones((B,)))


def test_every_fusion_through_the_classifier(model):
  feats = {m: jax.random.normal(jax.random.key(i), (B, 64)) for i, m in enumerate(MODALITIES)}
  for name, kwargs in [("sum", {}), ("film", {"form": "ogm_ge", "condition": "visual"}),
                       ("film", {"form": "mmcosine", "cosine_scale": 50.0}),
                       ("gated", {}), ("gated", {"form": "mmcosine"}), ("concat", {"cosine_scale": 10.0})]:
    m = AVClassifier(num_classes=C, fusion=name, fusion_kwargs=kwargs, widths=TINY, init="mmcosine",
                     rngs=nnx.Rngs(1))
    out = m.fuse(feats)
    assert out.logits.shape == (B, C)
    assert all(out.modality_logits[k].shape == (B, C) for k in MODALITIES)
    assert all(np.isfinite(np.asarray(output_fields(out)[f"head_inputs_{k}"])).all() for k in MODALITIES)
  with pytest.raises(ConfigError, match="Known fusions"):
    AVClassifier(num_classes=C, fusion="attention", widths=TINY, rngs=nnx.Rngs(0))


def test_train_and_eval_modes(model):
  x = _inputs(2)
  x_other = {k: v.at[1:].set(_inputs(5)[k][1:]) for k, v in x.items()}
  model.train()
  bns = [m for _, m in nnx.iter_graph(model) if isinstance(m, nnx.BatchNorm)]
  assert len(bns) == 40 and not any(bn.use_running_average for bn in bns)
  before = np.asarray(model.audio_encoder.backbone.bn1.mean[...])
  train_out = model(x).logits
  assert not np.allclose(model.audio_encoder.backbone.bn1.mean[...], before)
  assert not np.allclose(train_out[0], model(x_other).logits[0], atol=1e-4)  # batch statistics

  model.eval()
  assert all(bn.use_running_average for bn in bns)
  stats = np.asarray(model.audio_encoder.backbone.bn1.mean[...])
  np.testing.assert_allclose(model(x).logits[0], model(x_other).logits[0], rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(model.audio_encoder.backbone.bn1.mean[...], stats)


def test_jit_forward_updates_batch_stats(model):
  model.train()
  forward = nnx.jit(lambda m, x, mask: m(x, mask))
  before = np.asarray(model.visual_encoder.backbone.layer4[0].bn2.mean[...])
  out = forward(model, _inputs(3), jnp.ones((B, 2)))
  assert isinstance(out, ModelOutput) and out.logits.shape == (B, C)
  assert not np.allclose(model.visual_encoder.backbone.layer4[0].bn2.mean[...], before)
  model.eval()
  np.testing.assert_allclose(forward(model, _inputs(3), None).logits, model(_inputs(3)).logits,
                             rtol=1e-4, atol=1e-5)


def test_separate_modality_heads_score_each_modality_alone():
  model = AVClassifier(num_classes=3, widths=(4, 8, 8, 8), modality_heads="separate",
                       rngs=nnx.Rngs(0))
  assert model.param_groups()["head/audio"] == ("audio_head",)
  features = {"audio": jnp.ones((2, 8)), "visual": jnp.zeros((2, 8))}
  out = model.fuse(features)
  expected_audio = features["audio"] @ model.audio_head.kernel.value + model.audio_head.bias.value
  np.testing.assert_allclose(out.modality_logits["audio"], expected_audio, rtol=1e-6)
  # Visual features of zero leave only the visual head's bias; the fused logits are the fusion's.
  np.testing.assert_allclose(out.modality_logits["visual"],
                             jnp.broadcast_to(model.visual_head.bias.value, (2, 3)), rtol=1e-6)
  np.testing.assert_allclose(out.logits, model.fusion(features).logits, rtol=1e-6)
  with pytest.raises(ValueError, match="modality_heads"):
    AVClassifier(num_classes=3, widths=(4, 8, 8, 8), modality_heads="shared", rngs=nnx.Rngs(0))
