"""ssw60: Sapsucker Woods 60 (Van Horn et al., ECCV 2022), the audio-visual bird species task.

Manual download (see README.md): ssw60.tar.gz unpacked: video_ml.csv, taxa.csv and
video_ml/<asset_id>.mp4 (5,400 ten-second videos at 25 fps, 60 species). video_ml.csv gives each
video's label (0-59) and split (train / test); taxa.csv names the species (label -> common_name,
species_code). The audio of an example is the video's own track (not audio_ml/*.wav, which are
other recordings); SSW60 has no validation split, so the builder holds out a seeded,
class-stratified share of the training videos (`validation_fraction`, `validation_seed`).

Not every video has an audio track (SSW60 README). With `missing_audio='silence'` (the default) such
a video is kept with an all-zero spectrogram (the mean of the z-scored front end) and
`audio_present` = 0, so the test set stays the published one; `missing_audio=''` reports and skips
them instead. `reliable_audio` (SSW60's machine-generated 0/1 flag) is stored as it is; every
video's audio is used regardless, as SSW60's own baselines do.

Front end (config 'mmcosine', MMCosine's CREMA-D front end over the whole clip, a documented choice:
MMCosine released no SSW60 loader): the mp4 audio at 16 kHz tiled / cropped to 160000 samples
(10 s), scipy PSD nperseg 512 noverlap 353 (Tukey 0.25), log(P + 1e-7), z-scored -> audio
(257, 1004); the first frame of every second (at most 10) at 256x455 (the videos' 16:9) JPEG.

No TensorFlow: Tensor / ClassLabel / Text / Sequence(Image) features, ArrayRecord files.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import sys
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

try:
  import data_builders.common  # noqa: F401
except ImportError:  # `tfds build data_builders/ssw60` from a source checkout.
  sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from data_builders.common.builder import Clip, ClipBuilder, Plan
from data_builders.common.config import ClipConfig, described
from data_builders.common import files as files_lib
from data_builders.common.report import BuildReport

MISSING_AUDIO = ('silence', '')


@dataclasses.dataclass(eq=False)
class Ssw60Config(ClipConfig):
  """Front end (see ClipConfig) plus the label files and the validation fold.

  videos_file / taxa_file: the annotation files, searched anywhere under the manual folder; the
    videos are <asset_id>.mp4 anywhere under it (video_ml/ in the download). num_classes: 60.
  validation_fraction: share of each species' training videos held out as 'validation' (rounded
    per species, at least one when the species has two or more); validation_seed: its permutation.
  missing_audio: 'silence' keeps a video without an audio track (zero spectrogram, audio_present
    0); '' reports and skips it.
  """

  videos_file: str = 'video_ml.csv'
  taxa_file: str = 'taxa.csv'
  num_classes: int = 60
  validation_fraction: float = 0.15
  validation_seed: int = 0
  missing_audio: str = 'silence'
  video_exts: tuple[str, ...] = ('.mp4',)

  def validate(self) -> None:
    super().validate()
    if not 0 <= self.validation_fraction < 1:
      raise ValueError(f'{self.name}: validation_fraction must be in [0, 1).')
    if self.missing_audio not in MISSING_AUDIO:
      raise ValueError(f'{self.name}: missing_audio must be one of {MISSING_AUDIO}.')


BUILDER_CONFIGS = [
    described(
        Ssw60Config, 'mmcosine',
        'MMCosine front end over the whole clip: the mp4 audio at 16 kHz tiled / cropped to 160000 '
        'samples, scipy PSD nperseg 512 noverlap 353 (Tukey 0.25), log(P + 1e-7), z-scored -> '
        'audio (257, 1004); the first frame of every second (at most 10) at 256x455 JPEG; '
        'validation: 15% of each species\' training videos (seed 0).',
        audio_source='video', sample_rate=16000, audio_frontend='mmcosine_log_psd', n_fft=512,
        noverlap=353, num_samples=160000, frame_mode='fps', frame_fps=1.0, max_frames=10,
        frame_size=(256, 455), max_av_mismatch_s=0.0),
]


def read_rows(path: Path) -> list[dict[str, str]]:
  """The rows of a CSV file with a header line, as dicts (surrounding spaces stripped)."""
  with open(path, newline='', errors='replace') as f:
    return [{k.strip(): (v or '').strip() for k, v in row.items() if k}
            for row in csv.DictReader(f)]


def stratified_holdout(labels: dict[str, int], fraction: float, seed: int) -> set[str]:
  """Keys held out from `labels` (key -> class): per class, round(fraction * n) of its keys (at
  least one when the class has two or more and fraction > 0), drawn by a permutation seeded with
  (seed, class) of the class's sorted keys, so the fold does not depend on file order."""
  by_class: dict[int, list[str]] = collections.defaultdict(list)
  for key, label in labels.items():
    by_class[label].append(key)
  held: set[str] = set()
  for label, keys in sorted(by_class.items()):
    keys = sorted(keys)
    count = int(round(fraction * len(keys)))
    if fraction > 0 and len(keys) >= 2:
      count = min(max(count, 1), len(keys) - 1)
    order = np.random.default_rng([seed, label]).permutation(len(keys))
    held.update(keys[i] for i in order[:count])
  return held


