"""Direct decoding of avjax's TFDS records (tf.train.Example protos in ArrayRecord files).

TFDS's numpy reader turns every feature into a numpy array and back (`np.array(...).item()` per
scalar, flatten / nest of the feature tree), which costs ~0.09 ms per CREMA-D record, as much as the
JPEG decode of one frame. The features avjax builders write are few and simple (Tensor,
ClassLabel, Text, Sequence(Image) kept as encoded bytes), so `RecordSource` decodes them straight
from the proto, in ~0.02 ms: the same values, types and dtypes as `tfds`'s `as_data_source`
(tests/data/test_records.py compares them on every kind of feature the builders write, and on a
built synthetic_av). A feature it does not know makes `fast_source` keep TFDS's own reader.
"""

from __future__ import annotations

import logging
import zlib
from typing import Any, Callable

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.proto import tf_example_pb2

_Decode = Callable[[Any], Any]  # A tf.train.Feature -> the decoded value.
log = logging.getLogger(__name__)


class UnsupportedFeature(ValueError):
  """A feature `RecordSource` cannot decode (TFDS's reader is used instead)."""


def _list(feature: Any, kind: str) -> Any:
  if feature.WhichOneof("kind") != kind:
    raise ValueError(f"expected a {kind}, got {feature.WhichOneof('kind')}")
  return getattr(feature, kind).value


def _scalar_decoder(dtype: np.dtype) -> _Decode:
  """Scalars come back as Python values (TFDS: np.array(values, dtype).item())."""
  if dtype == np.uint64:  # TFDS reinterprets the stored int64's bits; not written by avjax.
    raise UnsupportedFeature("uint64 scalar")
  if dtype == np.bool_:
    return lambda f: bool(_list(f, "int64_list")[0])
  if np.issubdtype(dtype, np.integer):
    return lambda f: int(_list(f, "int64_list")[0])
  if np.issubdtype(dtype, np.floating):
    # float_list holds float32; a float64 scalar would be stored as such too.
    return lambda f: float(dtype.type(_list(f, "float_list")[0]))
  if dtype == np.object_:
    return lambda f: bytes(_list(f, "bytes_list")[0])
  raise UnsupportedFeature(f"scalar dtype {dtype}")


def _tensor_decoder(feature: tfds.features.Tensor) -> _Decode:
  """Tensor / ClassLabel / Text: fixed shape, at most one unknown dimension."""
  # pylint: disable=protected-access
  if getattr(feature, "_dynamic_shape", False) or getattr(feature, "_optional", False):
    raise UnsupportedFeature("dynamic-shape or optional Tensor")
  encoding = getattr(feature, "_encoding", tfds.features.Encoding.NONE)
  # pylint: enable=protected-access
  dtype = np.dtype(feature.np_dtype)
  shape = tuple(-1 if d is None else d for d in feature.shape)
  if encoding == tfds.features.Encoding.BYTES:
    return lambda f: np.frombuffer(_list(f, "bytes_list")[0], dtype).reshape(shape)
  if encoding == tfds.features.Encoding.ZLIB:  # E.g. ucf101's optical flow.
    return lambda f: np.frombuffer(zlib.decompress(_list(f, "bytes_list")[0]), dtype).reshape(shape)
  if encoding != tfds.features.Encoding.NONE:
    raise UnsupportedFeature(f"encoding {encoding}")
  if not shape:
    return _scalar_decoder(dtype)
  if dtype == np.object_ or dtype == np.uint64:
    raise UnsupportedFeature(f"array of dtype {dtype}")
  kind = "int64_list" if (np.issubdtype(dtype, np.integer) or dtype == np.bool_) else "float_list"
  return lambda f: np.array(_list(f, kind), dtype).reshape(shape)


def _feature_decoder(feature: Any, decoder: Any) -> _Decode:
  if isinstance(feature, tfds.features.Sequence):
    inner = feature.feature
    # Frames left encoded (avjax.data.sources.EncodedImages): the (T,) object array TFDS gives.
    if isinstance(inner, tfds.features.Image) and getattr(decoder, "keeps_encoded", False):
      return lambda f: np.array(list(_list(f, "bytes_list")), dtype=object)
    raise UnsupportedFeature(f"Sequence of {type(inner).__name__}")
  if decoder is not None:
    raise UnsupportedFeature("custom decoder")
  if isinstance(feature, tfds.features.Tensor):  # Also ClassLabel and Text.
    return _tensor_decoder(feature)
  raise UnsupportedFeature(type(feature).__name__)


class RecordSource:
  """Random access to one split's records, decoded straight from the tf.Example protos.

  Wraps a TFDS `ArrayRecordDataSource` (its raw reader does the file access) and keeps its
  interface for what avjax uses: len, [i] -> {feature name: value}, and pickling into grain
  worker processes.
  """

  def __init__(self, source: Any, features: Any, decoders: dict[str, Any] | None = None):
    self._args = (source, features, decoders)
    self._source = source
    self._decoders = [(name, _feature_decoder(feature, (decoders or {}).get(name)))
                      for name, feature in features.items()]

  def __reduce__(self):  # The per-feature decoders are closures: rebuild them after unpickling.
    return RecordSource, self._args

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return self.decode(self._source.data_source[index])

  def read(self, index: int, names: list[str]) -> dict[str, Any]:
    """Only the features `names` of record `index` (e.g. labels for a stratified fold)."""
    feature_map = tf_example_pb2.Example.FromString(
        self._source.data_source[index]).features.feature
    return {name: decode(feature_map[name]) for name, decode in self._decoders if name in names}

  def decode(self, serialized: bytes) -> dict[str, Any]:
    feature_map = tf_example_pb2.Example.FromString(serialized).features.feature
    out = {}
    for name, decode in self._decoders:
      try:
        out[name] = decode(feature_map[name])
      except (ValueError, IndexError) as e:
        raise ValueError(f"Record feature {name!r} does not decode as the dataset's features "
                         f"declare ({e}); rebuild the dataset.") from e
    return out

  def __getattr__(self, name: str) -> Any:  # dataset_info, split, ... of the TFDS source.
    if name.startswith("__") or name in ("_source", "_args", "_decoders"):
      raise AttributeError(name)
    return getattr(self._source, name)

  def __repr__(self) -> str:
    return f"RecordSource({self._source!r})"


def fast_source(source: Any, features: Any, decoders: dict[str, Any] | None = None) -> Any:
  """`RecordSource(source)` when every top-level feature is one it decodes and its first record
  equals TFDS's reading of it, else `source` (logged)."""
  if not hasattr(source, "data_source") or not isinstance(features, tfds.features.FeaturesDict):
    return source
  try:
    fast = RecordSource(source, features, decoders)
    if len(source) and hasattr(source, "__getitem__") and not _same(fast[0], source[0]):
      raise UnsupportedFeature("its first record differs from TFDS's reading")
  except UnsupportedFeature as e:
    log.info("Reading %s with TFDS's example parser: %s.", source, e)
    return source
  return fast


def _same(a: Any, b: Any) -> bool:
  """Equal values, types and dtypes (nested dicts, numpy arrays incl. object arrays, scalars)."""
  if isinstance(a, dict) or isinstance(b, dict):
    return (isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys()
            and all(_same(a[k], b[k]) for k in a))
  if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
            and a.dtype == b.dtype and a.shape == b.shape):
      return False
    if a.dtype == object:
      return all(_same(x, y) for x, y in zip(a.ravel(), b.ravel()))
    return np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
  return type(a) is type(b) and a == b
