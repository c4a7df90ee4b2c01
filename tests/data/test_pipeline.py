"""Input pipeline: transforms, deterministic epoch plans, exact resumption, eval padding."""

import io

import numpy as np
import pytest
from PIL import Image

from avjax.config import base_config
from avjax.data import EpochPlan, eval_batches, make_transform, shuffled_plan, train_batches
from avjax.data.pipeline import _epoch_seed
from avjax.registry import ConfigError
from avjax.steps import normalize_inputs
from avjax.data.transforms import ExampleTransform, random_resized_crop, resize


def _source(n=10, frames=3, size=12):
  rng = np.random.default_rng(0)
  return [{"audio": rng.normal(size=(8, 6)).astype(np.float32),
           "frames": rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8),
           "label": i % 3, "id": f"clip{i}".encode()} for i in range(n)]


def test_eval_transform_shapes_and_device_normalisation():
  record = {"audio": np.ones((8, 6), np.float32),
            "frames": np.full((3, 12, 12, 3), 255, np.uint8), "label": 2}
  out = ExampleTransform(train=False, num_frames=1, image_size=6)(record)
  assert out["audio"].shape == (8, 6, 1)
  assert out["visual"].shape == (1, 6, 6, 3) and out["visual"].dtype == np.uint8
  assert out["label"] == 2 and out["valid"] == 1.0
  np.testing.assert_array_equal(out["modality_mask"], [1.0, 1.0])
  # The steps normalise on the device; already-float frames pass unchanged.
  icfg = base_config().input
  normalised = normalize_inputs({"visual": out["visual"][None]}, icfg)["visual"]
  expected = (1.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
  np.testing.assert_allclose(np.asarray(normalised)[0, 0, 0, 0], expected, rtol=1e-6)
  assert normalize_inputs({"visual": normalised}, icfg)["visual"] is normalised


def test_encoded_frames_decode_only_the_sampled_ones():
  frames = np.random.default_rng(1).integers(0, 256, (4, 12, 16, 3), dtype=np.uint8)
  encoded = np.empty(4, object)
  for i, frame in enumerate(frames):
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")  # Lossless: decoded pixels are exact.
    encoded[i] = buf.getvalue()
  record = {"audio": np.ones((8, 6), np.float32), "label": 0}
  t = ExampleTransform(train=False, num_frames=2)
  from_bytes = t({**record, "frames": encoded})
  from_pixels = t({**record, "frames": frames})
  np.testing.assert_array_equal(from_bytes["visual"], from_pixels["visual"])
  assert from_bytes["visual"].shape == (2, 12, 16, 3)


def test_train_transform_needs_rng_and_is_deterministic_given_it():
  record = _source(1)[0]
  t = ExampleTransform(train=True, num_frames=2, image_size=8, spec_augment=True)
  with pytest.raises(ValueError, match="random generator"):
    t(record)
  a = t(record, np.random.default_rng(5))
  b = t(record, np.random.default_rng(5))
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  assert a["visual"].shape == (2, 8, 8, 3)


def test_random_resized_crop_full_scale_is_a_resize_of_the_whole_frame():
  frame = np.random.default_rng(0).integers(0, 256, (10, 10, 3), dtype=np.uint8)
  # Scale (1, 1) with ratio (1, 1) can only pick the whole 10x10 frame.
  out = random_resized_crop(frame, (5, 5), (1.0, 1.0), np.random.default_rng(0), ratio=(1, 1))
  np.testing.assert_array_equal(out, resize(frame, (5, 5)))


def test_spec_augment_masks_bands_within_width():
  t = ExampleTransform(train=True, spec_augment=True, freq_masks=1, freq_mask_width=3,
                       time_masks=1, time_mask_width=2)
  spec = np.ones((20, 30), np.float32)
  for seed in range(20):
    out = t._spec_augment(spec, np.random.default_rng(seed))
    zero_rows = np.where((out == 0).all(axis=1))[0]
    zero_cols = np.where((out == 0).all(axis=0))[0]
    assert len(zero_rows) <= 3 and len(zero_cols) <= 2
    if len(zero_rows):
      assert zero_rows.max() - zero_rows.min() == len(zero_rows) - 1  # One contiguous band.


def test_modality_dropout_never_drops_both():
  t = ExampleTransform(train=True, modality_dropout=0.9)
  rng = np.random.default_rng(0)
  masks = np.stack([t._modality_mask(rng) for _ in range(500)])
  assert masks.sum(1).min() >= 1
  assert (masks == 0).any()


def test_plan_mask_restricts_modalities():
  source = _source(4)
  plan = EpochPlan(np.arange(4), modality_masks=np.array([[1, 0], [0, 1], [1, 1], [1, 0]],
                                                         np.float32))
  t = ExampleTransform(train=True, num_frames=1)
  batch = next(train_batches(source, plan, t, seed=0, epoch=0, global_batch_size=4))
  np.testing.assert_array_equal(batch["modality_mask"], plan.modality_masks)
  np.testing.assert_array_equal(batch["index"], np.arange(4))


def test_plans_are_deterministic_per_epoch():
  a, b = shuffled_plan(50, 0, 3), shuffled_plan(50, 0, 3)
  np.testing.assert_array_equal(a.indices, b.indices)
  assert sorted(a.indices) == list(range(50))
  assert not np.array_equal(a.indices, shuffled_plan(50, 0, 4).indices)
  assert not np.array_equal(a.indices, shuffled_plan(50, 1, 3).indices)


def test_resuming_mid_epoch_replays_the_same_batches():
  source = _source(10)
  t = ExampleTransform(train=True, num_frames=2, image_size=8)
  plan = shuffled_plan(10, 0, 1)
  full = list(train_batches(source, plan, t, seed=0, epoch=1, global_batch_size=3))
  assert len(full) == 3  # The remainder (1 example) is dropped.
  tail = list(train_batches(source, plan, t, seed=0, epoch=1, global_batch_size=3, start_step=1))
  assert len(tail) == 2
  for x, y in zip(full[1:], tail):
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])
  other_epoch = next(train_batches(source, plan, t, seed=0, epoch=2, global_batch_size=3))
  assert not np.array_equal(other_epoch["visual"], full[0]["visual"])


