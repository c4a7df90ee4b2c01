"""muse_mimic: MuSe-Mimic 2023 (Hume-Vidmimic: >18k clips of people mimicking emotional videos).

Manual download (see README.md; EULA via the MuSe organisers): the challenge package's raw videos
(any folder layout, found by clip id) with partition.csv (`Id,Partition`: train / devel / test,
speaker-independent by construction) and labels.csv (`Id,Approval,Disappointment,Uncertainty`,
self-reported intensities in [0, 1]). Clips without labels (the challenge's test partition until its
labels are released) are left out and counted in the report ('excluded: unlabelled').

Each record: 'attributes' (3,) float32 = (approval, disappointment, uncertainty) (ATTRIBUTE_NAMES);
no class label (the task is regression, metric mean Pearson r); 'audio' Kaldi fbank (1024, 128)
and 'frames' (8, 224, 224, 3) as mer2023 (vat.md: AcFormer / VAT front end).

No TensorFlow: Tensor / Text / Sequence(Image) features, ArrayRecord files.
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
except ImportError:  # `tfds build data_builders/muse_mimic` from a source checkout.
  sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from data_builders.common.builder import Clip, ClipBuilder, Plan
from data_builders.common.config import ClipConfig, described
from data_builders.common import files as files_lib
from data_builders.common.report import BuildReport
from data_builders.mer2023.mer2023_dataset_builder import (VAT_DESCRIPTION, VAT_FRONT_END,
                                                           VIDEO_EXTS, index_videos)

ATTRIBUTE_NAMES = ('approval', 'disappointment', 'uncertainty')
PARTITIONS = {'train': 'train', 'devel': 'validation', 'dev': 'validation',
              'development': 'validation', 'validation': 'validation', 'test': 'test'}


@dataclasses.dataclass(eq=False)
class MuseMimicConfig(ClipConfig):
  """Front end (see ClipConfig) plus the label files (searched anywhere under the manual folder)."""

  partition_file: str = 'partition.csv'
  labels_file: str = 'labels.csv'
  video_exts: tuple[str, ...] = VIDEO_EXTS


BUILDER_CONFIGS = [described(MuseMimicConfig, 'vat', VAT_DESCRIPTION, **VAT_FRONT_END)]


def clip_key(raw: str) -> str:
  """A clip id as written in the CSVs ('[123]', '"00123"', '123') -> '123'-style stem text."""
  return raw.strip().strip('[]"\'').strip()


class Builder(ClipBuilder):
  """DatasetBuilder for MuSe-Mimic (registered with TFDS as 'muse_mimic')."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: vat.'}
  BUILDER_CONFIGS = BUILDER_CONFIGS
  DEFAULT_BUILDER_CONFIG_NAME = 'vat'
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Request the MuSe 2023 Mimic package (https://www.muse-challenge.org, EULA), unpack its raw '
      'videos together with partition.csv and labels.csv into one folder and pass it as '
      '--manual_dir. See data_builders/muse_mimic/README.md.')

  def _info(self) -> tfds.core.DatasetInfo:
    return self._make_info(
        __doc__ or '', homepage='https://www.muse-challenge.org/',
        citation='Christ et al., The MuSe 2023 Multimodal Sentiment Analysis Challenge: Mimicked '
        'Emotions, Cross-Cultural Humour, and Personalisation, MuSe 2023.')

  def _label_features(self) -> dict[str, tfds.features.FeatureConnector]:
    return {'attributes': tfds.features.Tensor(shape=(3,), dtype=np.float32)}

  def _dataset_metadata(self) -> dict[str, Any]:
    return {'attribute_names': list(ATTRIBUTE_NAMES)}

  def _find(self, manual: Path, name: str) -> Path:
    found = files_lib.find_named(manual, [name])
    if not found:
      raise FileNotFoundError(f'{self.name}: no {name} under {manual}.\n'
                              f'{self.MANUAL_DOWNLOAD_INSTRUCTIONS}')
    return found[0]

  def _plan(self, manual: Path, report: BuildReport) -> Plan:
    cfg = self.builder_config
    partition_path = self._find(manual, cfg.partition_file)
    labels_path = self._find(manual, cfg.labels_file)
    table = files_lib.read_csv_plain(labels_path)  # Header: Id, then the three targets.
    labels = {clip_key(row[0]): row[1:4] for row in table[1:]}
    header = [h.lower() for h in table[0]] if table else []
    if header[1:4] != list(ATTRIBUTE_NAMES):
      report.note(f'{labels_path.name} header {header} is not (id, {", ".join(ATTRIBUTE_NAMES)});'
                  ' columns 2-4 were read in that order')
    videos = index_videos(manual, cfg.video_exts)
    clips = []
    for row in files_lib.read_csv_plain(partition_path)[1:]:
      key, split = clip_key(row[0]), PARTITIONS.get(row[-1].strip().lower())
      if split is None:
        report.add(key, 'bad_label', f'{partition_path.name}: unknown partition {row[-1]!r}')
        continue
      if key not in labels:
        report.exclude('unlabelled')
        continue
      try:
        values = np.array([float(v) for v in labels[key]], np.float32)
        if values.shape != (3,) or not np.all(np.isfinite(values)):
          raise ValueError(f'{len(values)} values, expected 3 finite ones')
      except ValueError as e:
        report.add(key, 'bad_label', f'{labels_path.name}: targets {labels[key]} ({e})')
        continue
      paths = videos.get(key) or (videos.get(str(int(key))) if key.isdigit() else None)
      if not paths:
        report.add(key, 'missing_media', f'listed in {partition_path.name}, but no video named '
                   f'{key} was found under {manual}')
        continue
      clips.append(Clip(key, split, {'video': str(paths[0])}, {'attributes': values}))
    return Plan(clips, {'partition_file': files_lib.relative(partition_path, manual),
                        'labels_file': files_lib.relative(labels_path, manual)})


MuseMimic = Builder  # Descriptive alias (same class; registered once).
