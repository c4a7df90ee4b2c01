"""mer2023: MER 2023 (multimodal emotion recognition challenge, Chinese video clips), to records.

Manual download (see README.md; EULA from the organisers): the challenge package, train/*.avi (or
any video container) with train-label.csv (`name,discrete,valence`), and test1/ (MER-MULTI) /
test2/ (MER-NOISE) whose labels, once released, go in test1-label.csv / test2-label.csv (same
columns). Videos are found by name anywhere below, preferring a folder named like the split.
Splits: 'train' and 'validation' from train-label.csv (fold validation_fold of num_folds, a seeded
split of the sorted names: MER2023 publishes no speakers, so it cannot be speaker-independent),
'test1' / 'test2' when their label files are there. test3 (MER-SEMI) is unlabelled: not built.

Each record: 'label' in CLASS_NAMES order (the six MER2023 classes), 'valence' (-5..5, as the
CSV) and 'attributes' (1,) = valence; 'audio' Kaldi fbank (1024, 128) of the clip's audio track at
16 kHz (128 bins, 25 ms / 10 ms, (x + 4.2677) / (2 * 4.5690): AcFormer / VAT); 'frames'
(8, 224, 224, 3) at segment centres, centred square crop (vat.md).

No TensorFlow: Tensor / ClassLabel / Text / Sequence(Image) features, ArrayRecord files.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

try:
  import data_builders.common  # noqa: F401
except ImportError:  # `tfds build data_builders/mer2023` from a source checkout.
  sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from data_builders.common.builder import Clip, ClipBuilder, Plan
from data_builders.common.config import ClipConfig, described
from data_builders.common import files as files_lib
from data_builders.common.report import BuildReport

CLASS_NAMES = ('neutral', 'angry', 'happy', 'sad', 'worried', 'surprise')
VIDEO_EXTS = ('.avi', '.mp4', '.mkv', '.mov', '.flv')
# The front end shared with muse_mimic (vat.md, AcFormer): fbank + 8 frames.
VAT_FRONT_END = dict(
    audio_source='video', sample_rate=16000, audio_frontend='kaldi_fbank', n_mels=128,
    win_length=400, hop_length=160, num_audio_frames=1024, fbank_mean=-4.2677, fbank_std=4.5690,
    frame_mode='uniform', num_frames=8, frame_crop='square', frame_size=(224, 224))
VAT_DESCRIPTION = (
    'VAT / AcFormer: the clip audio at 16 kHz, Kaldi fbank 128 bins, 25 ms Hanning window, 10 ms '
    'shift, 1024 frames, (x + 4.2677) / (2 * 4.5690) -> audio (1024, 128); 8 frames at segment '
    'centres, centred square crop, 224x224 JPEG.')


def index_videos(manual: Path, exts: tuple[str, ...]) -> dict[str, list[Path]]:
  """{stem: [paths]} of every video under manual (a name may sit in several split folders)."""
  out: dict[str, list[Path]] = {}
  for path in files_lib.walk_files(manual):
    if path.suffix.lower() in exts:
      out.setdefault(path.stem, []).append(path)
  return out


@dataclasses.dataclass(eq=False)
class Mer2023Config(ClipConfig):
  """Front end (see ClipConfig) plus the label files and the validation fold.

  label_files: (split, file name) pairs searched anywhere under the manual folder; 'train' is
    required, the others are built when present. num_folds / validation_fold: the validation split
    carved out of train-label.csv (validation_fold -1: none). fold_seed: the permutation's seed.
  """

  label_files: tuple[tuple[str, str], ...] = (('train', 'train-label.csv'),
                                              ('test1', 'test1-label.csv'),
                                              ('test2', 'test2-label.csv'))
  num_folds: int = 5
  validation_fold: int = 0
  fold_seed: int = 0
  video_exts: tuple[str, ...] = VIDEO_EXTS

  def validate(self) -> None:
    super().validate()
    if not -1 <= self.validation_fold < self.num_folds:
      raise ValueError(f'{self.name}: validation_fold must be -1 .. num_folds - 1.')


BUILDER_CONFIGS = [described(Mer2023Config, 'vat', VAT_DESCRIPTION, **VAT_FRONT_END)]


def fold_of(names: list[str], num_folds: int, seed: int) -> dict[str, int]:
  """Name -> fold: a seeded permutation of the sorted names dealt round-robin into num_folds."""
  names = sorted(names)
  order = np.random.default_rng(seed).permutation(len(names))
  return {names[j]: k % num_folds for k, j in enumerate(order)}


class Builder(ClipBuilder):
  """DatasetBuilder for MER 2023 (registered with TFDS as 'mer2023')."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: vat.'}
  BUILDER_CONFIGS = BUILDER_CONFIGS
  DEFAULT_BUILDER_CONFIG_NAME = 'vat'
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Sign the MER 2023 EULA (http://merchallenge.cn/datasets, "MER2023"), unpack the package '
      '(train/, train-label.csv, test1/, test2/; add test1-label.csv / test2-label.csv when you '
      'have them) into one folder and pass it as --manual_dir. See '
      'data_builders/mer2023/README.md.')

  def _info(self) -> tfds.core.DatasetInfo:
    return self._make_info(
        __doc__ or '', homepage='http://merchallenge.cn/',
        citation='Lian et al., MER 2023: Multi-label Learning, Modality Robustness, and '
        'Semi-Supervised Learning, ACM Multimedia 2023.')

  def _label_features(self) -> dict[str, tfds.features.FeatureConnector]:
    return {'label': tfds.features.ClassLabel(names=CLASS_NAMES),
            'valence': tfds.features.Tensor(shape=(), dtype=np.float32),
            'attributes': tfds.features.Tensor(shape=(1,), dtype=np.float32)}

  def _dataset_metadata(self) -> dict[str, Any]:
    return {'class_names': list(CLASS_NAMES), 'attribute_names': ['valence']}

  def _plan(self, manual: Path, report: BuildReport) -> Plan:
    cfg = self.builder_config
    videos = index_videos(manual, cfg.video_exts)
    rows: dict[str, list[tuple[str, str, str]]] = {}
    label_files = {}
    for split, name in cfg.label_files:
      found = files_lib.find_named(manual, [name])
      if not found:
        if split == 'train':
          raise FileNotFoundError(f'{self.name}: no {name} under {manual}.\n'
                                  f'{self.MANUAL_DOWNLOAD_INSTRUCTIONS}')
        report.note(f'no {name} under {manual}: no {split} split')
        continue
      label_files[split] = files_lib.relative(found[0], manual)
      rows[split] = [(r.get('name', ''), r.get('discrete', ''), r.get('valence', ''))
                     for r in files_lib.read_csv_rows(found[0])]
    folds = fold_of([n for n, _, _ in rows['train']], cfg.num_folds, cfg.fold_seed)
    clips, seen = [], set()
    for split, table in rows.items():
      for name, emotion, valence in table:
        if not name or name in seen:
          report.note(f'{label_files[split]}: row for {name!r} skipped (empty or repeated name)')
          continue
        seen.add(name)
        try:
          if emotion.strip().lower() not in CLASS_NAMES:
            raise ValueError(f'the class is not one of {CLASS_NAMES}')
          label, value = CLASS_NAMES.index(emotion.strip().lower()), float(valence)
          if not np.isfinite(value):
            raise ValueError('valence is not finite')
        except ValueError as e:
          report.add(name, 'bad_label', f'{label_files[split]}: discrete {emotion!r} / valence '
                     f'{valence!r} ({e})')
          continue
        path = files_lib.pick_one(videos.get(name, []), split)
        if path is None:
          report.add(name, 'missing_media', f'listed in {label_files[split]}, but no video named '
                     f'{name} was found under {manual}')
          continue
        out_split = split
        if split == 'train' and folds.get(name) == cfg.validation_fold:
          out_split = 'validation'
        clips.append(Clip(name, out_split, {'video': str(path)}, {
            'label': label, 'valence': np.float32(value),
            'attributes': np.array([value], np.float32)}))
    report.exclude('videos_without_labels', len(set(videos) - seen))
    return Plan(clips, {'label_files': label_files, 'validation_fold': cfg.validation_fold,
                        'num_folds': cfg.num_folds})


Mer2023 = Builder  # Descriptive alias (same class; registered once).
