"""voxceleb builder on a generated download in the VoxCeleb layouts (VoxCeleb2 aac/*.m4a +
mp4/*.mp4, VoxCeleb1 wav/*.wav, MMCosine's test_pairs.csv and the official veri_test2.txt):
splits by trial list, speaker labels, 16-bit PCM audio, 2 fps faces, trials in the metadata; the
three face front ends (MTCNN-aligned faces with a centre-crop fallback on videos that show a drawn
face or none, the centre crop, MMCosine's extracted face folders); then av_resnetse trained on it
and the trials scored (EER / minDCF) end to end."""

from __future__ import annotations

import fractions
from pathlib import Path

import av
import numpy as np
import pytest
import tensorflow_datasets as tfds

import data_builders.voxceleb as voxceleb
from data_builders.voxceleb.voxceleb_dataset_builder import read_trials, utterance_key
from tests.data_builders import fixtures as fx
from tests.data_builders import fixtures_av as fa

RATE = 16000
DEV = {'id00012': 3, 'id00015': 3, 'id00017': 2}  # VoxCeleb2 dev speakers: utterances.
VC2 = ('id00061', 'id00062')  # VoxCeleb2 test speakers (test_pairs.csv).
VC1 = ('id10270', 'id10271')  # VoxCeleb1 test speakers (veri_test2.txt).


def write_m4a(path: Path, wave: np.ndarray) -> None:
  """An AAC-in-MP4 audio file, as VoxCeleb2 distributes its audio."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with av.open(str(path), 'w', format='ipod') as out:
    stream = out.add_stream('aac', rate=RATE, layout='mono')
    for start in range(0, len(wave), 1024):
      frame = av.AudioFrame.from_ndarray(wave[None, start:start + 1024].astype(np.float32),
                                         format='fltp', layout='mono')
      frame.sample_rate, frame.pts = RATE, start
      frame.time_base = fractions.Fraction(1, RATE)
      for packet in stream.encode(frame):
        out.mux(packet)
    for packet in stream.encode():
      out.mux(packet)


def shows_face(seed: int) -> bool:
  """Whether utterance `seed`'s video shows a drawn face (else the plain moving square)."""
  return seed % 3 != 2


def _face_frame(seed: int, i: int) -> np.ndarray:
  """A drawn face drifting slowly right, its size depending on the utterance."""
  return fx.draw_face(224, 224, 100 + 2 * i, 112 + 4 * (seed % 3), 90 + 10 * (seed % 4))[0]


def _utterance(root: Path, key: str, seed: int, audio: str) -> None:
  seconds = 1.5 + 0.25 * (seed % 3)
  draw = (lambda i: _face_frame(seed, i)) if shows_face(seed) else None
  fx.write_video(root / 'mp4' / f'{key}.mp4', fmt='mp4', vcodec='libx264', acodec='aac',
                 size=(224, 224), fps=10, seconds=seconds, colour=((50 * seed) % 255, 80, 120),
                 wave=fx.tone(seconds, RATE, 150.0 + 40.0 * (seed % 5), seed), audio_rate=RATE,
                 draw=draw)
  wave = fx.tone(seconds, RATE, 150.0 + 40.0 * (seed % 5), seed)
  if audio == 'm4a':
    write_m4a(root / 'aac' / f'{key}.m4a', wave)
  elif audio == 'wav':
    fx.write_wav(root / 'wav' / f'{key}.wav', wave, RATE)


def make_voxceleb(root: Path) -> fx.Fixture:
  keys, seeds, seed = {}, {}, 0
  for speaker, count in DEV.items():
    for n in range(count):
      key = f'{speaker}/yt{speaker[-2:]}vid{n % 2}/{n + 1:05d}'
      _utterance(root / 'vox2_dev', key, seed, 'm4a' if n % 2 == 0 else '')  # Else: mp4 track.
      keys[key], seeds[key], seed = 'dev', seed, seed + 1
  for speakers, where, audio in ((VC2, 'vox2_test', 'm4a'), (VC1, 'vox1_test', 'wav')):
    for speaker in speakers:
      for n in range(2):
        key = f'{speaker}/yt{speaker[-2:]}vid{n}/{n + 1:05d}'
        _utterance(root / where, key, seed, audio)
        keys[key], seeds[key], seed = where, seed, seed + 1
  write_m4a(root / 'vox2_dev' / 'aac' / 'id00017/yt17nofac/00009.m4a', fx.tone(1.0, RATE, 200, 9))
  vc2 = [k for k, w in keys.items() if w == 'vox2_test']
  vc1 = [k for k, w in keys.items() if w == 'vox1_test']
  (root / 'test_pairs.csv').write_text(f'1,/{vc2[0]}.wav,/{vc2[1]}.wav\n0,/{vc2[0]}.wav,/{vc2[2]}.wav\n'
                                       f'1,/{vc2[2]}.wav,/{vc2[3]}.wav\n0,/{vc2[1]}.wav,/{vc2[3]}.wav\n')
  (root / 'veri_test2.txt').write_text(
      f'1 {vc1[0]}.wav {vc1[1]}.wav\n0 {vc1[0]}.wav {vc1[2]}.wav\n1 {vc1[2]}.wav {vc1[3]}.wav\n'
      f'0 {vc1[1]}.wav {vc1[3]}.wav\n1 {vc1[0]}.wav id10270/missing00/00009.wav\n')
  return fx.Fixture(root, sorted(keys), {'id00017/yt17nofac/00009': 'missing_counterpart',
                                         'id10270/missing00/00009': 'missing_counterpart'},
                    {'where': keys, 'seeds': seeds})


