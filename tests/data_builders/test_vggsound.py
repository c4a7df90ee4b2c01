"""vggsound builder on a generated download: vggsound.csv and MM-Debiased.json (ids in VGGSound,
Kinetics-400 and bare-ytid styles against files named either way), the full 10 s log-STFT and the
pipeline's 5 s crop against the reference's crop-then-STFT, and configs/ogm_ge_vggsound.py."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import tensorflow_datasets as tfds

import data_builders.vggsound as vg
from avjax.data import clips
from avjax.media import load_audio
from data_builders.common import files as files_lib
from tests.data_builders import fixtures_av as fa


@pytest.fixture(scope='module')
def base(tmp_path_factory):
  return tmp_path_factory.getbasetemp()


@pytest.fixture(scope='module')
def fixture(base):
  return fa.downloads(base)['vggsound']


@pytest.fixture(scope='module')
def ogm_ge(fixture, base):
  return fa.build_once(vg, 'ogm_ge', fixture.root, base)


@pytest.fixture(scope='module')
def mm_debiased(fixture, base):
  return fa.build_once(vg, 'mm_debiased', fixture.root, base)


def test_youtube_id_forms():
  assert files_lib.youtube_stems('abcdefghijk_17') == [
      'abcdefghijk_17', 'abcdefghijk_000017_000027', 'abcdefghijk_000017', 'abcdefghijk_17_27']
  assert files_lib.youtube_stems('a_c-efghijk_000003_000013')[:2] == [
      'a_c-efghijk_000003_000013', 'a_c-efghijk_3']
  assert files_lib.youtube_stems('abcdefghijk') == ['abcdefghijk']


def test_configs_and_features(tmp_path):
  assert tfds.builder_cls('vggsound') is vg.Builder
  for name, classes in (('ogm_ge', 309), ('mm_debiased', 10)):
    info = tfds.builder(f'vggsound/{name}', data_dir=str(tmp_path)).info
    assert info.features['audio'].shape == (129, 1251)
    assert info.features['label'].num_classes == classes
  assert vg.make_config('ogm_ge', num_classes=310).num_classes == 310


def test_ogm_ge_records(fixture, ogm_ge):
  recs = fa.records(ogm_ge)
  assert [r['_id'] for r in recs] == sorted(fixture.good)
  # A cut-off MP4 loses its index (moov atom): it cannot be opened at all.
  assert fa.skipped(ogm_ge) == fixture.bad
  classes = ogm_ge.info.metadata['class_names']
  assert classes == ['dog barking', 'playing cello', 'singing']
  rows = {f'{y}_{s}': (label, split) for y, s, label, split in fixture.info['rows']}
  for r in recs:
    assert classes[r['label']] == rows[r['_id']][0] and r['_split'] == rows[r['_id']][1]
    assert len(r['frames']) == int(float(r['video_seconds']) - 0.1 + 1e-3) + 1  # 1 fps, 10 fps.
    assert np.asarray(r['frames']).shape[1:] == (256, 256, 3)


def test_full_spectrogram_and_pipeline_crop_match_the_reference(fixture, ogm_ge):
  """Stored: log|STFT| (256 / 128) of the clip tiled to 10 s. A crop of 626 frames from frame j is
  the reference's STFT of the 80000 samples from 128 j, except the two edge frames (the reference
  pads its crop; the stored spectrogram sees the neighbouring samples)."""
  r = fa.records(ogm_ge)[0]
  path = next(fixture.root.rglob(f'{r["_id"][:11]}*.mp4'))
  y, _ = load_audio(path, sample_rate=16000)
  tiled = np.clip(np.tile(y, -(-160000 // len(y)))[:160000], -1, 1)
  full = np.log(np.abs(librosa.stft(tiled, n_fft=256, hop_length=128)) + 1e-7)
  np.testing.assert_allclose(r['audio'], full, atol=2e-4, rtol=1e-5)
  length, axis = clips.audio_crop(5.0, ogm_ge.info.metadata['config'])
  crop = clips.crop_time(r['audio'], length, train=True, rng=np.random.default_rng(3), axis=axis)
  j = int(np.random.default_rng(3).integers(0, 1251 - 626 + 1))  # The same draw: the start.
  np.testing.assert_array_equal(crop, r['audio'][:, j:j + 626])
  ref = np.log(np.abs(librosa.stft(tiled[128 * j:128 * j + 80000], n_fft=256,
                                   hop_length=128)) + 1e-7)
  assert crop.shape == ref.shape == (129, 626)
  np.testing.assert_allclose(crop[:, 2:-2], ref[:, 2:-2], atol=2e-4, rtol=1e-5)


def test_mm_debiased_resolves_both_id_styles(fixture, mm_debiased):
  recs = fa.records(mm_debiased)
  mmd = fixture.info['mmd']
  assert {r['_id'] for r in recs} == set(mmd) - {'mm_missingg_5'}
  assert fa.skipped(mm_debiased) == {'mm_missingg_5': 'missing_media'}
  split = {'training': 'train', 'validation': 'validation', 'testing': 'test'}
  for r in recs:
    subset, label = mmd[r['_id']]
    assert r['_split'] == split[subset] and vg.MM_DEBIASED_CLASSES[r['label']] == label
  assert mm_debiased.info.metadata['class_names'] == list(vg.MM_DEBIASED_CLASSES)


def test_paper_config_reads_the_build(ogm_ge, base):
  c, dataset = fa.paper_config('configs/ogm_ge_vggsound.py', str(base / 'tfds_av'))
  assert dataset.name == 'vggsound/ogm_ge' and dataset.num_classes == 309
  record = dict(dataset.sources['test'][0])
  # The config's own transform: 'random' frames and the 5 s crop of the stored 10 s spectrogram.
  from avjax.data import make_transform
  for train in (True, False):
    transform = make_transform(c.input, train=train, metadata=dataset.info.metadata)
    ex = transform(record, np.random.default_rng(0))
    assert ex['audio'].shape == (129, 626, 1) and ex['visual'].shape == (3, 224, 224, 3)
