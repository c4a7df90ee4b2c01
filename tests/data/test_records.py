"""RecordSource: the direct tf.Example decode gives what TFDS's numpy reader gives."""

import io
import pickle

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from avjax.data.records import RecordSource, fast_source
from avjax.data.sources import EncodedImages

BYTES = tfds.features.Encoding.BYTES
ZLIB = tfds.features.Encoding.ZLIB


def _jpeg(seed: int) -> bytes:
  buf = io.BytesIO()
  pixels = np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)
  Image.fromarray(pixels).save(buf, format="JPEG")
  return buf.getvalue()


# Every kind of feature the avjax builders write.
FEATURES = tfds.features.FeaturesDict({
    "id": tfds.features.Text(),
    "label": tfds.features.ClassLabel(names=["a", "b", "c"]),
    "actor": tfds.features.Tensor(shape=(), dtype=np.int32),
    "seconds": tfds.features.Tensor(shape=(), dtype=np.float32),
    "flag": tfds.features.Tensor(shape=(), dtype=np.bool_),
    "soft_label": tfds.features.Tensor(shape=(3,), dtype=np.float32),
    "counts": tfds.features.Tensor(shape=(2,), dtype=np.int64),
    "audio": tfds.features.Tensor(shape=(4, 5), dtype=np.float32, encoding=BYTES),
    "audio16": tfds.features.Tensor(shape=(4, 5), dtype=np.float16, encoding=BYTES),
    "sequence": tfds.features.Tensor(shape=(None, 3), dtype=np.float32, encoding=BYTES),
    "flow": tfds.features.Tensor(shape=(2, 3, 2), dtype=np.uint8, encoding=ZLIB),
    "frames": tfds.features.Sequence(
        tfds.features.Image(shape=(6, 8, 3), encoding_format="jpeg")),
})


def _example(i: int) -> dict:
  rng = np.random.default_rng(i)
  return {"id": f"clip{i}", "label": i % 3, "actor": 1000 + i, "seconds": 0.1 * i + 0.3,
          "flag": bool(i % 2), "soft_label": rng.random(3).astype(np.float32),
          "counts": np.array([i, -i], np.int64),
          "audio": rng.normal(size=(4, 5)).astype(np.float32),
          "audio16": rng.normal(size=(4, 5)).astype(np.float16),
          "sequence": rng.normal(size=(i, 3)).astype(np.float32),  # i = 0: an empty sequence.
          "flow": rng.integers(0, 256, (2, 3, 2), dtype=np.uint8),
          "frames": [_jpeg(i), _jpeg(i + 10)][:1 + i % 2]}


class _ListSource:
  """What RecordSource reads: `.data_source[i]` -> serialized bytes (as TFDS's sources)."""

  def __init__(self, serialized: list[bytes]):
    self.data_source = serialized

  def __len__(self) -> int:
    return len(self.data_source)


def _assert_same(ours: dict, theirs: dict) -> None:
  assert ours.keys() == theirs.keys()
  for key, value in theirs.items():
    assert type(ours[key]) is type(value), key
    if isinstance(value, np.ndarray):
      assert ours[key].dtype == value.dtype and ours[key].shape == value.shape, key
      assert all(a == b for a, b in zip(ours[key].ravel(), value.ravel())), key
    else:
      assert ours[key] == value, key


def test_decode_matches_tfds_numpy_reader():
  serialized = [FEATURES.serialize_example(_example(i)) for i in range(4)]
  decoders = {"frames": EncodedImages()}
  source = RecordSource(_ListSource(serialized), FEATURES, decoders)
  assert len(source) == 4
  for i, data in enumerate(serialized):
    _assert_same(source[i], FEATURES.deserialize_example_np(data, decoders=decoders))
  assert source[1]["frames"][1] == _jpeg(11)  # Frames stay encoded.
  assert source[0]["sequence"].shape == (0, 3)


def test_pickles_for_grain_workers():
  serialized = [FEATURES.serialize_example(_example(1))]
  source = RecordSource(_ListSource(serialized), FEATURES, {"frames": EncodedImages()})
  _assert_same(pickle.loads(pickle.dumps(source))[0], source[0])


def test_unsupported_features_keep_the_tfds_reader():
  serialized = [FEATURES.serialize_example(_example(1))]
  plain = _ListSource(serialized)
  # Images decoded to pixels (no EncodedImages decoder) are TFDS's job.
  assert fast_source(plain, FEATURES) is plain
  assert isinstance(fast_source(plain, FEATURES, {"frames": EncodedImages()}), RecordSource)
  ragged = tfds.features.FeaturesDict(
      {"x": tfds.features.Tensor(shape=(None, None), dtype=np.float32)})
  assert fast_source(plain, ragged) is plain
  assert fast_source([{"a": 1}], FEATURES) == [{"a": 1}]  # Not a TFDS source.


def test_open_dataset_reads_through_record_source(tmp_path):
  from avjax.config import base_config
  from avjax.data import open_dataset
  c = base_config()
  c.dataset.data_dir = str(tmp_path)
  c.dataset.build_overrides = {"num_train": 8, "num_validation": 4, "num_test": 4}
  dataset = open_dataset(c.dataset, ["train"])
  source = dataset.sources["train"]
  assert isinstance(source, RecordSource)  # Every feature synthetic_av stores decodes directly.
  reference = source._source  # pylint: disable=protected-access
  for i in range(len(source)):
    _assert_same(source[i], reference[i])


def test_stored_images_are_left_encoded_by_open_dataset():
  from avjax.data.sources import _lazy_image_decoders  # pylint: disable=protected-access
  decoders = _lazy_image_decoders(FEATURES)
  assert list(decoders) == ["frames"] and isinstance(decoders["frames"], EncodedImages)
  assert _lazy_image_decoders(tfds.features.FeaturesDict(
      {"audio": tfds.features.Tensor(shape=(2,), dtype=np.float32)})) == {}