@pytest.fixture(scope='module')
def base(tmp_path_factory):
  return tmp_path_factory.mktemp('voxceleb')


@pytest.fixture(scope='module')
def fixture(base):
  return make_voxceleb(base / 'download')


@pytest.fixture(scope='module')
def built(fixture, base):
  return fa.build_once(voxceleb, 'mmcosine', fixture.root, base)


def test_keys_and_trial_lines(tmp_path):
  assert utterance_key('/id00012/abc_DEF-1/00003.wav') == 'id00012/abc_DEF-1/00003'
  assert utterance_key('vox2/dev/aac/id00012/abc/00003.m4a') == 'id00012/abc/00003'
  assert utterance_key('id00012/00003.wav') is None
  (tmp_path / 'a.csv').write_text('1,/id1/y/00001.wav,/id2/z/00002.wav\nheader,x,y\n')
  (tmp_path / 'b.txt').write_text('0 id1/y/00001.wav id3/q/00004.wav\n')
  assert read_trials(tmp_path / 'a.csv') == [(1, 'id1/y/00001', 'id2/z/00002')]
  assert read_trials(tmp_path / 'b.txt') == [(0, 'id1/y/00001', 'id3/q/00004')]


def test_splits_labels_media_and_trials(fixture, built):
  recs = {r['_id']: r for r in fa.records(built)}
  assert sorted(recs) == fixture.good
  assert fa.skipped(built) == fixture.bad
  meta = built.info.metadata
  assert meta['speakers'] == sorted(DEV) and meta['num_classes'] == 3
  where = fixture.info['where']
  split_of = {'vox2_test': 'vc2_test', 'vox1_test': 'vc1_test'}
  val = [k for k, r in recs.items() if r['_split'] == 'validation']
  assert sorted(k.split('/')[0] for k in val) == sorted(DEV)  # One held-out utterance each.
  for key, r in recs.items():
    speaker = key.split('/')[0]
    if where[key] == 'dev':
      assert r['_split'] in ('train', 'validation') and r['label'] == sorted(DEV).index(speaker)
      assert r['utterance'] == -1
    else:
      assert r['_split'] == split_of[where[key]] and r['label'] == -1
      assert meta['utterances'][r['utterance']] == key
    assert r['audio'].dtype == np.int16 and r['audio'].ndim == 1
    assert abs(len(r['audio']) / RATE - float(r['video_seconds'])) < 0.15
    assert len(r['frames']) >= 3  # 2 fps over 1.5-2 s.
  assert meta['trials_dropped'] == {'vc1': 1, 'vc2': 0}  # A VC1 trial names a missing utterance.
  vc2 = meta['trials']['vc2']
  assert vc2['label'] == [1, 0, 1, 0]
  first = [meta['utterances'][i] for i in vc2['first']]
  assert all(k.startswith(VC2) for k in first)


def test_config_features(tmp_path):
  assert tfds.builder_cls('voxceleb') is voxceleb.Builder
  info = tfds.builder('voxceleb', data_dir=str(tmp_path)).info
  assert info.features['audio'].shape == (None,) and info.features['audio'].np_dtype == np.int16


def test_trains_and_scores_trials(built, base, tmp_path):
  """configs/mmcosine_vox.py at tiny widths on the generated build: speaker accuracy on the
  held-out utterances, EER / minDCF on the VC1 trials, fused and per modality."""
  from avjax.evaluate import evaluate_workdir  # pylint: disable=g-import-not-at-top
  from avjax.train import train_and_evaluate  # pylint: disable=g-import-not-at-top
  c, dataset = fa.paper_config('configs/mmcosine_vox.py', str(base / 'tfds_av'))
  assert dataset.num_classes == 3 and set(dataset.sources) >= {'train', 'validation', 'vc1_test'}
  c.model.av_resnetse = {'audio_widths': (4, 8, 8, 8), 'face_widths': (4, 8, 8, 8),
                         'attention_dim': 4}
  c.input.image_size, c.input.num_workers = 32, 0
  c.input.audio_crop_seconds, c.input.eval_audio_crop_seconds = 0.5, 1.0
  c.train.batch_size, c.train.num_epochs, c.train.progress = 2, 1, False
  c.mesh.data = 1
  result = train_and_evaluate(c, str(tmp_path / 'run'))
  for key in ('eer_vc1', 'min_dcf_vc1', 'eer_vc1_audio', 'eer_vc1_visual'):
    assert 0.0 <= result[key] <= 100.0, key
  assert 'accuracy' not in result  # The test speakers are not among the training classes.
  _, split, _, report = evaluate_workdir(str(tmp_path / "run"), split="vc2_test")
  assert split == 'vc2_test' and 'eer_vc2' in report and 'eer_vc1' not in report


