"""The device half of RandomResizedCrop + flip (`input.crop_on_device`).

The host draws each training frame's crop box and flip bit (torchvision's RandomResizedCrop
sampling, avjax.data.transforms.random_resized_crop_box) and ships the whole decoded frame with a
(T, 5) float32 'visual_crop' row per example: (top, left, height, width, flip). The jitted step
resamples here, before normalisation: the same antialiased bilinear (triangle) filter as
torchvision's resized_crop on PIL images (crop, then PIL's BILINEAR resize: the filter widens by
the scale when downsampling; its window is clipped to the crop and renormalised), evaluated in float32 instead of PIL's 8-bit fixed
point, so results differ from PIL's by at most about one grey level
(tests/data/test_device_augment.py).

The separable resample is two matrix products per frame with dense (out x in) weight matrices
(full float32 precision): ~0.2 GFLOP per 256x341 -> 224x224 frame, little for an accelerator,
but several times PIL's cost on a CPU backend (use the host path there).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _weights(in_size: int, out_size: int, start: jax.Array, length: jax.Array) -> jax.Array:
  """(out_size, in_size) float32 weights of the resample of the input span [start, start + length)
  to `out_size` pixels: PIL's precompute_coeffs for its bilinear filter (a triangle of radius
  max(1, scale) around each output pixel's centre, over the span's pixels, normalised)."""
  scale = length / out_size
  support = jnp.maximum(scale, 1.0)
  centre = start + (jnp.arange(out_size, dtype=jnp.float32) + 0.5) * scale
  pixel = jnp.arange(in_size, dtype=jnp.float32)[None, :]
  offset = pixel + 0.5 - centre[:, None]
  inside = (pixel >= start) & (pixel < start + length)  # The crop's pixels only.
  weight = jnp.where(inside, jnp.maximum(0.0, 1.0 - jnp.abs(offset / support)), 0.0)
  return weight / jnp.sum(weight, axis=1, keepdims=True)


def _crop_one(frame: jax.Array, crop: jax.Array, size: tuple[int, int]) -> jax.Array:
  """(H, W, C) uint8 frame, (5,) crop -> (size[0], size[1], C) float32 in [0, 255]."""
  h, w = frame.shape[0], frame.shape[1]
  rows = _weights(h, size[0], crop[0], crop[2])
  cols = _weights(w, size[1], crop[1], crop[3])
  x = frame.astype(jnp.float32)
  dot = lambda spec, a, b: jnp.einsum(spec, a, b, precision=jax.lax.Precision.HIGHEST)
  if size[0] * w * (h + size[1]) <= size[1] * h * (w + size[0]):  # The cheaper order.
    x = dot("tw,sw...->st...", cols, dot("sh,h...->s...", rows, x))
  else:
    x = dot("sh,h...->s...", rows, dot("tw,hw...->ht...", cols, x))
  return jnp.where(crop[4] > 0.5, x[:, ::-1], x)


def resized_crops(frames: jax.Array, crops: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Applies host-drawn RandomResizedCrop boxes and flips.

  Args:
    frames: (..., H, W, C) uint8 whole frames.
    crops: (..., 5) float32 (top, left, height, width, flip) per frame, in input pixels.
    size: (height, width) of the output.
  Returns:
    (..., size[0], size[1], C) float32 pixel values (0..255, not normalised).
  """
  lead = frames.shape[:-3]
  flat = frames.reshape((-1,) + frames.shape[-3:])
  out = jax.vmap(lambda f, c: _crop_one(f, c, tuple(size)))(flat, crops.reshape(-1, 5))
  return out.reshape(lead + out.shape[1:])
