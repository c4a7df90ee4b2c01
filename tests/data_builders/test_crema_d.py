"""crema_d builder on a generated download: every config, the three split schemes, report-and-skip,
strict, atomic builds, the CLI, and the spectrograms against independent reference computations."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import av
import librosa
import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import tensorflow_datasets as tfds
from PIL import Image

import data_builders.crema_d as cd
from data_builders.common.parallel import ClipRunner
from data_builders.common.report import StrictBuildError
from tests.data_builders import fixtures as fx

REPO = Path(__file__).resolve().parents[2]
CMVQVAE_BAD = {'1002_TIE_SAD_XX': 'corrupt', '1003_TIE_FEA_XX': 'truncated',
               '1004_TIE_HAP_XX': 'missing_counterpart'}


@pytest.fixture(scope='session')
def crema(tmp_path_factory) -> fx.Fixture:
  return fx.make_crema_d(tmp_path_factory.mktemp('crema_d') / 'CREMA-D')


@pytest.fixture(scope='session')
def crema_vavl(crema, tmp_path_factory) -> tuple[Path, dict, dict]:
  """The download + VAVL partition CSVs (1 and 5) + feature files."""
  root = fx.link_tree(crema.root, tmp_path_factory.mktemp('crema_d_vavl') / 'CREMA-D')
  return root, fx.add_vavl_crema_d(root, crema.good), fx.add_features(root, crema.good)


@pytest.fixture(scope='session')
def crema_ogm(crema, tmp_path_factory) -> tuple[Path, dict]:
  root = fx.link_tree(crema.root, tmp_path_factory.mktemp('crema_d_ogm') / 'CREMA-D')
  return root, fx.add_ogm_ge_splits(root, crema.good)


@pytest.fixture(scope='session')
def built(tmp_path_factory):
  """(config, manual_dir, **overrides) -> builder, each built once per session, in-process."""
  cache = {}

  def get(config: str, manual: Path, **overrides) -> tfds.core.DatasetBuilder:
    key = (config, str(manual), tuple(sorted(overrides.items())))
    if key not in cache:
      cache[key] = cd.build(config, data_dir=str(tmp_path_factory.mktemp('tfds')),
                            manual_dir=str(manual), num_workers=0, **overrides)
    return cache[key]

  return get


def records(builder: tfds.core.DatasetBuilder) -> list[dict]:
  """All records of all splits (with '_split'), sorted by id."""
  out = []
  for split in builder.info.splits:
    src = builder.as_data_source(split=split)
    out += [dict(src[i], _split=split, _id=src[i]['id'].decode()) for i in range(len(src))]
  return sorted(out, key=lambda r: r['_id'])


def skipped(builder: tfds.core.DatasetBuilder) -> dict[str, str]:
  return {p['id']: p['kind'] for p in builder.info.metadata['build_report']['skipped']}


def video_frames(path: Path) -> list[np.ndarray]:
  """Every frame of the first video stream, RGB, decoded independently of avjax."""
  with av.open(str(path)) as c:
    return [f.to_ndarray(format='rgb24') for f in c.decode(video=0)]


def resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
  return np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR)).astype(np.float32)


def test_registered_configs_and_features(tmp_path):
  assert tfds.builder_cls('crema_d') is cd.Builder
  b = tfds.builder('crema_d', data_dir=str(tmp_path))
  assert b.builder_config.name == 'ogm_ge'
  assert b.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  assert set(cd.Builder.builder_configs) == {'ogm_ge', 'mmcosine', 'cmvqvae', 'features'}
  expect = {'ogm_ge': ((257, 188), (None, 256, 341)), 'mmcosine': ((257, 299), (1, 256, 341)),
            'cmvqvae': ((256, 256), (31, 128, 128))}
  for name, (audio, (t, h, w)) in expect.items():
    f = tfds.builder(f'crema_d/{name}', data_dir=str(tmp_path)).info.features
    assert f['audio'].shape == audio and f['audio'].np_dtype == np.float32
    assert f['frames'].shape == (t, h, w, 3) and f['frames'].np_dtype == np.uint8
    assert f['label'].names == list(cd.CLASS_NAMES) == ['angry', 'disgust', 'fear', 'happy',
                                                          'neutral', 'sad']
  info = tfds.builder('crema_d/features', data_dir=str(tmp_path)).info
  assert info.features['audio_features'].shape == (None, 1024)
  assert info.features['visual_features'].shape == (None, 1408)
  assert 'audio' not in info.features and 'frames' not in info.features
  assert info.metadata['config']['split_order'] == ['vavl', 'speaker']
  assert info.metadata['from_vavl_label'] == [0, 5, 1, 2, 4, 3]
  assert info.metadata['from_ogm_ge_label'] == [4, 3, 5, 2, 1, 0]
  v = cd.make_config('ogm_ge', jpeg_quality=95)
  assert v.name == 'ogm_ge-jpeg_quality95' and v.jpeg_quality == 95
  with pytest.raises(ValueError, match='unknown config field'):
    cd.make_config('ogm_ge', jpeg_qualty=95)


def test_speaker_assignment_is_speaker_independent():
  actors = list(range(1001, 1092))
  a = cd.speaker_assignment(actors, (63, 14, 14), 0)
  assert a == cd.speaker_assignment(list(reversed(actors)), (63, 14, 14), 0)
  counts = {s: sum(v == s for v in a.values()) for s in ('train', 'validation', 'test')}
  assert counts == {'train': 63, 'validation': 14, 'test': 14}
  assert a != cd.speaker_assignment(actors, (63, 14, 14), 1)


def test_ogm_ge_records_labels_and_speaker_split(crema, built):
  b = built('ogm_ge', crema.root)
  recs = records(b)
  assert [r['_id'] for r in recs] == sorted(crema.good)
  assert skipped(b) == crema.bad  # Empty, truncated (wav, flv), missing flv, mismatch, corrupt.
  report = b.info.metadata['build_report']
  assert report['num_skipped'] == 6 and sum(report['num_examples'].values()) == 24
  assert all(p['files'] for p in report['skipped'])
  # Speaker-independent default split: no actor in two splits.
  actors = {s: {int(r['actor']) for r in recs if r['_split'] == s} for s in b.info.splits}
  assert b.info.metadata['split_scheme'] == 'speaker'
  assert sorted(len(a) for a in actors.values()) == [1, 1, 2]
  assert set().union(*actors.values()) == set(fx.CREMA_ACTORS)
  assert sum(len(a) for a in actors.values()) == 4
  assert b.info.metadata['split_actors'] == {s: sorted(a) for s, a in actors.items()}
  demo = {1001: ('Male', 30), 1002: ('Female', 31), 1003: ('Male', 32), 1004: ('Female', 33)}
  for r in recs:
    actor, sentence, emotion, level = r['_id'].split('_')
    assert r['label'] == cd.EMOTIONS.index(emotion) and int(r['actor']) == int(actor)
    assert cd.SENTENCES[r['sentence']] == sentence and cd.INTENSITIES[r['intensity']] == level
    assert (r['sex'].decode(), int(r['age'])) == demo[int(actor)]
    assert r['multimodal_vote'].decode() == emotion[0]
    assert not r['has_soft_label'] and r['soft_label'].argmax() == r['label']
    assert r['audio'].shape == (257, 188) and r['audio'].dtype == np.float32
    frames = np.asarray(r['frames'])
    assert frames.dtype == np.uint8 and frames.shape[1:] == (256, 341, 3)
    n_video = int(round(float(r['video_seconds']) * 30))
    assert len(frames) == math.floor((n_video - 1) / 30 + 1e-3) + 1  # First frame of each second.
    assert abs(float(r['audio_seconds']) - float(r['video_seconds'])) < 0.1
  # The frames are the first frame of every second of the flv (JPEG-close).
  r = recs[0]
  ref = video_frames(crema.root / 'VideoFlash' / f'{r["_id"]}.flv')
  for k, frame in enumerate(r['frames']):
    assert np.abs(frame.astype(np.float32) - resize(ref[30 * k], 256, 341)).mean() < 3.0
  # What the trainer makes of a record (avjax.data.transforms reads frames as (T0, H, W, 3)).
  from avjax.data.transforms import ExampleTransform
  ex = ExampleTransform(train=True, num_frames=1, image_size=224)(r, np.random.default_rng(0))
  assert ex['audio'].shape == (257, 188, 1) and ex['visual'].shape == (1, 224, 224, 3)


def test_ogm_ge_spectrogram_matches_reference(crema, built):
  """librosa.load(sr=22050), np.tile(x, 3)[:66150], clip, STFT 512 / 353, log(|S| + 1e-7)."""
  for r in records(built('ogm_ge', crema.root))[::5]:
    y, _ = librosa.load(crema.root / 'AudioWAV' / f'{r["_id"]}.wav', sr=22050)
    assert 3 * len(y) >= 66150
    x = np.clip(np.tile(y, 3)[:66150], -1, 1)
    ref = np.log(np.abs(librosa.stft(x, n_fft=512, hop_length=353)) + 1e-7)
    np.testing.assert_allclose(r['audio'], ref, atol=2e-4, rtol=1e-5)


def test_mmcosine_spectrogram_and_centre_frame(crema, built):
  """soundfile (float64), tile to 48000, clip, scipy PSD 512 / 353, log(P + 1e-7), z-score."""
  b = built('mmcosine', crema.root)
  recs = records(b)
  assert len(recs) == 24 and skipped(b) == crema.bad
  for r in recs[::6]:
    x, rate = sf.read(crema.root / 'AudioWAV' / f'{r["_id"]}.wav')
    assert rate == 16000
    x = np.clip(np.tile(x, -(-48000 // len(x)))[:48000], -1, 1)
    _, _, p = scipy.signal.spectrogram(x, fs=16000, nperseg=512, noverlap=353)
    ref = np.log(p + 1e-7)
    ref = (ref - ref.mean()) / (ref.std() + 1e-9)
    np.testing.assert_allclose(r['audio'], ref, atol=1e-4)
    assert abs(r['audio'].mean()) < 1e-4 and abs(r['audio'].std() - 1) < 1e-3
    ref_frames = video_frames(crema.root / 'VideoFlash' / f'{r["_id"]}.flv')
    assert len(r['frames']) == 1
    centre = resize(ref_frames[len(ref_frames) // 2], 256, 341)
    assert np.abs(r['frames'][0].astype(np.float32) - centre).mean() < 3.0


def test_cmvqvae_mel_from_flv_audio_and_cropped_frames(crema, built):
  """The flv's own audio at 44.1 kHz: mel 256 / n_fft 2048 / win 512 / hop 353, power_to_db(max),
  256 frames (padded with -80 dB); frames centre +- 15, rows 0:280, columns 100:380, 128x128."""
  b = built('cmvqvae', crema.root)
  recs = records(b)
  assert skipped(b) == CMVQVAE_BAD  # Needs only the flv: the wav defects do not matter here.
  assert len(recs) == 27
  lengths = []
  for r in recs[::4]:
    path = crema.root / 'VideoFlash' / f'{r["_id"]}.flv'
    with av.open(str(path)) as c:
      rate = c.streams.audio[0].rate
      y = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    assert rate == 44100
    mel = librosa.feature.melspectrogram(y=y.astype(np.float32), sr=44100, n_fft=2048,
                                         win_length=512, hop_length=353, n_mels=256)
    ref = librosa.power_to_db(mel, ref=np.max)[:, :256]
    lengths.append(ref.shape[1])
    ref = np.pad(ref, ((0, 0), (0, 256 - ref.shape[1])), constant_values=-80.0)
    np.testing.assert_allclose(r['audio'], ref, atol=1e-3)
    frames = video_frames(path)
    c = len(frames) // 2
    assert len(r['frames']) == 31
    for k in (0, 15, 30):
      i = min(max(c - 15 + k, 0), len(frames) - 1)
      want = resize(frames[i][0:280, 100:380], 128, 128)
      assert np.abs(r['frames'][k].astype(np.float32) - want).mean() < 4.0
  assert min(lengths) < 256 <= max(lengths)  # Both padding and cropping were exercised.


def test_features_config_with_vavl_partitions(crema, crema_vavl, built):
  root, vavl, bad = crema_vavl
  b = built('features', root)
  meta = b.info.metadata
  assert meta['split_scheme'] == 'vavl' and meta['vavl_partition'] == 5
  assert meta['split_files'] == ['labels_consensus_6class_M/label_consensus_5.csv']
  want_bad = dict(bad, **{'1004_WSI_SAD_XX': 'missing_media'})
  assert skipped(b) == want_bad
  assert meta['build_report']['excluded'] == {'not_in_vavl_split': 1}  # good[-1] is not listed.
  recs = records(b)
  assert {r['_id'] for r in recs} == set(crema.good[:-1]) - set(bad)
  for r in recs:
    split = {1001: 'test', 1002: 'validation'}.get(int(r['actor']), 'train')
    assert r['_split'] == split
    assert r['has_soft_label']
    soft = dict(zip(fx.VAVL_COLUMNS, fx.vavl_soft_label(r['_id'])))
    np.testing.assert_allclose(r['soft_label'], [soft[c] for c in cd.CLASS_NAMES], atol=1e-6)
    i = crema.good.index(r['_id'])
    a = np.load(root / 'features' / 'audio' / f'{r["_id"]}.npy')
    v = np.load(root / 'features' / 'visual' / f'{r["_id"]}.npy')
    assert r['audio_features'].shape == (20 + i, 1024)
    assert r['visual_features'].shape == (12 + i, 1408)
    np.testing.assert_array_equal(r['audio_features'], a)
    np.testing.assert_array_equal(r['visual_features'], v)
  # Another partition is another config variant; partition 1 swaps the test / validation actors.
  b1 = built('features', root, vavl_partition=1)
  assert b1.builder_config.name == 'features-vavl_partition1'
  assert b1.info.metadata['split_actors']['test'] == [1002]


def test_ogm_ge_csv_split_is_clip_level(crema, crema_ogm, built):
  root, splits = crema_ogm
  b = built('mmcosine', root)
  meta = b.info.metadata
  assert meta['split_scheme'] == 'ogm_ge' and set(b.info.splits) == {'train', 'test'}
  recs = records(b)
  for split in ('train', 'test'):
    want = set(splits[split]) - {'1004_WSI_SAD_XX'}
    assert {r['_id'] for r in recs if r['_split'] == split} == want
  assert skipped(b) == {'1004_WSI_SAD_XX': 'missing_media'}  # Defective clips are in no split.
  assert meta['build_report']['excluded'] == {'not_in_ogm_ge_split': 7}
  assert set(meta['split_actors']['train']) & set(meta['split_actors']['test'])  # Clip level.


def test_strict_fails_and_leaves_no_dataset(crema, tmp_path, built):
  # A planning problem (the missing flv) fails at once ...
  with pytest.raises(StrictBuildError, match='1004_TIE_HAP_XX'):
    cd.build('mmcosine', data_dir=str(tmp_path / 'a'), manual_dir=str(crema.root),
             num_workers=0, strict=True)
  # ... and a decoding problem in the middle of a split, after records were written.
  manual = fx.mirror_tree(crema.root, tmp_path / 'dl',
                          skip_stems=tuple(n for n in crema.bad if n != '1002_TIE_SAD_XX'))
  os.environ['AVJAX_BUILD_STRICT'] = '1'
  try:
    with pytest.raises(StrictBuildError, match=r'1002_TIE_SAD_XX: corrupt'):
      cd.build('mmcosine', data_dir=str(tmp_path / 'b'), manual_dir=str(manual), num_workers=0)
  finally:
    del os.environ['AVJAX_BUILD_STRICT']
  for data_dir in (tmp_path / 'a', tmp_path / 'b'):
    left = [p.name for p in (data_dir / 'crema_d' / 'mmcosine').iterdir()]
    assert left == [], left  # Neither the version folder nor an incomplete.* one.
  b = cd.build('mmcosine', data_dir=str(tmp_path / 'b'), manual_dir=str(manual), num_workers=0)
  assert skipped(b) == {'1002_TIE_SAD_XX': 'corrupt'} and len(records(b)) == 24


_KILL_MID_BUILD = """
import os, signal, sys
import data_builders.crema_d as cd
from data_builders.common import parallel
run = parallel.ClipRunner.run
def killing_run(self, jobs, desc=''):
  for i, item in enumerate(run(self, jobs, desc)):
    if i == 5:
      os.kill(os.getpid(), signal.SIGKILL)  # As a power cut or the OOM killer would.
    yield item
