"""ssw60 builder on a generated download in SSW60's layout (video_ml.csv, taxa.csv,
video_ml/*.mp4): classes from taxa.csv, the official train / test split with a seeded stratified
validation fold, a video without an audio track kept as silence (or skipped), report-and-skip,
and configs/mmcosine_ssw60.py against the build."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

import data_builders.ssw60 as ssw60
from data_builders.ssw60.ssw60_dataset_builder import stratified_holdout
from tests.data_builders import fixtures as fx
from tests.data_builders import fixtures_av as fa

COLUMNS = ('asset_id', 'label', 'split', 'fps', 'frame_count', 'duration_seconds',
           'target_second', 'reliable_audio')


def make_ssw60(root: Path) -> fx.Fixture:
  """taxa.csv (60 species); train: species 3 x 3 videos and species 7 x 2 (one without an audio
  track), test: 2 videos and a corrupt one; rows for a missing video and a bad label."""
  with open(root / 'taxa.csv', 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(('label', 'species_code', 'common_name', 'scientific_name'))
    w.writerows((k, f'sp{k:02d}', f'Bird {k}', f'Avis {k}') for k in range(60))
  rows = ([(f'10{i}', 3, 'train') for i in range(3)] + [('200', 7, 'train'), ('201', 7, 'train')] +
          [('300', 3, 'test'), ('301', 7, 'test'), ('302', 7, 'test')])
  for i, (key, _, _) in enumerate(rows[:-1]):
    fa.video(root / 'video_ml' / f'{key}.mp4', 1.0 + 0.25 * (i % 3), 50 + i, audio=key != '201')
  fx.garbage(root / 'video_ml' / '302.mp4', seed=3)
  with open(root / 'video_ml.csv', 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(COLUMNS)
    w.writerows((key, label, split, 25, 250, 9.96, 5, i % 2)
                for i, (key, label, split) in enumerate(rows + [('400', 3, 'test'),
                                                               ('401', 60, 'train')]))
  good = [key for key, _, _ in rows[:-1]]
  return fx.Fixture(root, good, {'302': 'corrupt', '400': 'missing_media', '401': 'bad_label'},
                    {'labels': {k: lab for k, lab, _ in rows}, 'splits': {k: s for k, _, s in rows}})


@pytest.fixture(scope='module')
def base(tmp_path_factory):
  return tmp_path_factory.mktemp('ssw60')


@pytest.fixture(scope='module')
def fixture(base):
  (base / 'download').mkdir()
  return make_ssw60(base / 'download')


@pytest.fixture(scope='module')
def built(fixture, base):
  return fa.build_once(ssw60, 'mmcosine', fixture.root, base)


def test_stratified_holdout_is_per_class_seeded_and_order_free():
  labels = {f'k{i}': i % 3 for i in range(30)} | {'lonely': 5}
  held = stratified_holdout(labels, 0.2, seed=4)
  assert sorted(labels[k] for k in held) == [0, 0, 1, 1, 2, 2]  # 20% of each class of 10.
  assert 'lonely' not in held  # A class with one video keeps it for training.
  assert stratified_holdout(dict(reversed(labels.items())), 0.2, seed=4) == held
  assert stratified_holdout(labels, 0.2, seed=5) != held
  assert stratified_holdout(labels, 0.0, seed=4) == set()


def test_config_and_features(tmp_path):
  assert tfds.builder_cls('ssw60') is ssw60.Builder
  info = tfds.builder('ssw60', data_dir=str(tmp_path)).info
  assert info.features['audio'].shape == (257, 1004)
  assert info.features['label'].num_classes == 60
  assert 'audio_present' in info.features and 'reliable_audio' in info.features


def test_records_splits_and_silent_video(fixture, built):
  recs = {r['_id']: r for r in fa.records(built)}
  assert sorted(recs) == sorted(fixture.good)
  assert fa.skipped(built) == fixture.bad
  classes = built.info.metadata['class_names']
  assert len(classes) == 60 and classes[7] == 'Bird 7'
  # One of species 3's three training videos and one of species 7's two are held out.
  val = sorted(k for k, r in recs.items() if r['_split'] == 'validation')
  assert [fixture.info['labels'][k] for k in val] == [3, 7]
  for key, r in recs.items():
    expected = fixture.info['splits'][key]
    assert r['_split'] == ('validation' if key in val else expected)
    assert r['label'] == fixture.info['labels'][key] and r['species'].decode() == classes[r['label']]
    assert r['audio'].shape == (257, 1004) and np.all(np.isfinite(r['audio']))
  silent = recs['201']
  assert silent['audio_present'] == 0 and not np.any(silent['audio'])
  assert all(r['audio_present'] == 1 and np.any(r['audio']) for k, r in recs.items() if k != '201')
  assert 'validation' in built.info.metadata['split_scheme']


def test_without_silence_a_trackless_video_is_reported(fixture, base):
  b = fa.build_once(ssw60, 'mmcosine', fixture.root, base, missing_audio='')
  assert fa.skipped(b) == {**fixture.bad, '201': 'corrupt'}
  problem = next(p for p in b.info.metadata['build_report']['skipped'] if p['id'] == '201')
  assert 'no audio stream' in problem['message']
  assert 'audio_present' not in b.info.features


def test_missing_taxa_is_one_clear_error(tmp_path):
  (tmp_path / 'video_ml.csv').write_text(','.join(COLUMNS) + '\n')
  with pytest.raises(FileNotFoundError, match='taxa.csv'):
    ssw60.build('mmcosine', data_dir=str(tmp_path / 'out'), manual_dir=str(tmp_path),
                num_workers=0)


def test_paper_config_reads_the_build(built, base):
  c, dataset = fa.paper_config('configs/mmcosine_ssw60.py', str(base / 'tfds_av'))
  assert dataset.name == 'ssw60/mmcosine' and dataset.num_classes == 60
  assert set(dataset.sources) == {'train', 'validation', 'test'}
  smoke = fa.paper_config('configs/mmcosine_ssw60.py', None, 'smoke', open_data=False)
  assert smoke.name == 'mmcosine_ssw60_smoke' and smoke.dataset.name == 'synthetic_av'
  for arg, fusion, method in (('gated', 'gated', 'mmcosine'), ('film,baseline', 'film', 'baseline'),
                              ('baseline,smoke', 'concat', 'baseline')):
    variant = fa.paper_config('configs/mmcosine_ssw60.py', None, arg, open_data=False)
    assert (variant.model.fusion, variant.method.name) == (fusion, method)
  with pytest.raises(ValueError, match='Unknown config argument'):
    fa.paper_config('configs/mmcosine_ssw60.py', None, 'film,gated', open_data=False)


def test_cli_build(fixture, tmp_path):
  """`python -m avjax.tfds build data_builders/ssw60` (the TF-free tfds command line)."""
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  repo = Path(__file__).resolve().parents[2]
  result = subprocess.run(
      [sys.executable, '-m', 'avjax.tfds', 'build', 'data_builders/ssw60',
       f'--manual_dir={fixture.root}', f'--data_dir={tmp_path}'],
      cwd=repo, capture_output=True, text=True, timeout=600,
      env=dict(os.environ, AVJAX_BUILD_WORKERS='0'))
  assert result.returncode == 0, result.stderr[-3000:]
  builder = tfds.builder('ssw60/mmcosine', data_dir=str(tmp_path))
  assert sum(s.num_examples for s in builder.info.splits.values()) == len(fixture.good)


def test_trains_and_reports_per_modality_on_the_build(built, base, tmp_path):
  """configs/mmcosine_ssw60.py at tiny widths on the generated build: fused and per-modality
  accuracy on the test videos (the silent one included)."""
  from avjax.train import train_and_evaluate  # pylint: disable=g-import-not-at-top
  c, _ = fa.paper_config('configs/mmcosine_ssw60.py', str(base / 'tfds_av'))
  c.model.av_resnet.widths = (4, 8, 8, 8)
  c.input.image_size, c.input.num_workers = 32, 0
  c.train.batch_size, c.train.num_epochs, c.train.progress = 2, 1, False
  c.mesh.data = 1
  result = train_and_evaluate(c, str(tmp_path / 'run'))
  assert {'accuracy', 'accuracy_audio', 'accuracy_visual'} <= set(result)
