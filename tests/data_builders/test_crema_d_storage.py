"""float16 storage of spectrograms and feature sequences (builder options audio_dtype /
features_dtype): half the bytes per record, values within float16 rounding, float32 model inputs."""

from __future__ import annotations

import numpy as np
import pytest

import data_builders.crema_d as cd
from avjax.config import base_config
from avjax.data.transforms import ExampleTransform
from avjax.steps import normalize_inputs
from tests.data_builders import fixtures as fx


@pytest.fixture(scope='module')
def download(tmp_path_factory):
  root = tmp_path_factory.mktemp('crema_d_storage') / 'CREMA-D'
  crema = fx.make_crema_d(root)
  fx.add_vavl_crema_d(root, crema.good)
  fx.add_features(root, crema.good)
  return root


def _records(builder) -> dict[str, dict]:
  out = {}
  for split in builder.info.splits:
    source = builder.as_data_source(split=split)
    out.update({source[i]['id']: source[i] for i in range(len(source))})
  return out


def _assert_float16_of(half: np.ndarray, full: np.ndarray) -> None:
  assert half.dtype == np.float16 and half.shape == full.shape
  # Round to nearest: at most half a float16 ulp, 2^-11 of the magnitude (normal range).
  np.testing.assert_array_equal(half, full.astype(np.float16))
  err = np.abs(half.astype(np.float32) - full)
  assert np.all(err <= np.abs(full) * 2.0**-11 + 2.0**-25)


def test_float16_spectrograms(download, tmp_path):
  data_dir = str(tmp_path)
  full = cd.build('ogm_ge', data_dir=data_dir, manual_dir=str(download), num_workers=0)
  half = cd.build('ogm_ge', data_dir=data_dir, manual_dir=str(download), num_workers=0,
                  audio_dtype='float16')
  assert half.builder_config.name == 'ogm_ge-audio_dtypefloat16'
  assert half.info.features['audio'].np_dtype == np.float16
  assert half.info.metadata['config']['audio_dtype'] == 'float16'
  a, b = _records(full), _records(half)
  assert a.keys() == b.keys() and a
  for key, record in a.items():
    _assert_float16_of(b[key]['audio'], record['audio'])
    np.testing.assert_array_equal(b[key]['frames'], record['frames'])  # Nothing else changes.
  example = ExampleTransform(train=False, num_frames=1)(next(iter(b.values())))
  assert example['audio'].dtype == np.float16  # To the device as stored; the steps cast it.
  cast = normalize_inputs({'audio': example['audio'][None]}, base_config().input)['audio']
  assert cast.dtype == np.float32


def test_float16_feature_sequences(download, tmp_path):
  data_dir = str(tmp_path)
  full = cd.build('features', data_dir=data_dir, manual_dir=str(download), num_workers=0)
  half = cd.build('features', data_dir=data_dir, manual_dir=str(download), num_workers=0,
                  features_dtype='float16')
  a, b = _records(full), _records(half)
  assert a.keys() == b.keys() and a
  for key, record in a.items():
    for role in ('audio_features', 'visual_features'):
      _assert_float16_of(b[key][role], record[role])
  t = ExampleTransform(train=False, max_audio_frames=16, max_visual_frames=8)
  batch = t.batch(list(b.values())[:2], [None, None])
  assert batch['audio'].dtype == np.float16 and batch['visual'].shape == (2, 8, 1408)
  cast = normalize_inputs(batch, base_config().input)
  assert cast['audio'].dtype == cast['visual'].dtype == np.float32


def test_unknown_storage_dtype_is_refused(download, tmp_path):
  with pytest.raises(ValueError, match='audio_dtype'):
    cd.build('ogm_ge', data_dir=str(tmp_path), manual_dir=str(download), num_workers=0,
             audio_dtype='bfloat16')