def test_eval_batches_pad_to_full_batches():
  source = _source(10)
  batches = list(eval_batches(source, ExampleTransform(train=False), global_batch_size=4))
  assert len(batches) == 3
  valid = np.concatenate([b["valid"] for b in batches])
  index = np.concatenate([b["index"] for b in batches])
  assert valid.sum() == 10 and valid[-2:].sum() == 0
  np.testing.assert_array_equal(index[:10], np.arange(10))


def test_augmentation_does_not_depend_on_the_host_count(monkeypatch):
  import jax
  source = _source(8)
  t = ExampleTransform(train=True, num_frames=2, image_size=8)
  plan = shuffled_plan(8, 0, 0)
  single = next(train_batches(source, plan, t, seed=0, epoch=0, global_batch_size=8))
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  hosts = []
  for host in range(2):
    monkeypatch.setattr(jax, "process_index", lambda host=host: host)
    hosts.append(next(train_batches(source, plan, t, seed=0, epoch=0, global_batch_size=8)))
  for host, batch in enumerate(hosts):  # Host h holds epoch positions h, h + 2, ...
    np.testing.assert_array_equal(batch["visual"], single["visual"][host::2])
    np.testing.assert_array_equal(batch["index"], single["index"][host::2])


def test_frame_sampling_and_audio_crop_are_configurable():
  frames = np.stack([np.full((4, 4, 3), 10 * i, np.uint8) for i in range(9)])
  record = {"audio": np.arange(40, dtype=np.float32).reshape(4, 10), "frames": frames, "label": 1}
  ave = ExampleTransform(train=False, num_frames=3, frame_sampling="ave", audio_crop=(4, 1))
  out = ave(record)
  np.testing.assert_array_equal(out["visual"][:, 0, 0, 0], [0, 30, 60])  # OGM-GE AVE: 0, 3, 6.
  np.testing.assert_array_equal(out["audio"][0, :, 0], [3, 4, 5, 6])  # Centred 4-step window.
  with pytest.raises(ConfigError, match="audio_crop_seconds"):
    icfg = base_config().input
    icfg.audio_crop_seconds = 5.0
    make_transform(icfg, train=False, metadata=None)


def test_batches_are_the_stacked_examples_at_their_epoch_positions():
  """train_batches reads and transforms a batch in one grain element: example j of batch b is
  the transform of plan position b * size + j with that position's generator."""
  from avjax.data.pipeline import example_rng
  from avjax.data.transforms import collate
  source = _source(9)
  t = ExampleTransform(train=True, num_frames=2, image_size=8, spec_augment=True)
  plan = shuffled_plan(9, 0, 4)
  batches = list(train_batches(source, plan, t, seed=3, epoch=4, global_batch_size=4))
  key = np.random.Philox(_epoch_seed(3, 4)).state["state"]["key"]
  for b, batch in enumerate(batches):
    want = collate([t({**source[plan.indices[p]], "_index": plan.indices[p]}, example_rng(key, p))
                    for p in range(4 * b, 4 * b + 4)])
    for k in want:
      np.testing.assert_array_equal(batch[k], want[k], err_msg=k)


