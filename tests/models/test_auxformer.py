"""AuxFormer model: the reference's attention mask, fairseq positions, scalar layers, outputs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from avjax.models import auxformer

TINY = dict(inputs="features", audio_dim=6, visual_dim=4, dim=4, heads=2, layers=1,
            aux_hidden=(4, 4), attn_dropout=0.0, relu_dropout=0.0, res_dropout=0.0,
            embed_dropout=0.0, out_dropout=0.0)


def test_attention_mask_is_the_reference_triangle_plus_padding():
  q_mask, k_mask = jnp.ones((1, 3)), jnp.array([[1, 1, 1, 1, 0.]])
  allowed = np.asarray(auxformer.attention_mask(q_mask, k_mask, causal=True))[0, 0]
  # triu(-inf, 1 + |5 - 3|) masks j >= i + 3; key 4 is padding.
  expected = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0]], bool)
  np.testing.assert_array_equal(allowed, expected)
  self_mask = np.asarray(auxformer.attention_mask(q_mask, q_mask, causal=True))[0, 0]
  np.testing.assert_array_equal(self_mask, np.tril(np.ones((3, 3), bool)))
  assert np.asarray(auxformer.attention_mask(q_mask, k_mask, causal=False))[0, 0, 0].tolist() == [
      True, True, True, True, False]


def test_positions_count_valid_frames_from_one():
  emb = np.asarray(auxformer.fairseq_positions(jnp.array([[1, 1, 0.]]), 4))[0]
  freq = [1.0, math.exp(-math.log(10000.0))]  # half = 2: exp(-k log(1e4) / (half - 1)).
  for pos in (1, 2):
    expected = [math.sin(pos * freq[0]), math.sin(pos * freq[1]), math.cos(pos * freq[0]),
                math.cos(pos * freq[1])]
    np.testing.assert_allclose(emb[pos - 1], expected, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(emb[2], 0.0)


def test_scalar_layer_with_alpha_one_is_the_identity():
  layer = auxformer.EncoderLayer(4, 2, attn_dropout=0.0, relu_dropout=0.0, res_dropout=0.0,
                                 scalar=True, rngs=nnx.Rngs(0))
  assert 0.0 <= float(layer.alpha[0]) <= 1.0
  x = jax.random.normal(jax.random.key(1), (2, 3, 4))
  allowed = auxformer.attention_mask(jnp.ones((2, 3)), jnp.ones((2, 3)), True)
  layer.alpha[...] = jnp.ones((1,))  # alpha x + (1 - alpha) f(x) = x.
  np.testing.assert_allclose(layer(x, allowed), x, rtol=1e-6)
  layer.alpha[...] = jnp.full((1,), 0.5)
  assert np.abs(np.asarray(layer(x, allowed) - x)).max() > 1e-3


def test_last_valid_frame():
  x = jnp.arange(12, dtype=jnp.float32).reshape(2, 3, 2)
  out = auxformer.last_valid(x, jnp.array([[1, 1, 0], [0, 0, 0.]]))
  np.testing.assert_array_equal(out, [[2, 3], [6, 7]])


def test_prediction_is_the_mean_of_main_and_auxiliary_logits():
  model = auxformer.AuxFormer(num_outputs=3, rngs=nnx.Rngs(0), **TINY)
  model.eval()
  inputs = {"audio": jax.random.normal(jax.random.key(0), (2, 5, 6)),
            "visual": jax.random.normal(jax.random.key(1), (2, 3, 4)),
            "audio_mask": jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1.]])}
  run = nnx.jit(lambda m, x, mask: m(x, modality_mask=mask))
  out = run(model, inputs, None)
  # Visual features with dim channels skip the Conv1d (the reference's 50-d EMOCA features).
  assert model.visual_frontend.projection is None and model.audio_frontend.projection is not None
  mean = out.joint_logits + out.modality_logits["audio"] + out.modality_logits["visual"]
  np.testing.assert_allclose(out.logits, mean / 3.0, rtol=1e-5, atol=1e-6)
  no_audio = run(model, inputs, jnp.array([[0.0, 1.0]] * 2))
  # The visual auxiliary network never sees audio; the main network does.
  np.testing.assert_allclose(no_audio.modality_logits["visual"], out.modality_logits["visual"],
                             rtol=1e-5, atol=1e-6)
  assert np.abs(np.asarray(no_audio.joint_logits - out.joint_logits)).max() > 1e-5
