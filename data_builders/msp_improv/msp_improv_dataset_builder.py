"""msp_improv: MSP-IMPROV (about 8.4k utterances, 12 actors, 6 sessions), download to records.

Media are found by utterance id anywhere under the manual folder (a recursive index of wav / video /
.npy files), so the corpus' folder layout does not matter. Labels come from VAVL-style partition
CSVs (FileName, EmoAct, EmoVal, EmoDom, SpkrID, Gender, Split_Set) and / or the corpus label file
(Evaluation.txt). Each record has a categorical label in CLASS_NAMES order (neutral, sad, angry,
happy; -1 when the utterance has none of them) and 'attributes' (arousal, valence, dominance) in
[0, 1]: arousal = 6 - EmoAct (VAVL's flip, applied once, here), then (y - 1) / 4 for all three.
Session-based partitions (VAVL's 1..5) are builder configs.

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
except ImportError:  # `tfds build data_builders/msp_improv` from a source checkout (not installed).
  sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from data_builders.common.builder import Clip, ClipBuilder, Plan
from data_builders.common.config import ClipConfig, described
from data_builders.common import files as files_lib
from data_builders.common.report import BuildReport

CLASS_NAMES = ('neutral', 'sad', 'angry', 'happy')
CATEGORY_CODES = {'N': 0, 'S': 1, 'A': 2, 'H': 3}  # Label-file / scenario letters -> label.
ATTRIBUTE_NAMES = ('arousal', 'valence', 'dominance')
# VAVL partitions: (validation session, test session); the other four sessions train.
PARTITIONS = {1: (4, 5), 2: (2, 3), 3: (1, 2), 4: (6, 1), 5: (5, 6)}
ID_RE = re.compile(r'(?:MSP|UTD)-IMPROV-(S\d{2}([A-Z]))-([MF])(\d{2})-([A-Z])-([A-Z]{2}\d{2})')
VAVL_SPLITS = {'train': 'train', 'development': 'validation', 'dev': 'validation',
               'validation': 'validation', 'test': 'test'}


@dataclasses.dataclass(eq=False)
class MspImprovConfig(ClipConfig):
  """Front end (see ClipConfig) plus labels and the partition.

  partition: VAVL session partition 1..5 (PARTITIONS); its labels_consensus_<p>.csv Split_Set is
    used when present (preferring a folder named vavl_labels_dir), else the session rule.
  label_file: file-name pattern of the corpus label file (searched recursively).
  label_source: 'consensus' (the label file's category letter) or 'target' (the scenario's
    intended emotion, the letter after S01 in the id). require_label: leave out utterances without
    one of the four classes (else label = -1).
  flip_arousal: arousal = 6 - EmoAct before scaling (VAVL's --flip_aro).
  """

  partition: int = 1
  vavl_labels_dir: str = 'labels_consensus_EmoP_4class_D'
  label_file: str = 'Evaluation.txt'
  label_source: str = 'consensus'
  require_label: bool = False
  flip_arousal: bool = True
  audio_exts: tuple[str, ...] = ('.wav',)
  video_exts: tuple[str, ...] = ('.avi', '.mp4', '.mov', '.mkv')

  def validate(self) -> None:
    super().validate()
    if self.partition not in PARTITIONS:
      raise ValueError(f'{self.name}: partition must be one of {sorted(PARTITIONS)}.')
    if self.label_source not in ('consensus', 'target'):
      raise ValueError(f"{self.name}: label_source must be 'consensus' or 'target'.")


def _configs() -> list[MspImprovConfig]:
  out = []
  for p, (dev, test) in PARTITIONS.items():
    where = f'Partition {p}: validation session {dev}, test session {test}, the others train.'
    out.append(described(
        MspImprovConfig, f'logmel_p{p}',
        'Log-mel + frames (no pretrained extractor): audio at 16 kHz tiled / cropped to 6 s, mel '
        '128 bins n_fft 512 win 400 hop 160, log(S + 1e-6) -> (128, 601); 8 frames at segment '
        f'centres, centred square crop, 224x224 JPEG. {where}',
        partition=p, audio_source='audio', sample_rate=16000, audio_frontend='log_mel', n_mels=128,
        n_fft=512, win_length=400, hop_length=160, num_samples=96000, frame_mode='uniform',
        num_frames=8, frame_crop='square', frame_size=(224, 224)))
    out.append(described(
        MspImprovConfig, f'features_p{p}',
        'VAVL: precomputed per-utterance features/audio/<id>.npy (T_a, 1024) and '
        f'features/visual/<id>.npy (T_v, 1408). {where}',
        partition=p, audio_features_dir='features/audio', visual_features_dir='features/visual'))
  return out


BUILDER_CONFIGS = _configs()


def canonical_id(text: str) -> str | None:
  """'MSP-IMPROV-S01A-F02-R-FF01' for an id found in text (also the older 'UTD-IMPROV-' prefix)."""
  m = ID_RE.search(text)
  return None if m is None else 'MSP-IMPROV-' + m[0].split('-IMPROV-', 1)[1]


def parse_id(uid: str) -> dict[str, Any]:
  """Fields of an utterance id: scenario 'S01A', target letter, gender, session, type, turn."""
  m = ID_RE.fullmatch(uid)
  return {'scenario': m[1], 'target': m[2], 'gender': m[3], 'session': int(m[4]),
          'speaker': f'{m[3]}{m[4]}', 'recording_type': m[5], 'turn': m[6]}


def attributes(act: float, val: float, dom: float, flip_arousal: bool) -> np.ndarray:
  """(arousal, valence, dominance) in [0, 1] from 1..5 ratings: arousal 6 - act when flipped."""
  aro = 6.0 - act if flip_arousal else act
  return ((np.array([aro, val, dom], np.float64) - 1.0) / 4.0).astype(np.float32)


def read_label_file(path: Path) -> dict[str, tuple[str, float | None, float | None, float | None]]:
  """{id: (category letter, A, V, D)} from lines '<utterance>.avi; <C>; A:x; V:x; D:x; N:x'.

  Lines that do not start with an utterance id (per-evaluator lines, blanks) are skipped.
  """
  out = {}
  for line in path.read_text(errors='replace').splitlines():
    fields = [f.strip() for f in line.split(';')]
    uid = canonical_id(fields[0]) if fields and fields[0] else None
    if uid is None or len(fields) < 2:
      continue
    values: dict[str, float | None] = {'A': None, 'V': None, 'D': None}
    for f in fields[2:]:
      key, _, num = f.partition(':')
      if key.strip() in values:
        try:
          values[key.strip()] = float(num)
        except ValueError:
          pass
    out[uid] = (fields[1].upper(), values['A'], values['V'], values['D'])
  return out


class Builder(ClipBuilder):
  """DatasetBuilder for MSP-IMPROV (registered with TFDS as 'msp_improv')."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: logmel_p1..p5, features_p1..p5.'}
  BUILDER_CONFIGS = BUILDER_CONFIGS
  DEFAULT_BUILDER_CONFIG_NAME = 'logmel_p1'
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Request MSP-IMPROV from the MSP lab (https://ecs.utdallas.edu/research/researchgroups/'
      'msp-lab/databases/MSP-IMPROV.html), unpack it (any folder layout: files are found by '
      'utterance id) and pass its folder as --manual_dir; add VAVL partition CSVs '
      '(labels_consensus_EmoP_4class_D/labels_consensus_{1..5}.csv) and / or keep the corpus '
      'Evaluation.txt. See data_builders/msp_improv/README.md.')

  def _info(self) -> tfds.core.DatasetInfo:
    return self._make_info(
        __doc__ or '', homepage='https://ecs.utdallas.edu/research/researchgroups/msp-lab/'
        'databases/MSP-IMPROV.html',
        citation='Busso et al., MSP-IMPROV: An Acted Corpus of Dyadic Interactions to Study '
        'Emotion Perception, IEEE Trans. Affective Computing 8(1), 2017.')

  def _label_features(self) -> dict[str, tfds.features.FeatureConnector]:
    vec3 = tfds.features.Tensor(shape=(3,), dtype=np.float32)
    return {
        'label': tfds.features.ClassLabel(names=CLASS_NAMES),
        'target_emotion': tfds.features.ClassLabel(names=CLASS_NAMES),
        'attributes': vec3,
        'attributes_raw': vec3,
        'session': tfds.features.Tensor(shape=(), dtype=np.int32),
        'speaker': tfds.features.Text(),
        'gender': tfds.features.Text(),
        'scenario': tfds.features.Text(),
        'recording_type': tfds.features.Text(),
    }

  def _dataset_metadata(self) -> dict[str, Any]:
    return {'class_names': list(CLASS_NAMES), 'category_codes': CATEGORY_CODES,
            'attribute_names': list(ATTRIBUTE_NAMES),
            'attributes_raw_names': ['EmoAct', 'EmoVal', 'EmoDom'],
            'partitions': {str(k): {'validation': dev, 'test': test}
                           for k, (dev, test) in PARTITIONS.items()}}

  def _roles(self) -> list[str]:
    cfg = self.builder_config
    if cfg.uses_features:
      return [r for r, d in (('audio_features', cfg.audio_features_dir),
                             ('visual_features', cfg.visual_features_dir)) if d]
    roles = [cfg.audio_source] if cfg.audio_frontend else []
    return roles + (['video'] if cfg.frame_mode and 'video' not in roles else [])

  def _index(self, manual: Path, report: BuildReport) -> dict[str, dict[str, Path]]:
    """{role: {utterance id: path}} over the whole manual folder (or the feature folders)."""
    cfg = self.builder_config
    if cfg.uses_features:
      raw = {r: files_lib.index_by_stem(manual / d, {'.npy'}, report, r)
             for r, d in (('audio_features', cfg.audio_features_dir),
                          ('visual_features', cfg.visual_features_dir)) if d}
    else:
      raw = {'audio': files_lib.index_by_stem(manual, cfg.audio_exts, report, 'audio'),
             'video': files_lib.index_by_stem(manual, cfg.video_exts, report, 'video')}
    index: dict[str, dict[str, Path]] = {}
    for role, by_stem in raw.items():
      index[role] = {}
      for stem, path in by_stem.items():
        if ID_RE.fullmatch(stem):  # The whole stem is an utterance id (not e.g. '<id>_face').
          index[role].setdefault(canonical_id(stem), path)
    return index

  def _plan(self, manual: Path, report: BuildReport) -> Plan:
    cfg = self.builder_config
    index = self._index(manual, report)
    csvs: dict[int, list[Path]] = {}
    for p in files_lib.find_named(manual, ['labels_consensus_*.csv', 'label_consensus_*.csv']):
      m = re.search(r'_consensus_(\d+)\.csv$', p.name)
      if m:
        csvs.setdefault(int(m[1]), []).append(p)
    by_partition = {k: files_lib.pick_one(v, cfg.vavl_labels_dir) for k, v in csvs.items()}
    split_csv = by_partition.get(cfg.partition)
    attr_csv = split_csv or next(iter(sorted(by_partition.items())), (None, None))[1]
    rows = {}
    if attr_csv is not None:
      for row in files_lib.read_csv_rows(attr_csv):
        uid = canonical_id(row.get('FileName', ''))
        if uid:
          rows[uid] = row
    label_files = files_lib.find_named(manual, [cfg.label_file])
    evaluations = read_label_file(label_files[0]) if label_files else {}
    universe = sorted(rows) if rows else sorted(evaluations)
    if not universe:
      raise FileNotFoundError(
          f'{self.name}: no labels under {manual}: expected labels_consensus_<p>.csv (VAVL) or '
          f'a corpus label file named {cfg.label_file!r}.\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}')
    media_ids = set().union(*index.values())
    report.exclude('media_without_labels', len(media_ids - set(universe)))
    dev, test = PARTITIONS[cfg.partition]
    disagree = 0
    clips = []
    for uid in universe:
      info = parse_id(uid)
      rule = ('validation' if info['session'] == dev else 'test' if info['session'] == test
              else 'train')
      split = rule
      if split_csv is not None:
        split = VAVL_SPLITS.get(rows[uid].get('Split_Set', '').strip().lower())
        if split is None:
          report.add(uid, 'bad_label', f'{split_csv.name}: unknown Split_Set in {rows[uid]}')
          continue
        disagree += split != rule
      files = {r: (str(index[r][uid]) if uid in index[r] else None) for r in self._roles()}
      if not any(files.values()):
        report.add(uid, 'missing_media', f'labelled, but no {"/".join(self._roles())} file with '
                   f'this utterance id was found under {manual}')
        continue
      missing = [r for r, p in files.items() if p is None]
      if missing:
        report.add(uid, 'missing_counterpart', f'no {"/".join(missing)} file for this utterance',
                   [p for p in files.values() if p])
        continue
      try:
        if uid in rows:
          raw = [float(rows[uid][k]) for k in ('EmoAct', 'EmoVal', 'EmoDom')]
        else:
          raw = [float(v) for v in evaluations[uid][1:]]
        if not np.all(np.isfinite(raw)):
          raise ValueError('not finite')
      except (KeyError, TypeError, ValueError) as e:
        report.add(uid, 'bad_label', f'no valid EmoAct / EmoVal / EmoDom ({e})')
        continue
      if cfg.label_source == 'target':
        label = CATEGORY_CODES[info['target']] if info['target'] in CATEGORY_CODES else -1
      else:
        label = CATEGORY_CODES.get(evaluations.get(uid, ('',))[0], -1)
      if cfg.require_label and label < 0:
        report.exclude('no_4class_label')
        continue
      labels = {
          'label': label, 'target_emotion': CATEGORY_CODES.get(info['target'], -1),
          'attributes': attributes(*raw, flip_arousal=cfg.flip_arousal),
          'attributes_raw': np.array(raw, np.float32), 'session': np.int32(info['session']),
          'speaker': info['speaker'], 'gender': {'F': 'Female', 'M': 'Male'}[info['gender']],
          'scenario': info['scenario'], 'recording_type': info['recording_type'],
      }
      clips.append(Clip(uid, split, files, labels))
    if disagree:
      report.note(f'{disagree} utterance(s) whose Split_Set in {split_csv.name} differs from the '
                  f'session rule of partition {cfg.partition}; the CSV was followed')
    sessions: dict[str, set] = {}
    for c in clips:
      sessions.setdefault(c.split, set()).add(int(c.labels['session']))
    return Plan(clips, {
        'split_scheme': 'vavl_csv' if split_csv is not None else 'session_rule',
        'split_file': files_lib.relative(split_csv, manual),
        'attributes_file': files_lib.relative(attr_csv, manual) if rows else
                           files_lib.relative(label_files[0] if label_files else None, manual),
        'label_file': files_lib.relative(label_files[0] if label_files else None, manual),
        'split_sessions': {s: sorted(v) for s, v in sorted(sessions.items())},
    })


MspImprov = Builder  # Descriptive alias (same class; registered once).
