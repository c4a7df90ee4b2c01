"""ArrayRecord files without zstd, for every avjax build.

TFDS writes ArrayRecord with the library's default zstd compression. avjax's records are mostly
data that does not compress: JPEG frames, zlib-encoded flow, float spectrograms and feature
sequences (a few percent smaller with zstd), while decompressing is the largest single cost of
reading a training example (CREMA-D `ogm_ge`, float16: 0.08 of ~0.3 CPU-ms per example; an
uncompressed record reads in 0.02 ms). Builds therefore write uncompressed ArrayRecords; readers
take either (the compression is recorded per file), so older builds stay valid. Beam builds write
on the Beam workers with TFDS's defaults.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterable, Iterator

import tensorflow_datasets as tfds
from array_record.python import array_record_module
from tensorflow_datasets.core import file_adapters

WRITER_OPTIONS = "group_size:1,uncompressed"  # One record per chunk (random access), no zstd.


class UncompressedArrayRecord(file_adapters.ArrayRecordFileAdapter):
  """TFDS's ArrayRecord adapter writing WRITER_OPTIONS."""

  @classmethod
  def write_examples(cls, path: os.PathLike | str, iterator: Iterable[tuple[object, bytes]]
                     ) -> None:
    writer = array_record_module.ArrayRecordWriter(os.fspath(path), WRITER_OPTIONS)
    try:
      for _, serialized in iterator:
        writer.write(serialized)
    finally:
      writer.close()


@contextlib.contextmanager
def uncompressed_array_records() -> Iterator[None]:
  """Within the block, TFDS writes ArrayRecord files through `UncompressedArrayRecord`."""
  fmt = tfds.core.FileFormat.ARRAY_RECORD
  previous = file_adapters.ADAPTER_FOR_FORMAT[fmt]
  file_adapters.ADAPTER_FOR_FORMAT[fmt] = UncompressedArrayRecord
  try:
    yield
  finally:
    file_adapters.ADAPTER_FOR_FORMAT[fmt] = previous
