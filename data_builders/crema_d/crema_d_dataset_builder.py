"""crema_d: CREMA-D (7442 clips, 91 actors, 6 acted emotions) from the raw download to records.

Manual download (see README.md): AudioWAV/*.wav, VideoFlash/*.flv, VideoDemographics.csv,
processedResults/summaryTable.csv, optionally OGM-GE's train.csv / test.csv, VAVL's partition CSVs
and precomputed per-utterance features. Configs follow each paper's front end (ogm_ge, mmcosine,
cmvqvae, features). Labels: the acted emotion from the file name in ONE order, CLASS_NAMES
(sorted: angry, disgust, fear, happy, neutral, sad = ANG DIS FEA HAP NEU SAD), plus actor,
sentence, intensity, demographics, perceptual votes and VAVL soft labels when available.

No TensorFlow: Tensor / ClassLabel / Text / Sequence(Image) features, ArrayRecord files.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

try:
  import data_builders.common  # noqa: F401
except ImportError:  # `tfds build data_builders/crema_d` from a source checkout (not installed).
  sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from data_builders.common.builder import Clip, ClipBuilder, Plan
from data_builders.common.config import ClipConfig, described
from data_builders.common import files as files_lib
from data_builders.common.report import BuildReport

EMOTIONS = ('ANG', 'DIS', 'FEA', 'HAP', 'NEU', 'SAD')  # File-name codes, in label order.
CLASS_NAMES = ('angry', 'disgust', 'fear', 'happy', 'neutral', 'sad')
SENTENCES = ('IEO', 'TIE', 'IOM', 'IWW', 'TAI', 'MTI', 'IWL', 'ITH', 'DFA', 'ITS', 'TSI', 'WSI')
INTENSITIES = ('LO', 'MD', 'HI', 'XX')
OGM_GE_ORDER = ('NEU', 'HAP', 'SAD', 'FEA', 'DIS', 'ANG')  # OGM-GE's label ids 0..5.
VAVL_ORDER = ('angry', 'sad', 'disgust', 'fear', 'neutral', 'happy')  # VAVL CSV columns / ids.
NAME_RE = re.compile(r'^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$')
SPLIT_SCHEMES = ('ogm_ge', 'vavl', 'speaker')
VAVL_SPLITS = {'train': 'train', 'development': 'validation', 'dev': 'validation',
               'validation': 'validation', 'test': 'test'}
ROLE_DIRS = {'audio': 'AudioWAV/<name>.wav', 'video': 'VideoFlash/<name>.flv',
             'audio_features': '<audio_features_dir>/<name>.npy',
             'visual_features': '<visual_features_dir>/<name>.npy'}


@dataclasses.dataclass(eq=False)
class CremaDConfig(ClipConfig):
  """Front end (see ClipConfig) plus the split choice.

  split_order: the first available scheme wins: 'ogm_ge' (train.csv + test.csv in the manual folder,
    clip level, actors overlap), 'vavl' (VAVL partition CSV number vavl_partition, found anywhere
    under the manual folder, preferring a folder named vavl_labels_dir), 'speaker' (always
    available: speaker-independent by actor, see speaker_split / speaker_seed).
  speaker_split: (train, validation, test) proportions of the actors present (63/14/14 of 91 is
    VAVL's); speaker_seed: the permutation of the sorted actor ids.
  """

  split_order: tuple[str, ...] = ('ogm_ge', 'vavl', 'speaker')
  vavl_partition: int = 5
  vavl_labels_dir: str = 'labels_consensus_6class_M'
  speaker_split: tuple[int, int, int] = (63, 14, 14)
  speaker_seed: int = 0

  def validate(self) -> None:
    super().validate()
    bad = [s for s in self.split_order if s not in SPLIT_SCHEMES]
    if bad or not self.split_order:
      raise ValueError(f'{self.name}: split_order entries must be in {SPLIT_SCHEMES}, got {bad}.')
    if not 1 <= self.vavl_partition <= 5:
      raise ValueError(f'{self.name}: vavl_partition must be 1..5.')


_FRAMES_256 = dict(frame_size=(256, 341), jpeg_quality=90)  # 480x360 at a short side of 256.
BUILDER_CONFIGS = [
    described(
        CremaDConfig, 'ogm_ge',
        'OGM-GE (CVPR 2022): wav at 22.05 kHz, tiled to 66150 samples, clipped, STFT n_fft 512 hop '
        '353, log(|S| + 1e-7) -> audio (257, 188); the first frame of every second of the flv '
        '(1 fps) at 256x341 JPEG.',
        audio_source='audio', sample_rate=22050, audio_frontend='ogm_ge_log_stft', n_fft=512,
        hop_length=353, num_samples=66150, frame_mode='fps', frame_fps=1.0, **_FRAMES_256),
    described(
        CremaDConfig, 'mmcosine',
        'MMCosine (ICASSP 2023): wav at 16 kHz tiled to 48000 samples, scipy PSD nperseg 512 '
        'noverlap 353 (Tukey 0.25), log(P + 1e-7), z-scored -> audio (257, 299); one frame per '
        'clip (the centre frame) at 256x341 JPEG.',
        audio_source='audio', sample_rate=16000, audio_frontend='mmcosine_log_psd', n_fft=512,
        noverlap=353, num_samples=48000, frame_mode='centre', **_FRAMES_256),
    described(
        CremaDConfig, 'cmvqvae',
        'CM-VQVAE: the flv audio at 44.1 kHz, mel 256 bins n_fft 2048 win 512 hop 353, '
        'power_to_db(ref=max), first 256 frames (shorter clips padded with -80 dB) -> audio '
        '(256, 256); frames: centre frame +- 15 (31), rows 0:280 x 280 centred columns, 128x128.',
        audio_source='video', sample_rate=44100, audio_frontend='log_mel', n_mels=256, n_fft=2048,
        win_length=512, hop_length=353, to_db=True, num_audio_frames=256, pad_value=-80.0,
        frame_mode='centre_window', frame_window=15, frame_crop=(0, 280, 280),
        frame_size=(128, 128)),
    described(
        CremaDConfig, 'features',
        'VAVL / AuxFormer: precomputed per-utterance features from the manual folder: '
        'features/audio/<name>.npy (T_a, 1024) (wav2vec2-large-robust) and '
        'features/visual/<name>.npy (T_v, 1408) (EfficientNet-B2), variable length. VAVL '
        'partitions first.',
        audio_features_dir='features/audio', visual_features_dir='features/visual',
        split_order=('vavl', 'speaker')),
]


def parse_name(name: str) -> tuple[int, str, str, str] | None:
  """(actor, sentence, emotion, intensity) of a CREMA-D clip name, None if it is not one."""
  m = NAME_RE.match(name)
  if not m or m[2] not in SENTENCES or m[3] not in EMOTIONS or m[4] not in INTENSITIES:
    return None
  return int(m[1]), m[2], m[3], m[4]


def speaker_assignment(actors: list[int], proportions: tuple[int, int, int],
                       seed: int) -> dict[int, str]:
  """Actor -> split: a seeded permutation of the sorted actors; validation and test get
  max(1, round(n * p / sum(p))) actors each (0 when fewer than 3 actors), train the rest."""
  actors = sorted(actors)
  n, total = len(actors), sum(proportions)
  order = [actors[i] for i in np.random.default_rng(seed).permutation(n)]
  n_val = max(1, round(n * proportions[1] / total)) if n >= 3 else 0
  n_test = max(1, round(n * proportions[2] / total)) if n >= 3 else 0
  out = {a: 'test' for a in order[:n_test]}
  out.update({a: 'validation' for a in order[n_test:n_test + n_val]})
  out.update({a: 'train' for a in order[n_test + n_val:]})
  return out


def _stem(name: str) -> str:
  return Path(name.strip()).stem if name.strip().lower().endswith(('.wav', '.flv', '.mp4',
                                                                    '.npy')) else name.strip()


class Builder(ClipBuilder):
  """DatasetBuilder for CREMA-D (registered with TFDS as 'crema_d')."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: ogm_ge, mmcosine, cmvqvae, features.'}
  BUILDER_CONFIGS = BUILDER_CONFIGS
  DEFAULT_BUILDER_CONFIG_NAME = 'ogm_ge'
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Clone https://github.com/CheyneyComputerScience/CREMA-D with git-lfs (AudioWAV/, '
      'VideoFlash/, VideoDemographics.csv, processedResults/) and pass its folder as --manual_dir. '
      'Optional: OGM-GE train.csv / test.csv at the top of that folder, VAVL partition CSVs '
      '(labels_consensus_6class_M/label_consensus_{1..5}.csv), features/audio|visual/<name>.npy. '
      'See data_builders/crema_d/README.md.')

  def _info(self) -> tfds.core.DatasetInfo:
    return self._make_info(
        __doc__ or '', homepage='https://github.com/CheyneyComputerScience/CREMA-D',
        citation='Cao et al., CREMA-D: Crowd-sourced Emotional Multimodal Actors Dataset, IEEE '
        'Trans. Affective Computing 5(4), 2014.')

  def _label_features(self) -> dict[str, tfds.features.FeatureConnector]:
    scalar = lambda dt: tfds.features.Tensor(shape=(), dtype=dt)
    return {
        'label': tfds.features.ClassLabel(names=CLASS_NAMES),
        'actor': scalar(np.int32),
        'sentence': tfds.features.ClassLabel(names=SENTENCES),
        'intensity': tfds.features.ClassLabel(names=INTENSITIES),
        'sex': tfds.features.Text(),
        'age': scalar(np.int32),
        'soft_label': tfds.features.Tensor(shape=(len(CLASS_NAMES),), dtype=np.float32),
        'has_soft_label': scalar(np.bool_),
        'voice_vote': tfds.features.Text(),
        'face_vote': tfds.features.Text(),
        'multimodal_vote': tfds.features.Text(),
    }

  def _dataset_metadata(self) -> dict[str, Any]:
    return {
        'class_names': list(CLASS_NAMES), 'emotion_codes': list(EMOTIONS),
        'sentences': list(SENTENCES), 'intensities': list(INTENSITIES),
        # label = our_index[code]: how the references' label ids map to ours.
        'from_ogm_ge_label': [EMOTIONS.index(c) for c in OGM_GE_ORDER],
        'from_vavl_label': [CLASS_NAMES.index(c) for c in VAVL_ORDER],
    }

  def _roles(self) -> list[str]:
    cfg = self.builder_config
    roles = []
    if cfg.audio_frontend:
      roles.append(cfg.audio_source)
    if cfg.frame_mode and 'video' not in roles:
      roles.append('video')
    roles += [r for r, d in (('audio_features', cfg.audio_features_dir),
                             ('visual_features', cfg.visual_features_dir)) if d]
    return roles

  def _plan(self, manual: Path, report: BuildReport) -> Plan:
    cfg = self.builder_config
    if cfg.uses_features:
      index = {r: files_lib.index_by_stem(manual / d, {'.npy'}, report, r)
               for r, d in (('audio_features', cfg.audio_features_dir),
                            ('visual_features', cfg.visual_features_dir)) if d}
    else:
      index = {'audio': files_lib.index_by_stem(manual, {'.wav'}, report, 'wav'),
               'video': files_lib.index_by_stem(manual, {'.flv'}, report, 'flv')}
    names: dict[str, tuple] = {}
    ignored = []
    for stem in sorted(set().union(*index.values())):
      parsed = parse_name(stem)
      if parsed is None:
        ignored.append(stem)
      else:
        names[stem] = parsed
    if ignored:
      report.note(f'ignored {len(ignored)} file(s) whose names are not CREMA-D clip names: '
                  f'{ignored[:20]}')
    vavl = self._read_vavl(manual, report)
    scheme, membership, split_meta = self._splits(manual, names, vavl, report)
    demo = self._demographics(manual)
    votes = self._votes(manual)
    clips = []
    for name in sorted(set(names) | set(membership or ())):
      split = membership.get(name) if membership is not None else None
      if name not in names:
        report.add(name, 'missing_media', f'listed in the {scheme} split files, but no '
                   f'{"/".join(self._roles())} file was found under {manual}')
        continue
      actor, sentence, emotion, intensity = names[name]
      if scheme == 'speaker':
        split = split_meta['assignment'][actor]
      if split is None:
        report.exclude(f'not_in_{scheme}_split')
        continue
      files = {r: (str(index[r][name]) if name in index.get(r, {}) else None)
               for r in self._roles()}
      missing = [ROLE_DIRS[r].replace('<name>', name) for r, p in files.items() if p is None]
      if missing:
        report.add(name, 'missing_counterpart', f'missing {", ".join(missing)}',
                   [p for p in files.values() if p])
        continue
      soft = vavl['soft'].get(name)
      sex, age = demo.get(actor, ('', -1))
      vv, fv, mv = votes.get(name, ('', '', ''))
      labels = {
          'label': EMOTIONS.index(emotion), 'actor': np.int32(actor),
          'sentence': SENTENCES.index(sentence), 'intensity': INTENSITIES.index(intensity),
          'sex': sex, 'age': np.int32(age),
          'soft_label': (soft if soft is not None else
                         np.eye(len(EMOTIONS), dtype=np.float32)[EMOTIONS.index(emotion)]),
          'has_soft_label': np.bool_(soft is not None),
          'voice_vote': vv, 'face_vote': fv, 'multimodal_vote': mv,
      }
      clips.append(Clip(name, split, files, labels))
    split_meta.pop('assignment', None)
    actors: dict[str, set] = {}
    for c in clips:
      actors.setdefault(c.split, set()).add(int(c.labels['actor']))
    split_meta['split_actors'] = {s: sorted(a) for s, a in sorted(actors.items())}
    split_meta['soft_labels_file'] = files_lib.relative(vavl['path'], manual)
    return Plan(clips, split_meta)

  def _read_vavl(self, manual: Path, report: BuildReport) -> dict[str, Any]:
    """The VAVL partition CSVs: {'by_partition': {p: path}, 'path', 'soft': {name: (6,)}}."""
    cfg = self.builder_config
    found: dict[int, list[Path]] = {}
    for p in files_lib.find_named(manual, ['label_consensus_*.csv', 'labels_consensus_*.csv']):
      m = re.search(r'_consensus_(\d+)\.csv$', p.name)
      if m:
        found.setdefault(int(m[1]), []).append(p)
    by_partition = {k: files_lib.pick_one(v, cfg.vavl_labels_dir) for k, v in found.items()}
    path = by_partition.get(cfg.vavl_partition) or next(iter(by_partition.values()), None)
    soft: dict[str, np.ndarray] = {}
    rows: dict[str, dict[str, str]] = {}
    if path is not None:
      for row in files_lib.read_csv_rows(path):
        name = _stem(row.get('FileName', ''))
        try:
          vec = np.array([float(row[c]) for c in VAVL_ORDER], np.float32)
        except (KeyError, ValueError):
          report.add(name or '?', 'bad_label', f'{path.name}: no valid soft label in row {row}')
          continue
        soft[name] = vec[[VAVL_ORDER.index(c) for c in CLASS_NAMES]]  # Into CLASS_NAMES order.
        rows[name] = row
    return {'by_partition': by_partition, 'path': path, 'soft': soft, 'rows': rows}

  def _splits(self, manual: Path, names: dict[str, tuple], vavl: dict[str, Any],
              report: BuildReport) -> tuple[str, dict[str, str] | None, dict[str, Any]]:
    """(scheme, {name: split} or None for 'speaker', metadata) of the first available scheme."""
    cfg = self.builder_config
    for scheme in cfg.split_order:
      if scheme == 'ogm_ge' and all((manual / f).is_file() for f in ('train.csv', 'test.csv')):
        membership: dict[str, str] = {}
        for split in ('train', 'test'):
          for row in files_lib.read_csv_plain(manual / f'{split}.csv'):
            name = _stem(row[0])
            if name in membership and membership[name] != split:
              report.note(f'{name} is in both train.csv and test.csv; kept in {membership[name]}')
              continue
            membership[name] = split
            if len(row) > 1 and name in names and row[1].upper() != names[name][2]:
              report.note(f'{split}.csv labels {name} as {row[1]}; the file name says '
                          f'{names[name][2]} (the file name is used)')
        return 'ogm_ge', membership, {'split_scheme': 'ogm_ge',
                                      'split_files': ['train.csv', 'test.csv']}
      if scheme == 'vavl' and cfg.vavl_partition in vavl['by_partition']:
        path = vavl['by_partition'][cfg.vavl_partition]
        membership = {}
        for row in files_lib.read_csv_rows(path):
          split = VAVL_SPLITS.get(row.get('Split_Set', '').strip().lower())
          if split is None:
            report.note(f'{path.name}: unknown Split_Set in {row}; row ignored')
            continue
          membership[_stem(row.get('FileName', ''))] = split
        return 'vavl', membership, {'split_scheme': 'vavl', 'vavl_partition': cfg.vavl_partition,
                                    'split_files': [files_lib.relative(path, manual)]}
      if scheme == 'speaker':
        actors = sorted({parsed[0] for parsed in names.values()})
        assignment = speaker_assignment(actors, cfg.speaker_split, cfg.speaker_seed)
        return 'speaker', None, {'split_scheme': 'speaker', 'split_files': [],
                                 'assignment': assignment}
    raise FileNotFoundError(
        f'{self.name}/{cfg.name}: none of the split schemes {cfg.split_order} is available under '
        f'{manual} (ogm_ge needs train.csv and test.csv there; vavl needs '
        f'label_consensus_{cfg.vavl_partition}.csv). Add "speaker" to split_order for the '
        'speaker-independent split.')

  def _demographics(self, manual: Path) -> dict[int, tuple[str, int]]:
    """ActorID -> (Sex, Age) from VideoDemographics.csv, empty when absent."""
    out = {}
    for path in files_lib.find_named(manual, ['VideoDemographics.csv'])[:1]:
      for row in files_lib.read_csv_rows(path):
        try:
          out[int(row['ActorID'])] = (row.get('Sex', ''), int(float(row.get('Age') or -1)))
        except (KeyError, ValueError):
          continue
    return out

  def _votes(self, manual: Path) -> dict[str, tuple[str, str, str]]:
    """Clip -> (VoiceVote, FaceVote, MultiModalVote) from processedResults/summaryTable.csv."""
    out = {}
    for path in files_lib.find_named(manual, ['summaryTable.csv'])[:1]:
      for row in files_lib.read_csv_rows(path):
        name = _stem(row.get('FileName', ''))
        if name:
          out[name] = (row.get('VoiceVote', ''), row.get('FaceVote', ''),
                       row.get('MultiModalVote', ''))
    return out


CremaD = Builder  # Descriptive alias (same class; registered once).
