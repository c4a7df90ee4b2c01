"""The optional Apache Beam path (`pip install -e .[beam]`): a builder run on Beam's DirectRunner
gives the records, report and metadata of the local build. Skipped without apache_beam."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds

import data_builders.ave as ave
from tests.data_builders import fixtures_av as fa


def test_beam_direct_runner_matches_the_local_build(tmp_path_factory, tmp_path):
  pytest.importorskip('apache_beam', reason='the beam extra is not installed')
  base = tmp_path_factory.getbasetemp()
  fixture = fa.downloads(base)['ave']
  local = fa.build_once(ave, 'ogm_ge', fixture.root, base)
  beam = ave.Builder(config='ogm_ge', data_dir=str(tmp_path), num_workers=0)
  beam.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(fixture.root), beam_runner='DirectRunner'))
  assert fa.skipped(beam) == fa.skipped(local) == fixture.bad
  assert beam.info.metadata['build_report'] == local.info.metadata['build_report']
  ours, theirs = fa.records(local), fa.records(beam)
  assert [r['_id'] for r in theirs] == [r['_id'] for r in ours]
  for x, y in zip(ours, theirs):
    assert x['_split'] == y['_split'] and x['label'] == y['label']
    np.testing.assert_array_equal(x['audio'], y['audio'])
    np.testing.assert_array_equal(np.asarray(x['frames']), np.asarray(y['frames']))
  assert not list(tmp_path.rglob('*.build_problems.json'))  # Gathered, then removed.
