"""kinetics_sounds builder on a generated download: lists in OGM-GE's format, Kinetics-400 and
OGM-GE file names, the Kaldi fbank front end, 1 fps frames, report-and-skip, strict, and
configs/ogm_ge_ks.py against the build."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow_datasets as tfds

import data_builders.kinetics_sounds as ks
from avjax.data import clips
from avjax.data.transforms import ExampleTransform
from avjax.media import kaldi_fbank, load_audio
from data_builders.common.report import StrictBuildError
from tests.data_builders import fixtures_av as fa

REPO_CONFIG = 'configs/ogm_ge_ks.py'


@pytest.fixture(scope='module')
def base(tmp_path_factory):
  return tmp_path_factory.getbasetemp()


@pytest.fixture(scope='module')
def fixture(base):
  return fa.downloads(base)['kinetics_sounds']


@pytest.fixture(scope='module')
def built(fixture, base):
  return fa.build_once(ks, 'ogm_ge', fixture.root, base)


def test_registered_config_and_features(tmp_path):
  assert tfds.builder_cls('kinetics_sounds') is ks.Builder
  info = tfds.builder('kinetics_sounds', data_dir=str(tmp_path)).info
  assert info.features['audio'].shape == (1024, 128)
  assert info.features['frames'].shape == (None, 256, 256, 3)
  assert info.features['label'].num_classes == 31
  cfg = info.metadata['config']
  assert (cfg['audio_frontend'], cfg['fbank_mean'], cfg['fbank_std']) == ('kaldi_fbank',
                                                                          -4.503877, 5.141276)
  assert ks.read_list.__doc__ and ks.make_config('ogm_ge', num_classes=32).name == (
      'ogm_ge-num_classes32')


def test_records_labels_splits_and_problems(fixture, built):
  recs = fa.records(built)
  assert [r['_id'] for r in recs] == sorted(fixture.good)
  assert fa.skipped(built) == fixture.bad
  meta = built.info.metadata
  assert meta['class_names'] == [f'class {k}' for k in range(31)]
  assert meta['split_files'] == {'train': 'my_train.txt', 'test': 'my_test.txt'}
  for r in recs:
    assert r['_split'] == fixture.info['splits'][r['_id']]
    assert r['label'] == fixture.info['labels'][r['_id']]
    assert r['youtube_id'].decode() == r['_id'][:11]
    assert r['audio'].shape == (1024, 128) and r['audio'].dtype == np.float32
    frames = np.asarray(r['frames'])
    assert frames.shape[1:] == (256, 256, 3)
    assert len(frames) == math.floor(float(r['video_seconds']) - 0.1 + 1e-3) + 1  # 1 fps.


def test_fbank_is_the_reference_recipe(fixture, built):
  """torchaudio-compatible fbank of the mean-removed 16 kHz track, 1024 frames, normalised."""
  r = fa.records(built)[0]
  path = next(fixture.root.rglob(f'{r["_id"][:11]}*.mp4'))
  wave, _ = load_audio(path, sample_rate=16000)
  want = kaldi_fbank(wave, 16000)
  np.testing.assert_allclose(r['audio'], want, atol=1e-5)
  n = 1 + (len(wave) - 400) // 160
  np.testing.assert_allclose(r['audio'][n:], 4.503877 / (2 * 5.141276), atol=1e-6)  # Zero pad.


def test_strict_fails_at_the_first_problem(fixture, tmp_path):
  with pytest.raises(StrictBuildError, match='ks_badlabl_0|ks_missing1_3'):
    ks.build('ogm_ge', data_dir=str(tmp_path), manual_dir=str(fixture.root), num_workers=0,
             strict=True)
  assert list((tmp_path / 'kinetics_sounds' / 'ogm_ge').iterdir()) == []


def test_missing_list_names_the_fix(tmp_path):
  (tmp_path / 'dl').mkdir()
  (tmp_path / 'dl' / 'my_test.txt').write_text('ks_a0000000_0,10,1\n')  # No my_train.txt.
  with pytest.raises(FileNotFoundError, match='my_train.txt.*\n.*Kinetics-Sounds lists'):
    ks.build('ogm_ge', data_dir=str(tmp_path), manual_dir=str(tmp_path / 'dl'), num_workers=0)


def test_paper_config_reads_the_build(built, base):
  c, dataset = fa.paper_config(REPO_CONFIG, str(base / 'tfds_av'))
  assert dataset.name == 'kinetics_sounds/ogm_ge' and dataset.num_classes == 31
  record = dict(dataset.sources['train'][0])
  # The reference's 3 frames from the stored 1 fps frames (what input.frame_sampling will select).
  rng = np.random.default_rng(0)
  idx = clips.ks_frame_indices(len(record['frames']), c.input.num_frames, train=True, rng=rng)
  record['frames'] = np.asarray(record['frames'])[idx]
  ex = ExampleTransform(train=True, num_frames=c.input.num_frames,
                        image_size=c.input.image_size)(record, rng)
  assert ex['audio'].shape == (1024, 128, 1) and ex['visual'].shape == (3, 224, 224, 3)
