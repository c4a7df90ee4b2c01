"""ave builder on a generated download: Annotations.txt classes, the three split lists with
duplicate ids removed, OGM-GE's PSD front end against scipy, report-and-skip, strict, and
configs/ogm_ge_ave.py against the build."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import tensorflow_datasets as tfds

import data_builders.ave as ave
from avjax.data import clips
from avjax.data.transforms import ExampleTransform
from avjax.media import load_audio
from data_builders.common.report import StrictBuildError
from tests.data_builders import fixtures_av as fa


@pytest.fixture(scope='module')
def base(tmp_path_factory):
  return tmp_path_factory.getbasetemp()


@pytest.fixture(scope='module')
def fixture(base):
  return fa.downloads(base)['ave']


@pytest.fixture(scope='module')
def built(fixture, base):
  return fa.build_once(ave, 'ogm_ge', fixture.root, base)


def test_config_and_features(tmp_path):
  assert tfds.builder_cls('ave') is ave.Builder
  info = tfds.builder('ave', data_dir=str(tmp_path)).info
  assert info.features['audio'].shape == (257, 1004)
  assert info.features['label'].num_classes == 28


def test_records_classes_splits_and_duplicates(fixture, built):
  recs = fa.records(built)
  assert [r['_id'] for r in recs] == sorted(fixture.good)
  assert fa.skipped(built) == fixture.bad
  report = built.info.metadata['build_report']
  assert report['excluded'] == {'duplicate_id': 2}  # Listed twice in trainSet.txt: left out.
  classes = built.info.metadata['class_names']
  assert classes == sorted(fa.AVE_CLASSES) and len(classes) == 28
  for r in recs:
    assert r['_split'] == fixture.info['splits'][r['_id']]
    assert classes[r['label']] == r['category'].decode() == fixture.info['categories'][r['_id']]
    assert r['audio'].shape == (257, 1004)


def test_psd_front_end_matches_scipy(fixture, built):
  """librosa.load (22.05 kHz), tile to 160000, clip, scipy spectrogram 512 / 353, log, z-score."""
  r = fa.records(built)[1]
  y, _ = load_audio(fixture.root / 'AVE' / f'{r["_id"]}.mp4', sample_rate=22050)
  x = np.clip(np.tile(y.astype(np.float64), -(-160000 // len(y)))[:160000], -1, 1)
  _, _, p = scipy.signal.spectrogram(x, fs=22050, nperseg=512, noverlap=353)
  ref = np.log(p + 1e-7)
  np.testing.assert_allclose(r['audio'], (ref - ref.mean()) / (ref.std() + 1e-9), atol=1e-4)


def test_strict_and_missing_annotations(fixture, tmp_path):
  with pytest.raises(StrictBuildError, match='ave00000007: missing_media'):
    ave.build('ogm_ge', data_dir=str(tmp_path), manual_dir=str(fixture.root), num_workers=0,
              strict=True)
  (tmp_path / 'dl').mkdir()
  (tmp_path / 'dl' / 'trainSet.txt').write_text('Bus&ave00000000&good&0&10\n')
  with pytest.raises(FileNotFoundError, match='Annotations.txt'):
    ave.build('ogm_ge', data_dir=str(tmp_path), manual_dir=str(tmp_path / 'dl'), num_workers=0)


def test_paper_config_reads_the_build(built, base):
  c, dataset = fa.paper_config('configs/ogm_ge_ave.py', str(base / 'tfds_av'))
  assert dataset.name == 'ave/ogm_ge' and dataset.num_classes == 28
  assert set(dataset.sources) == {'train', 'validation', 'test'}
  record = dict(dataset.sources['validation'][0])
  record['frames'] = np.asarray(record['frames'])[clips.ave_frame_indices(len(record['frames']))]
  ex = ExampleTransform(train=False, num_frames=c.input.num_frames,
                        image_size=c.input.image_size)(record)
  assert ex['audio'].shape == (257, 1004, 1) and ex['visual'].shape == (3, 224, 224, 3)
  smoke = fa.paper_config('configs/ogm_ge_ave.py', None, 'smoke', open_data=False)
  assert smoke.name == 'ogm_ge_ave_smoke' and smoke.dataset.name == 'synthetic_av'
