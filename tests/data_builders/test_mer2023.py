"""mer2023 builder on a generated download: train-label.csv with a seeded validation fold, a
labelled test1, no test2, the VAT front end (fbank with AcFormer's statistics, 8 square frames),
report-and-skip and strict."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds

import data_builders.mer2023 as mer
from avjax.media import kaldi_fbank, load_audio
from data_builders.common.report import StrictBuildError
from tests.data_builders import fixtures_av as fa


@pytest.fixture(scope='module')
def base(tmp_path_factory):
  return tmp_path_factory.getbasetemp()


@pytest.fixture(scope='module')
def fixture(base):
  return fa.downloads(base)['mer2023']


@pytest.fixture(scope='module')
def built(fixture, base):
  return fa.build_once(mer, 'vat', fixture.root, base)


def test_config_and_features(tmp_path):
  assert tfds.builder_cls('mer2023') is mer.Builder
  info = tfds.builder('mer2023', data_dir=str(tmp_path)).info
  assert info.features['audio'].shape == (1024, 128)
  assert info.features['frames'].shape == (8, 224, 224, 3)
  assert info.features['label'].names == list(mer.CLASS_NAMES)
  assert info.metadata['attribute_names'] == ['valence']
  folds = mer.fold_of([f'n{i}' for i in range(10)], 5, 0)
  assert sorted(np.bincount(list(folds.values()))) == [2] * 5
  assert folds == mer.fold_of([f'n{i}' for i in reversed(range(10))], 5, 0)


def test_records_splits_labels(fixture, built):
  recs = fa.records(built)
  assert [r['_id'] for r in recs] == sorted(fixture.good)
  assert fa.skipped(built) == fixture.bad
  report = built.info.metadata['build_report']
  assert report['excluded'] == {'videos_without_labels': 1}  # test3's unlabelled clip.
  assert any('test2' in n for n in report['notes'])
  assert set(built.info.splits) == {'train', 'validation', 'test1'}
  for r in recs:
    name = r['_id']
    want = ('test1' if name.startswith('sample_000002') else
            'validation' if fixture.info['folds'][name] == 0 else 'train')
    assert r['_split'] == want
    emotion, valence = fixture.info['labels'][name]
    assert mer.CLASS_NAMES[r['label']] == emotion
    assert float(r['valence']) == pytest.approx(valence) and r['attributes'].shape == (1,)
    assert np.asarray(r['frames']).shape == (8, 224, 224, 3)


def test_vat_fbank_statistics(fixture, built):
  r = fa.records(built)[0]
  wave, _ = load_audio(fixture.root / 'train' / f'{r["_id"]}.avi', sample_rate=16000)
  np.testing.assert_allclose(r['audio'], kaldi_fbank(wave, 16000, mean=-4.2677, std=4.5690),
                             atol=1e-5)


def test_strict(fixture, tmp_path):
  with pytest.raises(StrictBuildError, match='sample_00000098: bad_label'):
    mer.build('vat', data_dir=str(tmp_path), manual_dir=str(fixture.root), num_workers=0,
              strict=True)