class Builder(ClipBuilder):
  """DatasetBuilder for SSW60's videos (registered with TFDS as 'ssw60')."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: mmcosine.'}
  BUILDER_CONFIGS = BUILDER_CONFIGS
  DEFAULT_BUILDER_CONFIG_NAME = 'mmcosine'
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Download ssw60.tar.gz (https://github.com/visipedia/ssw60, research use only), unpack it '
      '(video_ml.csv, taxa.csv, video_ml/*.mp4; audio_ml/ and the image folders are not read) and '
      'pass the folder as --manual_dir. See data_builders/ssw60/README.md.')

  def _info(self) -> tfds.core.DatasetInfo:
    return self._make_info(
        __doc__ or '', homepage='https://github.com/visipedia/ssw60',
        citation='Van Horn et al., Exploring Fine-Grained Audiovisual Categorization with the '
                 'SSW60 Dataset, ECCV 2022.')

  def _label_features(self) -> dict[str, tfds.features.FeatureConnector]:
    return {'label': tfds.features.ClassLabel(num_classes=self.builder_config.num_classes),
            'species': tfds.features.Text(),
            'reliable_audio': tfds.features.Tensor(shape=(), dtype=np.int32)}

  def _find(self, manual: Path, name: str) -> Path:
    found = files_lib.find_named(manual, [name])
    if not found:
      raise FileNotFoundError(f'{self.name}: no {name!r} under {manual}.\n'
                              f'{self.MANUAL_DOWNLOAD_INSTRUCTIONS}')
    return found[0]

  def _classes(self, taxa: Path) -> list[str]:
    """Species names by label (common_name, else species_code, else the label)."""
    cfg = self.builder_config
    names = {}
    for row in read_rows(taxa):
      if row.get('label', '').isdigit():
        names[int(row['label'])] = row.get('common_name') or row.get('species_code') or row['label']
    if sorted(names) != list(range(cfg.num_classes)):
      raise ValueError(f'{self.name}: {taxa} lists labels {sorted(names)[:5]}... ({len(names)}), '
                       f'the config expects 0..{cfg.num_classes - 1}; pass num_classes=N to '
                       'build a derived config if your copy really differs.')
    return [names[i] for i in range(cfg.num_classes)]

  def _plan(self, manual: Path, report: BuildReport) -> Plan:
    cfg = self.builder_config
    videos_file, taxa = self._find(manual, cfg.videos_file), self._find(manual, cfg.taxa_file)
    classes = self._classes(taxa)
    index = files_lib.index_by_stem(manual, cfg.video_exts, report, 'video')
    listed, train_labels = [], {}
    for row in read_rows(videos_file):
      key, label, split = row.get('asset_id', ''), row.get('label', ''), row.get('split', '')
      if not key:
        continue
      if not label.isdigit() or int(label) >= cfg.num_classes:
        report.add(key, 'bad_label', f'{cfg.videos_file}: label {label!r} is not in 0..'
                   f'{cfg.num_classes - 1}')
        continue
      if split not in ('train', 'test'):
        report.add(key, 'bad_label', f'{cfg.videos_file}: split {split!r} is not train / test')
        continue
      if key not in index:
        report.add(key, 'missing_media', f'listed in {cfg.videos_file}, but no {key}.mp4 was '
                   f'found under {manual}')
        continue
      listed.append((key, int(label), split, row.get('reliable_audio', '')))
      if split == 'train':
        train_labels[key] = int(label)
    held = stratified_holdout(train_labels, cfg.validation_fraction, cfg.validation_seed)
    clips = []
    for key, label, split, reliable in listed:
      split = 'validation' if key in held else split
      clips.append(Clip(key, split, {'video': str(index[key])},
                        {'label': label, 'species': classes[label],
                         'reliable_audio': np.int32(1 if reliable == '1' else 0)}))
    return Plan(clips, {'class_names': classes,
                        'videos_file': files_lib.relative(videos_file, manual),
                        'taxa_file': files_lib.relative(taxa, manual),
                        'split_scheme': f'official train / test; validation = '
                                        f'{cfg.validation_fraction:g} of each species\' training '
                                        f'videos (seed {cfg.validation_seed})'})


Ssw60 = Builder  # Descriptive alias (same class; registered once).
