"""ResNet-18 encoders: shapes, paddings, init statistics, frame folding, BatchNorm modes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avjax.models.resnet import AudioEncoder, ResNet18, VisualEncoder

TINY = (8, 16, 32, 64)


def _batchnorms(module: nnx.Module) -> list[nnx.BatchNorm]:
  return [m for _, m in nnx.iter_graph(module) if isinstance(m, nnx.BatchNorm)]


def _convs(module: nnx.Module) -> list[nnx.Conv]:
  return [m for _, m in nnx.iter_graph(module) if isinstance(m, nnx.Conv)]


def _abstract_out(make, shape):
  return jax.eval_shape(lambda x: make()(x), jax.ShapeDtypeStruct(shape, jnp.float32))


@pytest.fixture(scope="module")
def mmcosine_model() -> ResNet18:
  # Half the reference widths: big enough for tight statistics, cheaper to initialise on CPU.
  return ResNet18(3, widths=(32, 64, 128, 256), init="mmcosine", rngs=nnx.Rngs(0))


@pytest.mark.parametrize("shape,expected", [
    ((1, 257, 188, 1), (1, 9, 6, 512)),     # CREMA-D spectrogram
    ((1, 129, 626, 1), (1, 5, 20, 512)),    # VGGSound spectrogram
    ((1, 1024, 128, 1), (1, 32, 4, 512)),   # Kinetics-Sounds fbank
    ((2, 224, 224, 3), (2, 7, 7, 512)),     # video frame
])
def test_feature_map_shapes_match_reference(shape, expected):
  out = _abstract_out(lambda: ResNet18(shape[-1], rngs=nnx.Rngs(0)), shape)
  assert out.shape == expected


def test_encoder_pooled_shapes():
  audio = _abstract_out(lambda: AudioEncoder(1, rngs=nnx.Rngs(0)), (3, 257, 188, 1))
  visual = _abstract_out(lambda: VisualEncoder(3, rngs=nnx.Rngs(0)), (3, 2, 224, 224, 3))
  flow = _abstract_out(lambda: VisualEncoder(2, widths=TINY, rngs=nnx.Rngs(0)), (3, 2, 224, 224, 2))
  assert audio.shape == (3, 512) and visual.shape == (3, 512) and flow.shape == (3, 64)


@pytest.mark.parametrize("size", [31, 32, 33, 57])
def test_paddings_follow_pytorch_arithmetic(size):
  out = _abstract_out(lambda: ResNet18(1, widths=TINY, rngs=nnx.Rngs(0)), (1, size, size, 1))
  n = (size + 2 * 3 - 7) // 2 + 1   # stem conv
  n = (n + 2 * 1 - 3) // 2 + 1      # max-pool
  for _ in range(3):                # stride-2 3x3 convs of layers 2-4
    n = (n + 2 * 1 - 3) // 2 + 1
  assert out.shape == (1, n, n, 64)


def test_structure_and_downsample_placement():
  model = ResNet18(3, widths=TINY, rngs=nnx.Rngs(0))
  assert model.conv1.kernel.shape == (7, 7, 3, 8) and model.conv1.bias is None
  assert all(block.down_conv is None for block in model.layer1)
  for layer, (cin, cout) in zip((model.layer2, model.layer3, model.layer4), ((8, 16), (16, 32), (32, 64))):
    assert layer[0].down_conv.kernel.shape == (1, 1, cin, cout)
    assert layer[0].down_conv.strides == (2, 2) and layer[0].conv1.strides == (2, 2)
    assert layer[1].down_conv is None
  assert len(_convs(model)) == 1 + 4 * 4 + 3
  assert all(bn.momentum == 0.9 and bn.epsilon == 1e-5 for bn in _batchnorms(model))


def test_conv_init_is_kaiming_normal_fan_out(mmcosine_model):
  for conv in (mmcosine_model.conv1, mmcosine_model.layer4[1].conv2, mmcosine_model.layer3[0].down_conv):
    k = np.asarray(conv.kernel[...])
    kh, kw, _, cout = k.shape
    expected = np.sqrt(2.0 / (kh * kw * cout))
    assert abs(k.std() / expected - 1) < 0.05
    assert abs(k.mean()) < 0.05 * expected
  big = np.asarray(mmcosine_model.layer4[1].conv2.kernel[...])
  # Not truncated: a 590k-sample normal has values beyond 4 sigma (a truncated normal stops at 2).
  assert np.abs(big).max() > 4 * big.std()


def test_mmcosine_bn_scale_is_normal_around_one(mmcosine_model):
  bns = _batchnorms(mmcosine_model)
  scales = np.concatenate([np.asarray(bn.scale[...]) for bn in bns])
  biases = np.concatenate([np.asarray(bn.bias[...]) for bn in bns])
  assert scales.size == 2400
  assert abs(scales.mean() - 1) < 0.003
  assert 0.018 < scales.std() < 0.022
  np.testing.assert_array_equal(biases, 0)


def test_ogm_ge_bn_init_is_ones_and_zeros():
  for bn in _batchnorms(ResNet18(1, widths=TINY, init="ogm_ge", rngs=nnx.Rngs(0))):
    np.testing.assert_array_equal(bn.scale[...], 1)
    np.testing.assert_array_equal(bn.bias[...], 0)


def test_unknown_init_raises():
  with pytest.raises(ValueError, match="init scheme"):
    ResNet18(1, widths=TINY, init="xavier", rngs=nnx.Rngs(0))


def test_visual_frame_folding_equals_per_frame_average():
  enc = VisualEncoder(3, widths=TINY, rngs=nnx.Rngs(0))
  enc.eval()
  x = jax.random.normal(jax.random.key(1), (2, 3, 32, 32, 3))
  folded = enc(x)
  per_frame = jnp.stack([enc.backbone(x[:, t]).mean(axis=(1, 2)) for t in range(3)], 0).mean(0)
  np.testing.assert_allclose(folded, per_frame, rtol=1e-5, atol=1e-5)


def test_audio_encoder_is_global_average():
  enc = AudioEncoder(1, widths=TINY, rngs=nnx.Rngs(0))
  enc.eval()
  x = jax.random.normal(jax.random.key(2), (3, 33, 24, 1))
  np.testing.assert_allclose(enc(x), enc.feature_map(x).mean(axis=(1, 2)), rtol=1e-6, atol=1e-6)


def test_batchnorm_train_vs_eval():
  model = ResNet18(1, widths=TINY, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(3), (3, 33, 24, 1)) * 3 + 1
  x_other = x.at[1:].set(jax.random.normal(jax.random.key(4), (2, 33, 24, 1)))
  stem = model.conv1(x)

  model.train()
  out = model(x)
  batch_mean = np.asarray(stem.mean(axis=(0, 1, 2)))
  batch_var = np.asarray(stem.var(axis=(0, 1, 2)))  # biased; see docs/deviations.md
  np.testing.assert_allclose(model.bn1.mean[...], 0.1 * batch_mean, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(model.bn1.var[...], 0.9 + 0.1 * batch_var, rtol=1e-4, atol=1e-6)
  # Train mode normalises with the batch statistics: sample 0's output depends on the other samples.
  assert not np.allclose(out[0], model(x_other)[0], atol=1e-3)

  model.eval()
  assert all(bn.use_running_average for bn in _batchnorms(model))
  stats = (np.asarray(model.bn1.mean[...]), np.asarray(model.bn1.var[...]))
  np.testing.assert_allclose(model(x)[0], model(x_other)[0], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(model.bn1.mean[...], stats[0])
  np.testing.assert_array_equal(model.bn1.var[...], stats[1])
  expected = (np.asarray(stem) - stats[0]) / np.sqrt(stats[1] + 1e-5)
  np.testing.assert_allclose(model.bn1(stem), expected, rtol=1e-4, atol=1e-4)