def test_example_rng_is_the_stream_grains_random_map_gives():
  """Augmentations stay those of the per-example grain pipeline (random_map) of earlier versions."""
  import grain
  from avjax.data.pipeline import example_rng
  seed = 1234
  draw = lambda rng: rng.integers(0, 2**31, 4)
  ds = grain.MapDataset.range(6).random_map(lambda x, rng: draw(rng), seed=seed)
  key = np.random.Philox(seed).state["state"]["key"]
  for position in range(6):
    np.testing.assert_array_equal(ds[position], draw(example_rng(key, position)))


def test_batches_with_worker_processes_are_the_same():
  source = _source(12)
  t = ExampleTransform(train=True, num_frames=2, image_size=8)
  plan = shuffled_plan(12, 0, 0)
  inline = list(train_batches(source, plan, t, seed=0, epoch=0, global_batch_size=4))
  workers = list(train_batches(source, plan, t, seed=0, epoch=0, global_batch_size=4,
                               num_workers=2))
  assert len(inline) == len(workers) == 3
  for x, y in zip(inline, workers):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


@pytest.mark.parametrize("dtype,on_device,size", [(np.float32, False, 3), (np.float16, False, 3),
                                                  (np.float16, True, 3), (np.float32, False, 1)])
def test_batch_writes_in_place_exactly_as_stacking_examples(dtype, on_device, size):
  from avjax.data.transforms import collate
  records = [{**r, "audio": r["audio"].astype(dtype)} for r in _source(size, frames=3, size=12)]
  t = ExampleTransform(train=True, num_frames=2, image_size=8, spec_augment=True,
                       crop_on_device=on_device)
  rngs = lambda: [np.random.default_rng(s) for s in range(size)]
  want = collate([t(r, g) for r, g in zip(records, rngs())])
  got = t.batch(records, rngs())
  assert got.keys() == want.keys()
  for key in want:
    assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape, key
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  assert got["audio"].dtype == dtype  # float16 storage travels as such; the steps cast it.
  assert normalize_inputs({"audio": got["audio"]}, base_config().input)["audio"].dtype == np.float32
  assert ("visual_crop" in got) == on_device


def _flow_record(frames=4, size=8):
  """Frame i: RGB pixels all 10 i; flow u = 100 + i, v = a left-to-right ramp (to see flips)."""
  rgb = np.stack([np.full((size, size, 3), 10 * i, np.uint8) for i in range(frames)])
  ramp = np.broadcast_to(np.arange(size, dtype=np.uint8) * 20, (size, size))
  flow = np.stack([np.stack([np.full((size, size), 100 + i, np.uint8), ramp], -1)
                   for i in range(frames)])
  return {"frames": rgb, "flow": flow, "label": 1}


def test_flow_frame_flip_mirrors_and_negates_u():
  from avjax.data.transforms import flow_frame
  from avjax.media.flow import dequantize_flow, quantize_flow
  flow = quantize_flow(np.random.default_rng(0).uniform(-20, 20, (6, 8, 2)))
  full = (0, 0, 8, 6)
  np.testing.assert_array_equal(flow_frame(flow, full, (6, 8), flip=False), flow)
  flipped = flow_frame(flow, full, (6, 8), flip=True)
  np.testing.assert_array_equal(flipped[..., 1], flow[:, ::-1, 1])
  # 255 - q is exactly the negated flow: dequantize(255 - q) = -dequantize(q).
  np.testing.assert_allclose(dequantize_flow(flipped[..., 0]), -dequantize_flow(flow[:, ::-1, 0]),
                             atol=1e-5)
  # Crop + resize acts on each component alone (as a one-channel image).
  box, size = (2, 1, 6, 5), (2, 2)
  for c in range(2):
    expected = np.asarray(Image.fromarray(flow[..., c].copy()).crop(box).resize((2, 2),
                                                                              Image.BILINEAR))
    np.testing.assert_array_equal(flow_frame(flow, box, size, flip=False)[..., c], expected)