parallel.ClipRunner.run = killing_run
cd.build('mmcosine', data_dir=sys.argv[1], manual_dir=sys.argv[2], num_workers=0)
"""


def test_killed_build_leaves_no_dataset_and_reruns(crema, tmp_path):
  result = subprocess.run([sys.executable, '-c', _KILL_MID_BUILD, str(tmp_path), str(crema.root)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == -9, result.stderr[-2000:]
  left = [p.name for p in (tmp_path / 'crema_d' / 'mmcosine').iterdir()]
  assert left and all(n.startswith('incomplete.') for n in left), left  # Never '1.0.0'.
  assert not tfds.builder('crema_d/mmcosine', data_dir=str(tmp_path)).is_prepared()
  b = cd.build('mmcosine', data_dir=str(tmp_path), manual_dir=str(crema.root), num_workers=0)
  assert b.is_prepared() and len(records(b)) == 24


def test_cli_build_with_workers_matches_in_process(crema, built, tmp_path):
  """`python -m avjax.tfds build data_builders/crema_d` (the tfds CLI without TensorFlow), with 2
  decoding workers, gives the same records as the in-process build."""
  env = dict(os.environ, AVJAX_BUILD_WORKERS='2')
  result = subprocess.run(
      [sys.executable, '-m', 'avjax.tfds', 'build', 'data_builders/crema_d',
       f'--manual_dir={crema.root}', '--config=ogm_ge', f'--data_dir={tmp_path}'],
      cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert '1002_TIE_SAD_XX [corrupt]' in result.stdout + result.stderr  # End-of-build summary.
  cli = tfds.builder('crema_d/ogm_ge', data_dir=str(tmp_path))
  assert skipped(cli) == crema.bad
  ours = records(built('ogm_ge', crema.root))
  theirs = records(cli)
  assert [r['_id'] for r in theirs] == [r['_id'] for r in ours]
  for x, y in zip(ours, theirs):
    np.testing.assert_array_equal(x['audio'], y['audio'])
    np.testing.assert_array_equal(np.asarray(x['frames']), np.asarray(y['frames']))
    assert x['_split'] == y['_split'] and x['label'] == y['label']
  assert 'tensorflow' not in {m.split('.')[0] for m in sys.modules}


def test_worker_crash_is_reported_and_other_clips_survive():
  """A clip that kills its worker process (a decoder segfault) is retried alone, reported as
  'worker_crash' when it kills the fresh worker too; the clips in flight with it still succeed."""
  jobs = [(f'clip{i}', {'x': str(i), 'crash': 'yes' if i == 2 else None}) for i in range(6)]
  with ClipRunner({}, 2, target='tests.data_builders.fixtures:crash_on_marker',
                  warm_up=False) as runner:
    results = dict(runner.run(jobs))
  assert sorted(results) == [f'clip{i}' for i in range(6)]
  assert results['clip2'][:2] == ('bad', 'worker_crash')
  assert all(results[f'clip{i}'] == ('ok', {'x': str(i)}) for i in (0, 1, 3, 4, 5))


def test_named_config_source_survives_pickling_for_grain_workers(crema, built):
  """grain sends the data source to worker processes: a named config must round-trip."""
  import pickle
  source = built('mmcosine', crema.root).as_data_source(split='train')
  clone = pickle.loads(pickle.dumps(source))
  assert len(clone) == len(source) and clone[0]['id'] == source[0]['id']


def test_features_config_without_feature_files_names_what_it_reads(crema, tmp_path):
  """The clips are there, their feature files are not: the error says what the config reads."""
  with pytest.raises(RuntimeError, match=r"found no usable clip .*config 'features' reads, per "
                                         r"clip, features/audio/<clip>.npy, "
                                         r"features/visual/<clip>.npy"):
    cd.build('features', data_dir=str(tmp_path), manual_dir=str(crema.root), num_workers=0)


def test_build_summary_names_the_split_scheme(crema, built):
  builder = built('mmcosine', crema.root)
  scheme = builder.info.metadata['split_scheme']
  assert f'split scheme: {scheme}' in builder._summary()  # pylint: disable=protected-access
