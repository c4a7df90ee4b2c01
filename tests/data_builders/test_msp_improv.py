"""msp_improv builder on a generated download: media found by utterance id in nested folders,
labels from the VAVL CSV and / or Evaluation.txt, the arousal flip applied exactly once, session
partitions, report-and-skip, strict, the CLI, and the log-mel against librosa."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import librosa
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import data_builders.msp_improv as mi
from data_builders.common.report import StrictBuildError
from tests.data_builders import fixtures as fx

REPO = Path(__file__).resolve().parents[2]
NO_MEDIA = fx.msp_id(1, 'S02A')


@pytest.fixture(scope='session')
def msp(tmp_path_factory) -> fx.Fixture:
  """The download (Audio/, Video/, Evaluation.txt) + VAVL CSV for partition 1 + feature files."""
  fixture = fx.make_msp_improv(tmp_path_factory.mktemp('msp_improv') / 'MSP-IMPROV')
  fx.add_vavl_msp(fixture.root, fixture.good + list(fixture.bad), partitions=(1,))
  fixture.info['features_bad'] = fx.add_features(fixture.root, sorted(fixture.good))
  return fixture


@pytest.fixture(scope='session')
def msp_label_file_only(msp, tmp_path_factory) -> Path:
  """Media and the corpus Evaluation.txt, no VAVL CSV, no features."""
  root = tmp_path_factory.mktemp('msp_improv_lf') / 'MSP-IMPROV'
  return fx.link_tree(msp.root, root, skip=('labels_consensus_EmoP_4class_D', 'features'))


@pytest.fixture(scope='session')
def built(tmp_path_factory):
  cache = {}

  def get(config: str, manual: Path, **overrides) -> tfds.core.DatasetBuilder:
    key = (config, str(manual), tuple(sorted(overrides.items())))
    if key not in cache:
      cache[key] = mi.build(config, data_dir=str(tmp_path_factory.mktemp('tfds')),
                            manual_dir=str(manual), num_workers=0, **overrides)
    return cache[key]

  return get


def records(builder: tfds.core.DatasetBuilder) -> list[dict]:
  out = []
  for split in builder.info.splits:
    src = builder.as_data_source(split=split)
    out += [dict(src[i], _split=split, _id=src[i]['id'].decode()) for i in range(len(src))]
  return sorted(out, key=lambda r: r['_id'])


def skipped(builder: tfds.core.DatasetBuilder) -> dict[str, str]:
  return {p['id']: p['kind'] for p in builder.info.metadata['build_report']['skipped']}


def label_file_values(uid: str) -> tuple[float, float, float]:
  """(A, V, D) the fixture wrote into Evaluation.txt (CSV values shifted)."""
  return tuple(round(x + 0.25, 6) if x < 4.5 else x for x in fx.msp_attributes(uid))


def test_registered_configs_and_features(tmp_path):
  assert tfds.builder_cls('msp_improv') is mi.Builder
  names = set(mi.Builder.builder_configs)
  assert names == {f'{k}_p{p}' for k in ('logmel', 'features') for p in range(1, 6)}
  b = tfds.builder('msp_improv', data_dir=str(tmp_path))
  assert b.builder_config.name == 'logmel_p1'
  f = b.info.features
  assert f['audio'].shape == (128, 601) and f['frames'].shape == (8, 224, 224, 3)
  assert f['attributes'].shape == (3,) and f['attributes'].np_dtype == np.float32
  assert f['label'].names == ['neutral', 'sad', 'angry', 'happy']
  f = tfds.builder('msp_improv/features_p3', data_dir=str(tmp_path)).info.features
  assert f['audio_features'].shape == (None, 1024) and f['visual_features'].shape == (None, 1408)
  assert mi.canonical_id('x/UTD-IMPROV-S03H-M01-S-FM03.avi') == 'MSP-IMPROV-S03H-M01-S-FM03'
  assert mi.parse_id('MSP-IMPROV-S03H-M01-S-FM03')['session'] == 1


def test_logmel_from_csv_and_label_file(msp, built):
  b = built('logmel_p1', msp.root)
  recs = records(b)
  assert [r['_id'] for r in recs] == sorted(msp.good)
  assert skipped(b) == msp.bad  # Corrupt avi, wav without avi, labelled without media.
  meta = b.info.metadata
  assert meta['split_scheme'] == 'vavl_csv' and meta['label_file'] == 'Evaluation.txt'
  assert meta['split_sessions'] == {'test': [5], 'train': [1, 2, 3, 6], 'validation': [4]}
  for r in recs:
    session = int(r['_id'].split('-')[3][1:])
    assert int(r['session']) == session
    assert r['_split'] == {4: 'validation', 5: 'test'}.get(session, 'train')
    act, val, dom = fx.msp_attributes(r['_id'])  # The CSV wins over Evaluation.txt.
    np.testing.assert_allclose(r['attributes_raw'], [act, val, dom], rtol=1e-6)
    np.testing.assert_allclose(r['attributes'], [(5 - act) / 4, (val - 1) / 4, (dom - 1) / 4],
                               atol=1e-6)  # Arousal flipped once: (6 - act - 1) / 4.
    assert np.all((r['attributes'] >= 0) & (r['attributes'] <= 1))
    cat = msp.info['categories'][r['_id']]
    assert r['label'] == {'N': 0, 'S': 1, 'A': 2, 'H': 3}.get(cat, -1)
    assert r['target_emotion'] == 'NSAH'.index(r['_id'].split('-')[2][-1])
    assert r['audio'].shape == (128, 601) and r['audio'].dtype == np.float32
    assert np.asarray(r['frames']).shape == (8, 224, 224, 3)
  assert sum(r['label'] == -1 for r in recs) == 1  # The 'O' (no agreement) utterance.
  assert any(r['label'] != r['target_emotion'] and r['label'] >= 0 for r in recs)


def test_logmel_matches_librosa_and_frames(msp, built):
  """librosa.load(sr=16000), np.tile to 96000, mel 128 / 512 / win 400 / hop 160, log(S + 1e-6);
  frames: 8 segment centres, centred square, 224x224."""
  recs = records(built('logmel_p1', msp.root))
  for r in recs[::7]:
    wav = next(msp.root.rglob(f'{r["_id"]}.wav'))
    y, _ = librosa.load(wav, sr=16000)
    x = np.tile(y, -(-96000 // len(y)))[:96000]
    mel = librosa.feature.melspectrogram(y=x, sr=16000, n_fft=512, win_length=400,
                                         hop_length=160, n_mels=128)
    np.testing.assert_allclose(r['audio'], np.log(mel + 1e-6), atol=2e-3, rtol=1e-4)
    with av.open(str(next(msp.root.rglob(f'{r["_id"]}.avi')))) as c:
      frames = [f.to_ndarray(format='rgb24') for f in c.decode(video=0)]
    n = len(frames)
    for k in (0, 7):
      img = frames[min(int((k + 0.5) * n / 8), n - 1)][:, 40:280]  # 320x240: centred 240 square.
      want = np.asarray(Image.fromarray(img).resize((224, 224), Image.BILINEAR), np.float32)
      assert np.abs(r['frames'][k].astype(np.float32) - want).mean() < 4.0


def test_label_file_only_uses_session_rule(msp, msp_label_file_only, built):
  b = built('logmel_p2', msp_label_file_only)
  meta = b.info.metadata
  assert meta['split_scheme'] == 'session_rule' and meta['split_file'] is None
  assert meta['split_sessions'] == {'test': [3], 'train': [1, 4, 5, 6], 'validation': [2]}
  recs = records(b)
  assert len(recs) == len(msp.good) and skipped(b) == msp.bad
  for r in recs:
    act, val, dom = label_file_values(r['_id'])
    np.testing.assert_allclose(r['attributes_raw'], [act, val, dom], rtol=1e-6)
    np.testing.assert_allclose(r['attributes'], [(5 - act) / 4, (val - 1) / 4, (dom - 1) / 4],
                               atol=1e-6)


def test_features_flip_applied_exactly_once(msp, built):
  flipped = records(built('features_p1', msp.root))
  plain = records(built('features_p1', msp.root, flip_arousal=False))
  assert [r['_id'] for r in flipped] == [r['_id'] for r in plain]
  for f, p in zip(flipped, plain):
    act = float(f['attributes_raw'][0])
    assert f['attributes'][0] == pytest.approx((6 - act - 1) / 4, abs=1e-6)
    assert p['attributes'][0] == pytest.approx((act - 1) / 4, abs=1e-6)
    assert f['attributes'][0] + p['attributes'][0] == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(f['attributes'][1:], p['attributes'][1:])


def test_features_records_and_problems(msp, built):
  b = built('features_p1', msp.root)
  bad = dict(msp.info['features_bad'], **{NO_MEDIA: 'missing_media'})
  # Media problems of the logmel config do not concern feature files (except the missing one).
  bad.update({u: 'missing_media' for u, k in msp.bad.items() if k != 'missing_media'})
  assert skipped(b) == bad
  ids = sorted(msp.good)
  for r in records(b):
    i = ids.index(r['_id'])
    assert r['audio_features'].shape == (20 + i, 1024)
    assert r['visual_features'].shape == (12 + i, 1408)
    np.testing.assert_array_equal(
        r['audio_features'], np.load(msp.root / 'features' / 'audio' / f'{r["_id"]}.npy'))
  # Categorical-only variant from the scenario's target emotion.
  t = built('features_p1', msp.root, require_label=True, label_source='target')
  assert all(r['label'] == r['target_emotion'] >= 0 for r in records(t))
  c = built('features_p1', msp.root, require_label=True)
  assert c.info.metadata['build_report']['excluded'] == {'no_4class_label': 1}


def test_strict_fails(msp, tmp_path):
  with pytest.raises(StrictBuildError, match='MSP-IMPROV-'):
    mi.build('features_p1', data_dir=str(tmp_path), manual_dir=str(msp.root), num_workers=0,
             strict=True)
  assert list((tmp_path / 'msp_improv' / 'features_p1').iterdir()) == []


def test_cli_build(msp, built, tmp_path):
  env = dict(os.environ, AVJAX_BUILD_WORKERS='0')
  result = subprocess.run(
      [sys.executable, '-m', 'avjax.tfds', 'build', 'data_builders/msp_improv',
       f'--manual_dir={msp.root}', '--config=features_p1', f'--data_dir={tmp_path}'],
      cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  cli = records(tfds.builder('msp_improv/features_p1', data_dir=str(tmp_path)))
  ours = records(built('features_p1', msp.root))
  assert [r['_id'] for r in cli] == [r['_id'] for r in ours]
  for x, y in zip(cli, ours):
    np.testing.assert_array_equal(x['attributes'], y['attributes'])
    np.testing.assert_array_equal(x['visual_features'], y['visual_features'])
