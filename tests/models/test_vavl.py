"""VAVL model: feature and raw front ends, heads, reconstruction targets, modality removal."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from avjax.config import base_config
from avjax.models import build_model
from avjax.models.vavl import VAVL
from avjax.registry import ConfigError

TINY = dict(proj_dim=6, dim=8, heads=2, audio_blocks=1, visual_blocks=1, shared_blocks=1,
            kernel_size=3, head_hidden=(8, 4), stem_channels=4, dropout=0.0, head_dropout=0.0)
apply = nnx.jit(lambda model, inputs, mask: model(inputs, modality_mask=mask))
unimodal = nnx.jit(lambda model, inputs, modality: model.unimodal(inputs, modality),
                   static_argnums=2)
both_branches = nnx.jit(lambda model, inputs: (model.unimodal(inputs, "visual"),
                                               model.unimodal(inputs, "audio")))


@pytest.fixture(scope="module")
def features_model():
  model = VAVL(num_outputs=3, inputs="features", audio_dim=12, visual_dim=10, rngs=nnx.Rngs(0),
               **TINY)
  model.eval()
  return model


def _feature_inputs(b=3):
  k1, k2 = jax.random.split(jax.random.key(5))
  return {"audio": jax.random.normal(k1, (b, 7, 12)), "visual": jax.random.normal(k2, (b, 5, 10)),
          "audio_mask": jnp.ones((b, 7)).at[0, 4:].set(0.0), "visual_mask": jnp.ones((b, 5))}


def test_uni_modal_logits_come_from_the_modality_heads(features_model):
  inputs = _feature_inputs()
  out = apply(features_model, inputs, None)
  assert out.logits.shape == (3, 3) and out.features["audio"].shape == (3, 8)
  for m, head in (("audio", features_model.head_audio), ("visual", features_model.head_visual)):
    np.testing.assert_allclose(out.modality_logits[m], head(out.features[m]), rtol=1e-5,
                               atol=1e-6)
    assert np.abs(np.asarray(out.modality_logits[m] - out.logits)).max() > 1e-4
  fused = features_model.fusion(jnp.concatenate([out.features["audio"], out.features["visual"]],
                                                -1))
  np.testing.assert_allclose(out.logits, fused, rtol=1e-5, atol=1e-6)


def test_modality_mask_removes_a_modality_before_the_heads(features_model):
  inputs = _feature_inputs()
  full = apply(features_model, inputs, jnp.ones((3, 2)))
  no_visual = apply(features_model, inputs, jnp.array([[1.0, 0.0]] * 3))
  np.testing.assert_array_equal(no_visual.features["visual"], 0.0)
  np.testing.assert_allclose(no_visual.features["audio"], full.features["audio"], rtol=1e-6)
  assert np.abs(np.asarray(no_visual.logits - full.logits)).max() > 1e-5


def test_reconstruction_target_is_the_masked_time_mean(features_model):
  inputs = _feature_inputs()
  out = unimodal(features_model, inputs, "audio")
  assert out["recon"].shape == (3, 12)
  expected = np.asarray(inputs["audio"][0, :4]).mean(0)  # Example 0 has 4 valid frames.
  np.testing.assert_allclose(out["target"][0], expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["target"][1], np.asarray(inputs["audio"][1]).mean(0), rtol=1e-5)


def test_raw_front_ends():
  model = VAVL(num_outputs=4, inputs="raw", audio_dim=16, visual_grid=2, rngs=nnx.Rngs(1), **TINY)
  model.eval()
  k1, k2 = jax.random.split(jax.random.key(0))
  inputs = {"audio": jax.random.normal(k1, (2, 16, 20, 1)),
            "visual": jax.random.normal(k2, (2, 3, 8, 8, 3))}
  out, audio = both_branches(model, inputs)
  assert out["logits"].shape == (2, 4) and out["recon"].shape == (2, 2 * 2 * 3)
  standardise = lambda v: (v - v.mean(-1, keepdims=True)) / (v.std(-1, keepdims=True) + 1e-5)
  frames = np.asarray(inputs["visual"])  # (B, T, 8, 8, 3) pooled to 2x2 cells, then time-mean.
  cells = frames.reshape(2, 3, 2, 4, 2, 4, 3).mean(axis=(3, 5)).reshape(2, 3, 12).mean(1)
  np.testing.assert_allclose(out["target"], standardise(cells), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(audio["target"], standardise(np.asarray(inputs["audio"])[..., 0]
                                                          .mean(-1)), rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="inputs='raw'"):
    model.audio_encoder({"audio": jnp.ones((2, 20, 16))})


def test_factory_reads_the_model_section():
  c = base_config()
  c.model.name = "vavl"
  c.model.vavl = ml_collections.ConfigDict(dict(inputs="features", audio_dim=12, visual_dim=10,
                                                **TINY))
  model = build_model(c, 5)
  assert model.fusion.out.out_features == 5 and model.num_outputs == 5
  c.model.vavl.no_such_key = 1
  with pytest.raises(ConfigError, match="no_such_key"):
    build_model(c, 5)