@pytest.mark.parametrize("train", [False, True])
def test_flow_in_the_audio_slot_follows_the_rgb_frames(train):
  record = _flow_record()
  t = ExampleTransform(train=train, num_frames=2, image_size=8, frame_sampling="ks_no_short",
                       random_resized_crop=False, audio_source="flow")
  for seed in range(6):
    out = t(record, np.random.default_rng(seed))
    assert out["audio"].shape == (2, 8, 8, 2) and out["audio"].dtype == np.uint8
    assert out["visual"].shape == (2, 8, 8, 3)
    for k in range(2):
      i = out["visual"][k, 0, 0, 0] // 10  # Which stored frame the RGB came from ...
      flipped = out["audio"][k, 0, 0, 1] > out["audio"][k, 0, -1, 1]  # ... is the ramp mirrored?
      assert not flipped or train
      expected_u = 255 - (100 + i) if flipped else 100 + i  # ... the flow of the same frame.
      np.testing.assert_array_equal(out["audio"][k, ..., 0], expected_u)
  batch = t.batch([record] * 3, [np.random.default_rng(s) for s in range(3)])
  assert batch["audio"].shape == (3, 2, 8, 8, 2) and batch["visual"].shape == (3, 2, 8, 8, 3)


def test_flow_is_scaled_to_its_bound_on_the_device():
  flow = np.array([0, 127, 128, 255], np.uint8).reshape(1, 1, 1, 2, 2)
  out = normalize_inputs({"audio": flow}, base_config().input)["audio"]
  np.testing.assert_allclose(np.asarray(out).ravel(), np.array([-127.5, -0.5, 0.5, 127.5]) / 127.5)


@pytest.mark.parametrize("change, message", [
    (dict(), "model.av_resnet.audio_encoder='frames'"),
    (dict(audio_encoder="frames"), "audio_channels=2"),
    (dict(audio_encoder="frames", audio_channels=2, spec_augment=True), "spec_augment"),
    (dict(audio_encoder="frames", audio_channels=2, crop_on_device=True), "crop_on_device"),
])
def test_flow_config_errors_name_the_fix(change, message):
  from avjax.config import validate
  c = base_config()
  c.input.audio_source = "flow"
  for key, value in change.items():
    (c.model.av_resnet if key.startswith("audio_") else c.input)[key] = value
  with pytest.raises(ConfigError, match=message):
    validate(c)


def test_flow_config_with_automatic_crops_validates():
  from avjax.config import validate
  c = base_config()
  c.input.audio_source = "flow"
  c.model.av_resnet.audio_encoder, c.model.av_resnet.audio_channels = "frames", 2
  validate(c)  # crop_on_device=None resolves to off for flow, whatever the backend.


@pytest.mark.parametrize("value, source, backend, want", [
    (None, "audio", "gpu", True), (None, "audio", "tpu", True), (None, "audio", "cpu", False),
    (None, "flow", "gpu", False), (True, "audio", "cpu", True), (False, "audio", "gpu", False),
])
def test_crop_on_device_defaults_to_the_accelerator_backends(value, source, backend, want):
  from avjax.data.pipeline import crops_on_device
  icfg = base_config().input
  icfg.crop_on_device, icfg.audio_source = value, source
  assert crops_on_device(icfg, backend) is want


def test_default_transform_crops_on_the_host_on_this_cpu_backend():
  assert base_config().input.crop_on_device is None
  assert not make_transform(base_config().input, train=True).crop_on_device


@pytest.mark.parametrize("cores, workers, threads", [
    (1, 0, 1), (2, 0, 1), (4, 0, 3), (16, 0, 8), (64, 0, 8), (16, 4, 3), (2, 2, 1)])
def test_reader_threads_leave_a_core_to_the_training_loop(cores, workers, threads):
  from avjax.data.pipeline import _read_options
  options = _read_options(workers, cores)
  assert options.num_threads == threads and options.prefetch_buffer_size == threads + 2


def test_frame_encoder_without_flow_is_a_config_error():
  from avjax.config import validate
  c = base_config()
  c.model.av_resnet.audio_encoder = "frames"
  with pytest.raises(ConfigError, match="audio_source='flow'"):
    validate(c)


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_jpeg_frames_decode_to_the_same_pixels_as_pil(mode):
  from avjax.data.transforms import decode_image
  rng = np.random.default_rng(0)
  pixels = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
  buf = io.BytesIO()
  Image.fromarray(pixels).convert(mode).save(buf, format="JPEG", quality=90)
  data = buf.getvalue()
  expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
  got = decode_image(data)  # simplejpeg for YCbCr / gray, PIL for the rest (CMYK).
  assert got.shape == (24, 40, 3) and got.dtype == np.uint8
  np.testing.assert_array_equal(got, expected)