def test_mtcnn_faces_and_fallback(fixture, built):
  """mmcosine: every frame of a video with a drawn face is an aligned detector crop (detected
  again, its eyes and mouth sit on the ArcFace template x 2), every frame of a faceless video the
  centre crop; the build report tallies both."""
  from avjax.media import faces  # pylint: disable=g-import-not-at-top
  seeds = fixture.info['seeds']
  recs = fa.records(built)
  detected = fallback = 0
  for r in recs:
    flags = r['face_detected'].tolist()
    assert len(flags) == len(r['frames'])
    assert flags == [int(shows_face(seeds[r['_id']]))] * len(flags), r['_id']
    detected, fallback = detected + sum(flags), fallback + len(flags) - sum(flags)
  tallies = built.info.metadata['build_report']['tallies']
  assert tallies == {'frames_face_detected': detected, 'frames_centre_fallback': fallback}
  assert detected > 0 and fallback > 0
  assert 'MTCNN' in built.info.metadata['faces']
  face_rec = next(r for r in recs if r['face_detected'][0])
  again = faces.MTCNN().detect(face_rec['frames'][0])
  assert len(again) == 1
  error = np.abs(again[0].points - faces.template(224))[[0, 1, 3, 4]]
  assert error.max() < 12.0, error


def test_centre_config(fixture, base):
  built = fa.build_once(voxceleb, 'mmcosine_centre', fixture.root, base)
  recs = fa.records(built)
  assert sorted(r['_id'] for r in recs) == fixture.good
  assert 'face_detected' not in recs[0] and np.shape(recs[0]['frames'][0]) == (224, 224, 3)
  assert built.info.metadata['build_report']['tallies'] == {}


def test_face_folders_config(fixture, base):
  """mmcosine_folders on MMCosine's layout: <idX>#<ytid>#<NNNNN>.txt#000.mp4/0000000.png ... per
  utterance (train/ and test/ partitions), with the audio from the wav / m4a / mp4 files; an
  utterance without a folder is reported; the lowest chunk wins."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  manual = fx.link_tree(fixture.root, base / 'folders_download')
  missing = fixture.good[0]
  counts = {}
  for n, key in enumerate(fixture.good):
    if key == missing:
      continue
    speaker, ytid, utt = key.split('/')
    part = 'train' if fixture.info['where'][key] == 'dev' else 'test'
    counts[key] = 3 + n % 3
    for chunk, count in (('000', counts[key]), ('001', 1)):
      folder = manual / 'vox-png-2fps' / part / f'{speaker}#{ytid}#{utt}.txt#{chunk}.mp4'
      folder.mkdir(parents=True)
      for i in range(count):
        Image.fromarray(fx.draw_face(256, 256, 128, 128, 110)[0]).save(folder / f'{i:07d}.png')
  built = fa.build_once(voxceleb, 'mmcosine_folders', manual, base)
  recs = {r['_id']: r for r in fa.records(built)}
  assert sorted(recs) == sorted(counts)
  assert fa.skipped(built)[missing] == 'missing_counterpart'
  for key, r in recs.items():
    assert np.shape(r['frames']) == (counts[key], 224, 224, 3), key
    assert float(r['video_seconds']) == counts[key] / 2.0
    assert r['audio'].dtype == np.int16 and len(r['audio']) > RATE
  assert 'face_detected' not in next(iter(recs.values()))


def test_missing_detector_package_fails_in_one_line(fixture, base, monkeypatch):
  from avjax.media import faces  # pylint: disable=g-import-not-at-top
  def missing():
    raise faces.FacesUnavailable(f'the face detector needs the mtcnn weights: {faces.INSTALL_HINT}')
  monkeypatch.setattr(faces, 'load_weights', missing)
  with pytest.raises(RuntimeError, match=r"pip install 'avjax\[faces\]'") as e:
    voxceleb.build('mmcosine', data_dir=str(base / 'no_mtcnn'), manual_dir=str(fixture.root),
                   num_workers=0, validation_per_speaker=2)
  assert '\n' not in str(e.value)
