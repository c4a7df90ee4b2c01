"""muse_mimic builder on a generated download: partition.csv (train / devel / test), labels.csv
with the three targets, unlabelled test clips left out, report-and-skip and strict."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds

import data_builders.muse_mimic as mm
from data_builders.common.report import StrictBuildError
from tests.data_builders import fixtures_av as fa


@pytest.fixture(scope='module')
def base(tmp_path_factory):
  return tmp_path_factory.getbasetemp()


@pytest.fixture(scope='module')
def fixture(base):
  return fa.downloads(base)['muse_mimic']


@pytest.fixture(scope='module')
def built(fixture, base):
  return fa.build_once(mm, 'vat', fixture.root, base)


def test_config_and_features(tmp_path):
  assert tfds.builder_cls('muse_mimic') is mm.Builder
  info = tfds.builder('muse_mimic', data_dir=str(tmp_path)).info
  assert info.features['attributes'].shape == (3,) and 'label' not in info.features
  assert info.metadata['attribute_names'] == ['approval', 'disappointment', 'uncertainty']
  assert mm.clip_key(' "[00123]" ') == '00123'


def test_records_partitions_targets(fixture, built):
  recs = fa.records(built)
  assert [r['_id'] for r in recs] == fixture.good
  assert fa.skipped(built) == fixture.bad
  assert built.info.metadata['build_report']['excluded'] == {'unlabelled': 2}
  assert set(built.info.splits) == {'train', 'validation'}
  for r in recs:
    part = fixture.info['partitions'][r['_id']]
    assert r['_split'] == {'train': 'train', 'devel': 'validation'}[part]
    np.testing.assert_allclose(r['attributes'], fixture.info['targets'][r['_id']], atol=1e-6)
    assert r['audio'].shape == (1024, 128) and np.asarray(r['frames']).shape == (8, 224, 224, 3)


def test_strict(fixture, tmp_path):
  with pytest.raises(StrictBuildError, match='200: missing_media'):
    mm.build('vat', data_dir=str(tmp_path), manual_dir=str(fixture.root), num_workers=0,
             strict=True)
