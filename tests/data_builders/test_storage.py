"""Builds write uncompressed ArrayRecord files (data_builders/common/storage.py), and TFDS's own
writer is back in place afterwards."""

from __future__ import annotations

import glob
import os

import tensorflow_datasets as tfds
from array_record.python import array_record_module
from tensorflow_datasets.core import file_adapters

import data_builders.crema_d as cd
import data_builders.synthetic_av as sav
from data_builders.common import storage
from tests.data_builders import fixtures as fx


def writer_options(builder: tfds.core.DatasetBuilder) -> set[str]:
  """The writer options recorded in every ArrayRecord file of a build."""
  paths = glob.glob(os.path.join(builder.data_dir, "*.array_record*"))
  assert paths, builder.data_dir
  options = set()
  for path in paths:
    reader = array_record_module.ArrayRecordReader(path)
    options.add(reader.writer_options_string())
    reader.close()
  return options


def test_builds_write_uncompressed_records_and_restore_tfds_writer(tmp_path):
  tfds_adapter = file_adapters.ADAPTER_FOR_FORMAT[tfds.core.FileFormat.ARRAY_RECORD]
  synthetic = sav.build("balanced", data_dir=str(tmp_path / "s"), num_train=8, num_validation=0,
                        num_test=4)
  crema = cd.build("mmcosine", data_dir=str(tmp_path / "c"),
                   manual_dir=str(fx.make_crema_d(tmp_path / "CREMA-D").root), num_workers=0)
  for builder in (synthetic, crema):
    assert all("uncompressed" in o and "zstd" not in o for o in writer_options(builder))
    assert len(builder.as_data_source(split="train")) > 0  # Read back as any build.
  assert file_adapters.ADAPTER_FOR_FORMAT[tfds.core.FileFormat.ARRAY_RECORD] is tfds_adapter
  assert tfds_adapter is not storage.UncompressedArrayRecord
