"""input.crop_on_device: host-drawn RandomResizedCrop / flip applied in the jitted step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avjax.config import base_config
from avjax.data import device_augment
from avjax.data.transforms import ExampleTransform
from avjax.steps import normalize_inputs


def _frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
  """Smooth patterns plus noise: resampling differences show, unlike on flat images."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:h, 0:w]
  out = [np.stack([128 + 100 * np.sin(xx / 5.0 + c + t) * np.cos(yy / 7.0) for c in range(3)], -1)
         + rng.normal(0, 20, (h, w, 3)) for t in range(n)]
  return np.clip(out, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("h,w,size,scale", [(48, 64, 40, (0.08, 1.0)),  # Mostly upsampling.
                                            (96, 128, 20, (0.08, 1.0)),  # Antialiased downsampling.
                                            (32, 32, 32, (0.5, 1.0))])
def test_device_crops_match_the_host_path(h, w, size, scale):
  record = {"audio": np.ones((4, 6), np.float32), "frames": _frames(4, h, w), "label": 1}
  host = ExampleTransform(train=True, num_frames=3, image_size=size, crop_scale=scale)
  device = ExampleTransform(train=True, num_frames=3, image_size=size, crop_scale=scale,
                            crop_on_device=True)
  crop = jax.jit(device_augment.resized_crops, static_argnums=2)
  flips = 0
  for seed in range(8):
    want = host(record, np.random.default_rng(seed))
    got = device(record, np.random.default_rng(seed))
    assert got["visual"].shape == (3, h, w, 3) and got["visual"].dtype == np.uint8
    assert got["visual_crop"].shape == (3, 5) and got["visual_crop"].dtype == np.float32
    flips += int(got["visual_crop"][:, 4].sum())
    out = np.asarray(crop(got["visual"], got["visual_crop"], (size, size)))
    # PIL resamples in 8-bit fixed point (rounding after each pass); the device in float32.
    diff = np.abs(out - want["visual"].astype(np.float32))
    assert diff.max() <= 1.01 and diff.mean() < 0.4
    for key in ("audio", "label", "modality_mask"):
      np.testing.assert_array_equal(got[key], want[key])
  assert 0 < flips < 24


def test_normalize_inputs_crops_then_normalises_and_drops_the_crop_rows():
  icfg = base_config().input
  icfg.image_size = 8
  frames = _frames(2, 12, 16)[None]  # (B=1, T=2, 12, 16, 3).
  crops = np.array([[[0, 0, 12, 16, 0], [2, 3, 6, 8, 1]]], np.float32)
  batch = {"visual": jnp.asarray(frames), "visual_crop": jnp.asarray(crops),
           "label": jnp.zeros((1,), jnp.int32)}
  out = jax.jit(lambda b: normalize_inputs(b, icfg))(batch)
  assert set(out) == {"visual", "label"} and out["visual"].shape == (1, 2, 8, 8, 3)
  pixels = np.asarray(device_augment.resized_crops(jnp.asarray(frames), jnp.asarray(crops), (8, 8)))
  mean, std = np.asarray(icfg.mean) * 255.0, np.asarray(icfg.std) * 255.0
  np.testing.assert_allclose(np.asarray(out["visual"]), (pixels - mean) / std, rtol=1e-5,
                             atol=1e-5)
  # Row 2 is flipped: the same crop unflipped is its mirror image.
  unflipped = np.asarray(device_augment.resized_crops(
      jnp.asarray(frames[:, 1:]), jnp.asarray(crops[:, 1:] * [1, 1, 1, 1, 0]), (8, 8)))
  np.testing.assert_allclose(pixels[:, 1], unflipped[:, 0, :, ::-1], atol=1e-4)


def test_full_frame_box_without_resize_is_the_identity():
  frames = _frames(1, 10, 14)
  crops = np.array([[0, 0, 10, 14, 0]], np.float32)
  out = device_augment.resized_crops(jnp.asarray(frames), jnp.asarray(crops), (10, 14))
  np.testing.assert_allclose(np.asarray(out), frames.astype(np.float32), atol=1e-3)


def test_evaluation_and_no_option_keep_the_host_path():
  record = {"audio": np.ones((4, 6), np.float32), "frames": _frames(2, 12, 16), "label": 0}
  for t in (ExampleTransform(train=False, num_frames=1, image_size=8, crop_on_device=True),
            ExampleTransform(train=True, num_frames=1, image_size=8)):
    out = t(record, np.random.default_rng(0))
    assert "visual_crop" not in out and out["visual"].shape == (1, 8, 8, 3)


def test_trainer_runs_with_crops_on_the_device(data_dir, tmp_path):
  """A tiny run end to end (sharded batches with 'visual_crop', eval on the host path)."""
  from avjax.train import train_and_evaluate
  from tests.helpers import tiny_config
  config = tiny_config(data_dir, **{"mesh.data": 2})
  config.input.crop_on_device = True
  config.train.num_epochs = 1
  from avjax.data import device_augment
  calls = []
  resized = device_augment.resized_crops

  def counting(*args, **kwargs):
    calls.append(args[0].shape)
    return resized(*args, **kwargs)

  device_augment.resized_crops = counting
  try:
    result = train_and_evaluate(config, str(tmp_path))
  finally:
    device_augment.resized_crops = resized
  assert calls, "the train step never resampled crops on the device"
  assert 0.0 <= result["accuracy"] <= 1.0 and np.isfinite(result["loss"])


@pytest.mark.parametrize("on_device, image_size, fix", [
    (True, 8, "crop_on_device=False"), (False, 0, "image_size")])
def test_frames_of_different_sizes_in_a_batch_name_the_fix(on_device, image_size, fix):
  t = ExampleTransform(train=True, num_frames=1, image_size=image_size, crop_on_device=on_device,
                       random_resized_crop=False)
  records = [{"audio": np.zeros((4, 6), np.float32), "frames": np.zeros((1, h, 12, 3), np.uint8),
              "label": 0} for h in (10, 14)]
  with pytest.raises(ValueError, match=fix):
    t.batch(records, [np.random.default_rng(i) for i in range(2)])
