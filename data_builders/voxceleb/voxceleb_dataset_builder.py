"""voxceleb: VoxCeleb2 speaker identification for training, VoxCeleb1 / VoxCeleb2 verification
trials for evaluation, audio with face frames (MMCosine's VoxCeleb task, main_vox2.py).

Manual download (see README.md), any subset of, below one folder:
  VoxCeleb2 dev and test: aac/<idX>/<ytid>/<NNNNN>.m4a and mp4/<idX>/<ytid>/<NNNNN>.mp4 (the
    official face-centred 224x224 tracks, which carry the audio too);
  VoxCeleb1 test: wav/<idX>/<ytid>/<NNNNN>.wav and that utterance's video as an mp4 of the same
    <idX>/<ytid>/<NNNNN> (VoxCeleb1 publishes no videos today; see README.md);
  trial lists: MMCosine's data/vox/veri_test.csv (VC1, label,idA/yt/N.wav,idB/yt/N.wav) and
    test_pairs.csv (VC2), else the official veri_test2.txt / veri_test.txt (label a b) for VC1.
An utterance is keyed <idX>/<ytid>/<NNNNN>. Utterances named by a trial list go to that list's split
('vc1_test', 'vc2_test'); the others of speakers not in any trial list are the training pool, of
which `validation_per_speaker` per speaker (seeded) form 'validation' (speaker identification
accuracy). Trials whose utterances could not be built are dropped and counted.

Records: 'label' (the speaker's index among the sorted training speakers; -1 for evaluation-only
speakers), 'speaker' (idX), 'utterance' (the key's index in metadata['utterances'], the sorted
keys of the trial splits; -1 in training), 'audio' (16 kHz 16-bit PCM, the whole utterance),
'frames' (faces at 2 fps, 224x224 JPEG, by the config's face_source: 'mtcnn' detects each frame's
face with MTCNN and aligns it on the ArcFace 5-point template, falling back to the centre 60% of
the official face-centred frame when no face is found ('face_detected' per frame says which);
'centre' takes the centre crop always; 'folders' reads already-extracted face images in MMCosine's
folder layout. MMCosine itself used RetinaFace, whose weights are downloaded at run time: see
README.md and docs/deviations.md). Metadata 'trials': list name -> {'label', 'first', 'second'}
(utterance indices), 'trials_dropped'; build_report 'tallies': frames with a detected face and
frames that fell back.

No TensorFlow: Tensor / ClassLabel-free int labels / Text / Sequence(Image), ArrayRecord files.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import sys
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

try:
  import data_builders.common  # noqa: F401
except ImportError:  # `tfds build data_builders/voxceleb` from a source checkout.
  sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from avjax.media import faces as faces_lib
from data_builders.common.builder import Clip, ClipBuilder, Plan
from data_builders.common.config import ClipConfig, described
from data_builders.common import files as files_lib
from data_builders.common.report import BuildReport
from data_builders.common.faces import FACE_SOURCES, IMAGE_EXTS

KEY = re.compile(r'(id\d+)/([^/]+)/(\d+)$')
# MMCosine's face folder names (FOMM video-preprocessing): <idX>#<ytid>#<NNNNN>.txt#<chunk>.mp4
FACE_FOLDER = re.compile(r'(id\d+)#([^#]+)#(\d+)\.txt#(\d+)\.mp4$')
# (trial list name, split, file names in order of preference).
TRIAL_LISTS = (('vc1', 'vc1_test', ('veri_test.csv', 'veri_test2.txt', 'veri_test.txt')),
               ('vc2', 'vc2_test', ('test_pairs.csv',)))


@dataclasses.dataclass(eq=False)
class VoxCelebConfig(ClipConfig):
  """Front end (see ClipConfig) plus the face source and the validation share.

  face_source: 'mtcnn' (detected, 5-point aligned faces; the frame_crop (top, bottom, width) of
    the official face-centred 224x224 frame where no face is found), 'centre' (that crop always)
    or 'folders' (face images already extracted, in MMCosine's <idX>#<ytid>#<NNNNN>.txt#000.mp4/
    0000000.png folders anywhere under the manual folder; the audio still comes from the
    wav / m4a / mp4 files).
  validation_per_speaker: training-pool utterances per speaker held out as 'validation' (speakers
    with at least two), drawn with validation_seed.
  """

  face_source: str = 'mtcnn'
  validation_per_speaker: int = 1
  validation_seed: int = 0
  audio_exts: tuple[str, ...] = ('.m4a', '.wav')
  video_exts: tuple[str, ...] = ('.mp4',)

  def validate(self) -> None:
    super().validate()
    if self.face_source not in FACE_SOURCES:
      raise ValueError(f'{self.name}: face_source must be one of {FACE_SOURCES}.')
    if self.frame_mode != 'fps':
      raise ValueError(f"{self.name}: voxceleb keeps faces at frame_fps (frame_mode 'fps').")


def _face_crop(share: float, size: int = 224) -> tuple[int, int, int]:
  """ClipConfig.frame_crop (top, bottom, width) of the centre `share` of a size x size frame."""
  side = int(round(share * size))
  top = (size - side) // 2
  return top, top + side, side


_MMCOSINE = dict(audio_source='audio', sample_rate=16000, audio_frontend='waveform',
                 audio_dtype='int16', frame_mode='fps', frame_fps=2.0, max_frames=0,
                 frame_crop=_face_crop(0.6), frame_size=(224, 224), max_av_mismatch_s=0.0)
_AUDIO = ('16 kHz mono 16-bit PCM of the whole utterance (m4a / wav, else the mp4 track)')
BUILDER_CONFIGS = [
    described(
        VoxCelebConfig, 'mmcosine',
        f'MMCosine VoxCeleb: {_AUDIO}; faces at 2 fps detected by MTCNN (the mtcnn 1.0.0 '
        'weights) and aligned on the ArcFace 5-point template at 224x224 JPEG, the centre 60% of '
        'the official 224x224 face track frame where no face is found.',
        face_source='mtcnn', **_MMCOSINE),
    described(
        VoxCelebConfig, 'mmcosine_centre',
        f'MMCosine VoxCeleb without a detector: {_AUDIO}; faces at 2 fps: the centre 60% of each '
        'official 224x224 face track frame, resized to 224x224 JPEG.',
        face_source='centre', **_MMCOSINE),
    described(
        VoxCelebConfig, 'mmcosine_folders',
        f'MMCosine VoxCeleb from already-extracted faces: {_AUDIO}; faces: every image of the '
        "utterance's <idX>#<ytid>#<NNNNN>.txt#000.mp4 folder (MMCosine's layout, 2 fps), resized "
        'to 224x224 JPEG.',
        face_source='folders', **_MMCOSINE),
]


def utterance_key(path: str) -> str | None:
  """'idX/ytid/NNNNN' of a path ending in idX/ytid/NNNNN[.ext] (leading '/' and extension off)."""
  stem = re.sub(r'\.[A-Za-z0-9]+$', '', path.strip().lstrip('/'))
  match = KEY.search(stem)
  return '/'.join(match.groups()) if match else None


def read_trials(path: Path) -> list[tuple[int, str, str]]:
  """(label, key, key) of each `label a b` line (comma or whitespace separated)."""
  out = []
  for line in path.read_text(errors='replace').splitlines():
    parts = [p for p in re.split(r'[,\s]+', line.strip()) if p]
    if len(parts) >= 3 and parts[0] in ('0', '1'):
      a, b = utterance_key(parts[1]), utterance_key(parts[2])
      if a and b:
        out.append((int(parts[0]), a, b))
  return out


def face_folder_index(manual: Path) -> dict[str, Path]:
  """{utterance key: face folder} of the MMCosine-layout folders holding images under manual (the
  lowest chunk number when an utterance has several)."""
  found: dict[str, tuple[int, Path]] = {}
  for path in files_lib.walk_files(manual):
    match = FACE_FOLDER.match(path.parent.name)
    if match and path.suffix.lower() in IMAGE_EXTS:
      key, chunk = '/'.join(match.groups()[:3]), int(match.group(4))
      if key not in found or chunk < found[key][0]:
        found[key] = (chunk, path.parent)
  return {k: p for k, (_, p) in found.items()}


def media_index(manual: Path, exts: tuple[str, ...]) -> dict[str, Path]:
  """{utterance key: path} of the media files with `exts` laid out as idX/ytid/NNNNN.ext."""
  index: dict[str, Path] = {}
  for path in files_lib.walk_files(manual):
    if path.suffix.lower() in exts:
      key = utterance_key(path.relative_to(manual).as_posix())
      if key and key not in index:
        index[key] = path
  return index


class Builder(ClipBuilder):
  """DatasetBuilder for VoxCeleb (registered with TFDS as 'voxceleb')."""

  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: mmcosine.',
                   '1.1.0': 'mmcosine: MTCNN faces aligned on the ArcFace template (centre-crop '
                            'fallback, face_detected per frame); the centre crop is now '
                            'mmcosine_centre; mmcosine_folders reads extracted face folders.'}
  PROCESS_TARGET = 'data_builders.common.faces:safe_process'
  BUILDER_CONFIGS = BUILDER_CONFIGS
  DEFAULT_BUILDER_CONFIG_NAME = 'mmcosine'
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Download VoxCeleb2 dev / test (aac + mp4) and VoxCeleb1 test (wav) from '
      'https://www.robots.ox.ac.uk/~vgg/data/voxceleb/ (registration required), unpack them into '
      'one folder with the trial lists (MMCosine data/vox/veri_test.csv and test_pairs.csv, or the '
      'official veri_test2.txt) and pass it as --manual_dir; for mmcosine_folders, add face '
      'folders in MMCosine\'s <idX>#<ytid>#<NNNNN>.txt#000.mp4/0000000.png layout. See '
      'data_builders/voxceleb/README.md.')

  def _info(self) -> tfds.core.DatasetInfo:
    return self._make_info(
        __doc__ or '', homepage='https://www.robots.ox.ac.uk/~vgg/data/voxceleb/',
        citation='Chung, Nagrani, Zisserman, VoxCeleb2: Deep Speaker Recognition, Interspeech '
                 '2018; Nagrani, Chung, Zisserman, VoxCeleb, Interspeech 2017.')

  def _label_features(self) -> dict[str, tfds.features.FeatureConnector]:
    scalar = lambda: tfds.features.Tensor(shape=(), dtype=np.int64)
    out = {'label': scalar(), 'speaker': tfds.features.Text(), 'utterance': scalar()}
    if self.builder_config.face_source == 'mtcnn':  # Per frame: 1 detected face, 0 centre crop.
      out['face_detected'] = tfds.features.Tensor(shape=(None,), dtype=np.int32)
    return out

  def _generate_examples(self, split, clips):
    """The common examples, tallying frames with a detected face and frames that fell back."""
    for key, example in super()._generate_examples(split, clips):
      if 'face_detected' in example:
        found = int(np.sum(example['face_detected']))
        self.report.tally('frames_face_detected', found)
        self.report.tally('frames_centre_fallback', len(example['face_detected']) - found)
      yield key, example

  def _plan(self, manual: Path, report: BuildReport) -> Plan:
    cfg = self.builder_config
    if cfg.face_source == 'mtcnn':  # Fail now in one line, not once per clip in the workers.
      try:
        faces_lib.load_weights()
      except faces_lib.FacesUnavailable as e:
        raise RuntimeError(f'{self.name}/{cfg.name}: {e}') from None
    audio, video = media_index(manual, cfg.audio_exts), media_index(manual, cfg.video_exts)
    folders = face_folder_index(manual) if cfg.face_source == 'folders' else {}
    visual = folders if cfg.face_source == 'folders' else video
    trial_lists, used_files = {}, {}
    for name, split, candidates in TRIAL_LISTS:
      found = next((p for c in candidates for p in files_lib.find_named(manual, [c])), None)
      if found is None:
        report.note(f'no {" / ".join(candidates)} under {manual}: no {split} split')
        continue
      trial_lists[name] = (split, read_trials(found))
      used_files[name] = files_lib.relative(found, manual)
    evaluation: dict[str, str] = {}  # key -> split
    for name, (split, trials) in trial_lists.items():
      for _, a, b in trials:
        evaluation.setdefault(a, split)
        evaluation.setdefault(b, split)
    eval_speakers = {k.split('/')[0] for k in evaluation}
    pool = sorted(k for k in set(audio) | set(visual)
                  if k not in evaluation and k.split('/')[0] not in eval_speakers)
    speakers = sorted({k.split('/')[0] for k in pool})
    if not speakers:
      raise FileNotFoundError(f'{self.name}: no training utterance (idX/ytid/NNNNN.m4a / .wav / '
                              f'.mp4 of a speaker outside the trial lists) under {manual}.\n'
                              f'{self.MANUAL_DOWNLOAD_INSTRUCTIONS}')
    held = self._validation(pool)
    utterances = sorted(evaluation)
    utterance_index = {k: i for i, k in enumerate(utterances)}
    speaker_index = {s: i for i, s in enumerate(speakers)}
    clips = []
    for key in pool + utterances:
      if key not in visual:
        wanted = (f'face folder {key.replace("/", "#")}.txt#000.mp4/' if visual is folders
                  else f'{key}.mp4 (the faces)')
        report.add(key, 'missing_counterpart', f'no {wanted} under {manual}')
        continue
      sound = audio.get(key, video.get(key))
      if sound is None:
        report.add(key, 'missing_counterpart', f'no {key}.wav / .m4a / .mp4 (the audio) under '
                   f'{manual}')
        continue
      speaker = key.split('/')[0]
      split = evaluation.get(key) or ('validation' if key in held else 'train')
      labels = {'label': np.int64(speaker_index.get(speaker, -1)), 'speaker': speaker,
                'utterance': np.int64(utterance_index.get(key, -1))}
      role = 'faces' if cfg.face_source == 'folders' else 'video'
      clips.append(Clip(key, split, {'audio': str(sound), role: str(visual[key])}, labels))
    built = {c.key for c in clips}
    trials, dropped = {}, {}
    for name, (_, rows) in trial_lists.items():
      kept = [(y, a, b) for y, a, b in rows if a in built and b in built]
      dropped[name] = len(rows) - len(kept)
      trials[name] = {'label': [y for y, _, _ in kept],
                      'first': [utterance_index[a] for _, a, _ in kept],
                      'second': [utterance_index[b] for _, _, b in kept]}
    return Plan(clips, {'speakers': speakers, 'num_classes': len(speakers),
                        'utterances': utterances, 'trials': trials, 'trials_dropped': dropped,
                        'trial_files': used_files, 'faces': self._faces_note(),
                        'split_scheme': f'train / validation ({cfg.validation_per_speaker} per '
                                        f'speaker, seed {cfg.validation_seed}) from the speakers '
                                        'outside the trial lists; vc1_test / vc2_test: the trial '
                                        'lists\' utterances'})

  def _faces_note(self) -> str:
    """How the stored faces were made (kept in the metadata)."""
    return {'mtcnn': f'MTCNN (mtcnn=={faces_lib.MTCNN_VERSION} weights, avjax/media/faces.py), '
                     'the large face nearest the centre, aligned on the ArcFace 5-point template; '
                     'the centre crop (frame_crop) when no face is found',
            'centre': 'the centre crop (frame_crop) of each official face-centred frame',
            'folders': 'already-extracted face images (MMCosine folder layout), resized'}[
                self.builder_config.face_source]

  def _validation(self, pool: list[str]) -> set[str]:
    """validation_per_speaker keys of each speaker with two or more, by a seeded permutation."""
    cfg = self.builder_config
    by_speaker: dict[str, list[str]] = collections.defaultdict(list)
    for key in pool:
      by_speaker[key.split('/')[0]].append(key)
    held: set[str] = set()
    for i, (_, keys) in enumerate(sorted(by_speaker.items())):
      if len(keys) >= 2:
        order = np.random.default_rng([cfg.validation_seed, i]).permutation(len(keys))
        held.update(keys[j] for j in order[:min(cfg.validation_per_speaker, len(keys) - 1)])
    return held


VoxCeleb = Builder  # Descriptive alias (same class; registered once).
