"""ResNet-18 encoders for spectrograms and video frames (torchvision layout, NHWC).

The audio and visual backbones of OGM-GE and MMCosine: a torchvision-style ResNet-18 without the final
pool and fc, followed by global average pooling (over (h, w) for audio, over (T, h, w) for video).
Paddings are explicit and equal to PyTorch's, so feature-map sizes match the reference exactly
(CREMA-D spectrogram (257, 188) -> (9, 6); 224x224 frame -> (7, 7)).

Init schemes (`init=`):
  'ogm_ge':   conv kaiming_normal(fan_out, relu), BN scale 1 / bias 0 (OGM-GE's `weight_init`).
  'mmcosine': the same conv init, BN scale ~ N(1, 0.02), bias 0 (MMCosine never calls `weight_init`).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from avjax.ops import max_pool_3x3_s2

INIT_SCHEMES = ("ogm_ge", "mmcosine")

# PyTorch BatchNorm momentum 0.1 <=> Flax momentum 0.9 (weight of the old running statistic).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

# kaiming_normal_(mode='fan_out', nonlinearity='relu'): N(0, 2 / (kh * kw * out)), not truncated.
conv_kernel_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


def check_init(init: str) -> str:
  """Returns `init` if it names a known init scheme, else raises ValueError."""
  if init not in INIT_SCHEMES:
    raise ValueError(f"Unknown init scheme {init!r}; expected one of {INIT_SCHEMES}.")
  return init


def bn_scale_init(init: str) -> nnx.Initializer:
  """BatchNorm scale (gamma) initializer of an init scheme."""
  check_init(init)
  if init == "ogm_ge":
    return nnx.initializers.ones

  def normal_around_one(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)

  return normal_around_one


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int, pad: int, *, rngs: nnx.Rngs) -> nnx.Conv:
  return nnx.Conv(
      in_ch, out_ch, (kernel, kernel), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
      use_bias=False, kernel_init=conv_kernel_init, rngs=rngs)


def _bn(channels: int, init: str, *, rngs: nnx.Rngs) -> nnx.BatchNorm:
  return nnx.BatchNorm(
      channels, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, scale_init=bn_scale_init(init),
      bias_init=nnx.initializers.zeros, rngs=rngs)


class BasicBlock(nnx.Module):
  """Two 3x3 conv-BN layers with an identity or 1x1 conv-BN shortcut. (N,H,W,Cin) -> (N,h,w,Cout)."""

  def __init__(self, in_ch: int, out_ch: int, stride: int, *, init: str, rngs: nnx.Rngs):
    self.conv1 = _conv(in_ch, out_ch, 3, stride, 1, rngs=rngs)
    self.bn1 = _bn(out_ch, init, rngs=rngs)
    self.conv2 = _conv(out_ch, out_ch, 3, 1, 1, rngs=rngs)
    self.bn2 = _bn(out_ch, init, rngs=rngs)
    if stride != 1 or in_ch != out_ch:
      self.down_conv = _conv(in_ch, out_ch, 1, stride, 0, rngs=rngs)
      self.down_bn = _bn(out_ch, init, rngs=rngs)
    else:
      self.down_conv = None
      self.down_bn = None

  def __call__(self, x: jax.Array) -> jax.Array:
    shortcut = x
    if self.down_conv is not None:
      shortcut = self.down_bn(self.down_conv(x))
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return nnx.relu(y + shortcut)


class ResNet18(nnx.Module):
  """torchvision ResNet-18 trunk (no final pool, no fc). (N,H,W,C) -> (N,h,w,widths[-1]).

  Attributes: `conv1`, `bn1` (stem) and `layer1` .. `layer4` (`blocks[i]` `BasicBlock`s each: two
  for ResNet-18, (3, 4, 6, 3) for ResNet-34; the first block of layers 2-4 has stride 2 and a 1x1
  conv-BN downsample shortcut). `remat`: recompute each block's
  activations in the backward pass instead of keeping them (less memory, ~1/3 more compute).
  """

  def __init__(
      self,
      in_channels: int,
      *,
      widths: Sequence[int] = (64, 128, 256, 512),
      blocks: Sequence[int] = (2, 2, 2, 2),
      init: str = "ogm_ge",
      remat: bool = False,
      rngs: nnx.Rngs,
  ):
    check_init(init)
    self.remat = remat
    if len(widths) != 4 or len(blocks) != 4:
      raise ValueError(f"ResNet18 needs 4 stage widths and block counts, got {tuple(widths)}, "
                       f"{tuple(blocks)}.")
    self.widths = tuple(int(w) for w in widths)
    self.conv1 = _conv(in_channels, self.widths[0], 7, 2, 3, rngs=rngs)
    self.bn1 = _bn(self.widths[0], init, rngs=rngs)
    in_ch = self.widths[0]
    stages = []
    for i, width in enumerate(self.widths):
      stride = 1 if i == 0 else 2
      stages.append(nnx.List([
          BasicBlock(in_ch if j == 0 else width, width, stride if j == 0 else 1, init=init,
                     rngs=rngs)
          for j in range(int(blocks[i]))]))
      in_ch = width
    self.layer1, self.layer2, self.layer3, self.layer4 = stages

  @property
  def out_features(self) -> int:
    return self.widths[-1]

  def stem(self, x: jax.Array) -> jax.Array:
    """conv1, BN, ReLU, 3x3 max-pool: (N,H,W,C) -> (N,h,w,widths[0])."""
    return max_pool_3x3_s2(nnx.relu(self.bn1(self.conv1(x))))

  def stage(self, index: int, x: jax.Array) -> jax.Array:
    """`layer<index>` (1-based, both BasicBlocks): lets a model act between stages (MMTM)."""
    run = nnx.remat(_run_block) if self.remat else _run_block
    for block in (self.layer1, self.layer2, self.layer3, self.layer4)[index - 1]:
      x = run(block, x)
    return x

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.stem(x)
    for index in range(1, 5):
      x = self.stage(index, x)
    return x


def _run_block(block: nnx.Module, x: jax.Array) -> jax.Array:
  return block(x)


class AudioEncoder(nnx.Module):
  """Spectrogram encoder: ResNet-18 then global average pooling. (B,F,T,C) -> (B,D).

  The spectrogram is an image with height F (frequency) and width T (time), as in the reference.
  """

  def __init__(
      self,
      in_channels: int = 1,
      *,
      widths: Sequence[int] = (64, 128, 256, 512),
      init: str = "ogm_ge",
      remat: bool = False,
      rngs: nnx.Rngs,
  ):
    self.backbone = ResNet18(in_channels, widths=widths, init=init, remat=remat, rngs=rngs)

  @property
  def out_features(self) -> int:
    return self.backbone.out_features

  def feature_map(self, x: jax.Array) -> jax.Array:
    """(B,F,T,C) -> (B,h,w,D)."""
    return self.backbone(x)

  def __call__(self, x: jax.Array) -> jax.Array:
    return jnp.mean(self.feature_map(x), axis=(1, 2))


class VisualEncoder(nnx.Module):
  """Frame encoder: frames folded into the batch, ResNet-18, mean over (T,h,w). (B,T,H,W,C) -> (B,D).

  `in_channels` is 3 for RGB frames, 2 for optical flow; `blocks` (3, 4, 6, 3) makes it a ResNet-34.
  """

  def __init__(
      self,
      in_channels: int = 3,
      *,
      widths: Sequence[int] = (64, 128, 256, 512),
      blocks: Sequence[int] = (2, 2, 2, 2),
      init: str = "ogm_ge",
      remat: bool = False,
      rngs: nnx.Rngs,
  ):
    self.backbone = ResNet18(in_channels, widths=widths, blocks=blocks, init=init, remat=remat,
                             rngs=rngs)

  @property
  def out_features(self) -> int:
    return self.backbone.out_features

  def feature_map(self, x: jax.Array) -> jax.Array:
    """(B,T,H,W,C) -> (B,T,h,w,D)."""
    b, t = x.shape[:2]
    y = self.backbone(x.reshape((b * t,) + x.shape[2:]))
    return y.reshape((b, t) + y.shape[1:])

  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim != 5:
      raise ValueError(f"VisualEncoder expects (B, T, H, W, C) input, got shape {x.shape}.")
    return jnp.mean(self.feature_map(x), axis=(1, 2, 3))
