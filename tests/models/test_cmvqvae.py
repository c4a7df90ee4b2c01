"""CM-VQVAE model: EMA codebook update, Laplace smoothing and perplexity on hand-computed values,
straight-through gradients, decoder shapes at the reference sizes, ablations, modality removal and
the EMA statistics under sharding."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from avjax.models import cmvqvae as cm
from avjax.models import vq
from tests.helpers import output_fields

TINY = dict(num_hiddens=8, num_residual_hiddens=4, num_residual_layers=1, embedding_dim=4,
            num_embeddings=8, fc_hidden=6, latent_size=(4, 4))


def _ema_quantizer() -> vq.VectorQuantizerEMA:
  """K=2 codes of dimension 1: e = [0, 1], m = [0.5, 2], N = 0; decay 0.5, epsilon 0.1."""
  q = vq.VectorQuantizerEMA(2, 1, commitment_cost=0.25, decay=0.5, epsilon=0.1, rngs=nnx.Rngs(0))
  q.codebook[...] = jnp.array([[0.0], [1.0]])
  q.ema_w[...] = jnp.array([[0.5], [2.0]])
  return q


Z = jnp.array([0.1, 0.2, 0.9]).reshape(1, 1, 3, 1)  # -> codes 0, 0, 1; counts [2, 1].


def test_ema_update_with_laplace_smoothing_by_hand():
  q = _ema_quantizer()
  out = q(Z)
  np.testing.assert_array_equal(out.codes, [[[0, 0, 1]]])
  np.testing.assert_allclose(out.quantized.ravel(), [0.0, 0.0, 1.0], atol=1e-7)
  # N = 0.5 * 0 + 0.5 * [2, 1] = [1, 0.5]; n = 1.5; N = (N + 0.1) / (1.5 + 2 * 0.1) * 1.5.
  np.testing.assert_allclose(q.cluster_size[...], [1.1 / 1.7 * 1.5, 0.6 / 1.7 * 1.5], rtol=1e-6)
  # m = 0.5 * [0.5, 2] + 0.5 * [0.1 + 0.2, 0.9] = [0.4, 1.45]; e = m / N.
  np.testing.assert_allclose(q.ema_w[...].ravel(), [0.4, 1.45], rtol=1e-6)
  np.testing.assert_allclose(q.codebook[...].ravel(), [0.4 * 1.7 / 1.65, 1.45 * 1.7 / 0.9],
                             rtol=1e-6)
  # Commitment only: 0.25 * mean([0.1^2, 0.2^2, 0.1^2]) = 0.005.
  np.testing.assert_allclose(out.loss, 0.005, rtol=1e-5)
  # p = [2/3, 1/3]: exp(-(2/3 ln 2/3 + 1/3 ln 1/3)).
  expected = math.exp(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)))
  np.testing.assert_allclose(out.perplexity, expected, rtol=1e-6)
  before = {k: np.asarray(getattr(q, k)[...]) for k in ("codebook", "ema_w", "cluster_size")}
  q.eval()  # Evaluation quantizes with the codebook and leaves the EMA state alone.
  q(Z)
  for k, v in before.items():
    np.testing.assert_array_equal(getattr(q, k)[...], v)


def test_perplexity_and_plain_quantizer_loss_by_hand():
  np.testing.assert_allclose(vq.code_perplexity(jnp.array([5.0, 5.0, 5.0, 5.0])), 4.0, rtol=1e-6)
  np.testing.assert_allclose(vq.code_perplexity(jnp.array([7.0, 0.0, 0.0])), 1.0, rtol=1e-6)
  plain = vq.VectorQuantizer(2, 1, commitment_cost=0.25, rngs=nnx.Rngs(0))
  plain.codebook[...] = jnp.array([[0.0], [1.0]])
  # Codebook + 0.25 * commitment: (1 + 0.25) * 0.02.
  np.testing.assert_allclose(plain(Z).loss, 0.025, rtol=1e-5)


def test_straight_through_gradients_are_the_identity():
  q = _ema_quantizer()
  q.eval()
  graph, state = nnx.split(q)
  c = jnp.array([1.0, -2.0, 3.0]).reshape(Z.shape)

  def objective(z):
    return jnp.sum(nnx.merge(graph, state).__call__(z).quantized * c)

  np.testing.assert_allclose(jax.grad(objective)(Z), c)
  commit = jax.grad(lambda z: nnx.merge(graph, state)(z).loss)(Z)
  # d/dz 0.25 * mean((z - sg(q))^2) = 0.5 * (z - q) / 3.
  np.testing.assert_allclose(commit.ravel(), 0.5 * np.array([0.1, 0.2, -0.1]) / 3, rtol=1e-5)


@pytest.mark.parametrize("fn,expected", [
    ("binarizer", [0, 0, 0, 1, 1]),
    ("ternarizer", [-1, 0, 0, 1, 1]),
    ("attention", [-0.01, 0.001, 0.005, 0.006, 0.02]),
])
def test_mask_thresholds_forward_and_identity_backward(fn, expected):
  m = jnp.array([-0.01, 0.001, 0.005, 0.006, 0.02])
  c = jnp.array([1.0, 2.0, 3.0, 4.0, 5.0])
  np.testing.assert_allclose(vq.threshold_mask(m, fn, 5e-3), expected, rtol=1e-7)
  grad = jax.grad(lambda m: jnp.sum(vq.threshold_mask(m, fn, 5e-3) * c))(m)
  np.testing.assert_array_equal(grad, c)


def test_randomizer_draws_zeros_and_ones_with_identity_backward():
  m = jnp.full((4000,), 0.01)
  out = vq.threshold_mask(m, "randomizer", 5e-3, jax.random.key(0))
  assert set(np.unique(np.asarray(out))) == {0.0, 1.0}
  assert 0.45 < float(out.mean()) < 0.55
  grad = jax.grad(lambda m: jnp.sum(vq.threshold_mask(m, "randomizer", 5e-3,
                                                      jax.random.key(0)) * 2.0))(m)
  np.testing.assert_array_equal(grad, 2.0)


def _abstract(**kwargs):
  model = nnx.eval_shape(lambda: cm.CMVQVAE(num_classes=6, rngs=nnx.Rngs(0), **kwargs))
  graph, state = nnx.split(model)
  return model, lambda inputs: jax.eval_shape(lambda s, x: nnx.merge(graph, s)(x), state, inputs)


def test_decoders_restore_the_input_shapes_at_the_reference_sizes():
  model, forward = _abstract()  # K 512, D 64, 128 hidden, 256x256 mel, 128x128 frames.
  audio = jax.ShapeDtypeStruct((2, 256, 256, 1), jnp.float32)
  out = forward({"audio": audio, "visual": jax.ShapeDtypeStruct((2, 1, 128, 128, 3), jnp.float32)})
  assert output_fields(out)["recon_audio"].shape == (2, 256, 256, 1)
  assert output_fields(out)["recon_visual"].shape == (2, 128, 128, 3)
  assert output_fields(out)["codes_audio"].shape == output_fields(out)["codes_visual"].shape == (2, 32, 32)
  assert out.logits.shape == (2, 6) and output_fields(out)["mask"].shape == (128,)
  assert model.classifier.fc_1.in_features == 2048  # 32 channels x 8 x 8, as the reference.
  _, params, rest = nnx.split(model, nnx.Param, ...)  # The EMA state is model_state, not params.
  assert "audio_vq" not in params and "codebook" in rest["audio_vq"]
  assert "mask" in params["classifier"]


@pytest.mark.parametrize("ablation,present,absent", [
    (1, (), ("vq_loss_audio", "recon_audio", "mask")),
    (2, ("vq_loss_audio", "recon_visual", "perplexity_visual"), ("mask",)),
    (3, ("mask", "mask_sum"), ("vq_loss_audio", "recon_audio")),
])
def test_ablations_keep_what_the_reference_keeps(ablation, present, absent):
  _, forward = _abstract(ablation=ablation, **TINY)
  out = forward({"audio": jax.ShapeDtypeStruct((2, 32, 32, 1), jnp.float32),
                 "visual": jax.ShapeDtypeStruct((2, 1, 16, 16, 3), jnp.float32)})
  assert all(k in output_fields(out) for k in present) and not any(k in output_fields(out) for k in absent)


def test_ablation_4_is_the_resnet_pair_with_an_mlp_head():
  import ml_collections  # pylint: disable=import-outside-toplevel
  from avjax.config import base_config  # pylint: disable=import-outside-toplevel
  config = base_config()
  config.model.cmvqvae = ml_collections.ConfigDict({"ablation": 4, "mode": "audio-only",
                                                    "widths": (4, 8, 8, 8)})
  model = nnx.eval_shape(lambda: cm.cmvqvae(config, 6, {}, nnx.Rngs(0)))
  assert model.fusion.fc_1.in_features == 8  # Audio-only: the audio ResNet's 8 features.
  graph, state = nnx.split(model)
  out = jax.eval_shape(lambda s, x: nnx.merge(graph, s)(x), state,
                       {"audio": jax.ShapeDtypeStruct((2, 64, 64, 1), jnp.float32),
                        "visual": jax.ShapeDtypeStruct((2, 1, 32, 32, 3), jnp.float32)})
  assert out.logits.shape == out.modality_logits["visual"].shape == (2, 6)


def test_uni_modal_passes_leave_batch_statistics_untouched():
  head = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
  run = lambda h, f: h(f["audio"] + f["visual"])
  x = {"audio": jnp.arange(6.0).reshape(2, 3), "visual": jnp.ones((2, 3))}
  head(x["audio"] + x["visual"])
  stats = jax.tree.map(np.asarray, nnx.state(head, nnx.BatchStat))
  uni = cm._uni_modal_logits(head, run, x, "multimodal", 3)
  for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(nnx.state(head, nnx.BatchStat))):
    np.testing.assert_array_equal(a, b)
  fresh = nnx.BatchNorm(3, rngs=nnx.Rngs(0))  # Batch statistics of the audio-only input.
  np.testing.assert_allclose(uni["audio"], fresh(x["audio"]), atol=1e-6)
  only_audio = cm._uni_modal_logits(head, run, x, "audio-only", 3)
  np.testing.assert_array_equal(only_audio["visual"], np.zeros((2, 3)))


def test_removing_a_modality_equals_its_uni_modal_logits():
  rng = np.random.default_rng(0)
  inputs = {"audio": jnp.asarray(rng.normal(size=(2, 32, 32, 1)), jnp.float32),
            "visual": jnp.asarray(rng.normal(size=(2, 1, 16, 16, 3)), jnp.float32)}

  @jax.jit
  def both_and_audio_only(inputs):  # One compile for building the model and both passes.
    # Ablation 3 (mask, no VQ or decoders): the classifier path alone compiles faster.
    model = cm.CMVQVAE(num_classes=3, ablation=3, rngs=nnx.Rngs(params=0, default=0), **TINY)
    model.eval()
    audio_only = jnp.array([[1.0, 0.0]] * 2)  # ('audio', 'visual') order.
    return model(inputs, modality_mask=jnp.ones((2, 2))), model(inputs, modality_mask=audio_only)

  both, audio_only = both_and_audio_only(inputs)
  np.testing.assert_allclose(audio_only.logits, both.modality_logits["audio"], atol=1e-5)
  np.testing.assert_array_equal(audio_only.features["visual"], 0.0)
  assert not np.allclose(audio_only.logits, both.logits)


def test_ema_statistics_are_global_under_sharding():
  assert jax.device_count() == 8
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  z = jax.random.normal(jax.random.key(1), (8, 2, 2, 4))

  def step(state, z):
    q = nnx.merge(graph, state)
    q(z)
    return nnx.state(q)

  q = vq.VectorQuantizerEMA(8, 4, rngs=nnx.Rngs(0))
  graph, state = nnx.split(q)
  single = jax.jit(step)(state, z)
  sharded = jax.jit(step)(state, jax.device_put(z, NamedSharding(mesh, P("data"))))
  for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(sharded)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert not np.allclose(single["cluster_size"][...], 0.0)


def test_up_conv_equals_flax_conv_transpose_in_values_and_init():
  """UpConv, in either form of its product (avjax.ops 'conv_transpose'; the forms' gradients are
  tested in tests/ops/test_conv.py), is nnx.ConvTranspose (k 4, s 2, lax padding 2) and keeps its
  parameters and initial draws."""
  from avjax import ops
  from avjax.models.vq import UpConv, torch_uniform
  up = UpConv(6, 5, rngs=nnx.Rngs(3))
  init = torch_uniform(5 * 16)
  flax_up = nnx.ConvTranspose(6, 5, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
                              kernel_init=init, bias_init=init, rngs=nnx.Rngs(3))
  np.testing.assert_array_equal(up.kernel[...], flax_up.kernel[...])
  np.testing.assert_array_equal(up.bias[...], flax_up.bias[...])
  x = jax.random.normal(jax.random.key(0), (2, 5, 7, 6))
  for form in ops.FORMS["conv_transpose"]:
    with ops.force(conv_transpose=form):
      y = up(x)
    assert y.shape == (2, 10, 14, 5)
    np.testing.assert_allclose(y, flax_up(x), rtol=1e-5, atol=1e-5)