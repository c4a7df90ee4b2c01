"""ave: AVE, Audio-Visual Event localisation (4143 10 s YouTube videos, 28 event classes).

Manual download (see README.md): AVE_Dataset.zip unpacked: AVE/<VideoID>.mp4, Annotations.txt and
the split lists trainSet.txt / valSet.txt / testSet.txt, all lines
`Category&VideoID&Quality&StartTime&EndTime` (a header line is skipped). The label is the video's
category; classes are the sorted category names of Annotations.txt (OGM-GE sorts them too). A video
listed more than once in one split list (videos with several events) is left out of that split, as
OGM-GE does, and counted in the report ('excluded: duplicate_id').

Front end (config 'ogm_ge', OGM-GE's AVE preprocessing): the video's audio track decoded at
22.05 kHz (librosa.load's default, as the reference script), tiled to 160000 samples, clipped,
scipy PSD nperseg 512 noverlap 353, log(P + 1e-7), z-scored -> audio (257, 1004); 1 fps frames (at
most 10) at 256x256 JPEG (OGM-GE picks frames 1, 1 + seg, 1 + 2 seg: avjax.data.clips).

No TensorFlow: Tensor / ClassLabel / Text / Sequence(Image) features, ArrayRecord files.
"""

from __future__ import annotations

import collections
import dataclasses
import sys
from pathlib import Path

import tensorflow_datasets as tfds

try:
  import data_builders.common  # noqa: F401
except ImportError:  # `tfds build data_builders/ave` from a source checkout.
  sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from data_builders.common.builder import Clip, ClipBuilder, Plan
from data_builders.common.config import ClipConfig, described
from data_builders.common import files as files_lib
from data_builders.common.report import BuildReport

SPLIT_FILES = (('train', 'trainSet.txt'), ('validation', 'valSet.txt'), ('test', 'testSet.txt'))


@dataclasses.dataclass(eq=False)
class AveConfig(ClipConfig):
  """Front end (see ClipConfig) plus the label files.

  annotations_file: the list that defines the classes (sorted categories), searched anywhere under
    the manual folder; the split lists are SPLIT_FILES. num_classes: 28.
  drop_duplicates: leave out ids listed more than once in a split list (OGM-GE).
  """

  annotations_file: str = 'Annotations.txt'
  num_classes: int = 28
  drop_duplicates: bool = True
  video_exts: tuple[str, ...] = ('.mp4', '.mkv', '.webm', '.avi')


BUILDER_CONFIGS = [
    described(
        AveConfig, 'ogm_ge',
        'OGM-GE: the video audio at 22.05 kHz (librosa.load default) tiled to 160000 samples, '
        'clipped, scipy PSD nperseg 512 noverlap 353 (Tukey 0.25), log(P + 1e-7), z-scored -> '
        'audio (257, 1004); 1 fps frames (at most 10) at 256x256 JPEG.',
        audio_source='video', sample_rate=22050, audio_frontend='mmcosine_log_psd', n_fft=512,
        noverlap=353, num_samples=160000, frame_mode='fps', frame_fps=1.0, max_frames=10,
        frame_size=(256, 256), max_av_mismatch_s=0.0),
]


def read_list(path: Path) -> list[tuple[str, str]]:
  """(video id, category) of each `Category&VideoID&Quality&StartTime&EndTime` line."""
  out = []
  for line in path.read_text(errors='replace').splitlines():
    parts = [p.strip() for p in line.split('&')]
    if len(parts) >= 2 and parts[1] and parts[1] != 'VideoID':
      out.append((parts[1], parts[0]))
  return out


class Builder(ClipBuilder):
  """DatasetBuilder for AVE (registered with TFDS as 'ave')."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: ogm_ge.'}
  BUILDER_CONFIGS = BUILDER_CONFIGS
  DEFAULT_BUILDER_CONFIG_NAME = 'ogm_ge'
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Download AVE_Dataset.zip (https://github.com/YapengTian/AVE-ECCV18, Google Drive link in '
      'its README), unpack it (AVE/*.mp4, Annotations.txt, trainSet.txt, valSet.txt, testSet.txt) '
      'and pass the folder as --manual_dir. See data_builders/ave/README.md.')

  def _info(self) -> tfds.core.DatasetInfo:
    return self._make_info(
        __doc__ or '', homepage='https://sites.google.com/view/audiovisualresearch',
        citation='Tian et al., Audio-Visual Event Localization in Unconstrained Videos, ECCV 2018.')

  def _label_features(self) -> dict[str, tfds.features.FeatureConnector]:
    return {'label': tfds.features.ClassLabel(num_classes=self.builder_config.num_classes),
            'category': tfds.features.Text()}

  def _plan(self, manual: Path, report: BuildReport) -> Plan:
    cfg = self.builder_config
    found = files_lib.find_named(manual, [cfg.annotations_file])
    if not found:
      raise FileNotFoundError(f'{self.name}: no {cfg.annotations_file!r} under {manual}.\n'
                              f'{self.MANUAL_DOWNLOAD_INSTRUCTIONS}')
    classes = sorted({c for _, c in read_list(found[0])})
    if len(classes) != cfg.num_classes:
      raise ValueError(f'{self.name}: {found[0]} has {len(classes)} categories, the config '
                       f'expects {cfg.num_classes}; pass num_classes={len(classes)} to build a '
                       'derived config if your copy really differs.')
    index = files_lib.index_by_stem(manual, cfg.video_exts, report, 'video')
    clips, split_files, placed = [], {}, {}
    for split, name in SPLIT_FILES:
      paths = files_lib.find_named(manual, [name])
      if not paths:
        report.note(f'no {name} under {manual}: no {split} split')
        continue
      split_files[split] = files_lib.relative(paths[0], manual)
      rows = read_list(paths[0])
      counts = collections.Counter(v for v, _ in rows)
      for vid, category in rows:
        if cfg.drop_duplicates and counts[vid] > 1:
          report.exclude('duplicate_id')
          continue
        if vid in placed:
          report.note(f'{vid} is in {placed[vid]} and {name}; kept in {placed[vid]}')
          continue
        placed[vid] = name
        if category not in classes:
          report.add(vid, 'bad_label', f'{name}: category {category!r} is not in '
                     f'{cfg.annotations_file}')
          continue
        if vid not in index:
          report.add(vid, 'missing_media', f'listed in {name}, but no {vid}.mp4 was found under '
                     f'{manual}')
          continue
        clips.append(Clip(vid, split, {'video': str(index[vid])},
                          {'label': classes.index(category), 'category': category}))
    if 'train' not in split_files:
      raise FileNotFoundError(f'{self.name}: no trainSet.txt under {manual}.\n'
                              f'{self.MANUAL_DOWNLOAD_INSTRUCTIONS}')
    return Plan(clips, {'class_names': classes, 'split_files': split_files,
                        'annotations_file': files_lib.relative(found[0], manual)})


Ave = Builder  # Descriptive alias (same class; registered once).
