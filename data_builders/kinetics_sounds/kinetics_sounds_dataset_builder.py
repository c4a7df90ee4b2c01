"""kinetics_sounds: Kinetics-Sounds (31 classes of Kinetics-400 with audible actions), to records.

Manual download (see README.md): the Kinetics-400 video clips of the KS lists (any folder layout,
found by file stem), the split lists in OGM-GE's format (`<ytid>_<start>,10,<label>` lines,
my_train.txt / my_test.txt, optionally my_val.txt) or the valuation repo's (`<path> <label>`), and
optionally classes.txt (one class name per line, in label order). Clip ids 'ytid_17' are matched to
files named 'ytid_17', 'ytid_000017_000027' (Kinetics-400 downloads) or 'ytid_000017'.

Front end (config 'ogm_ge', OGM-GE / valuation / BalanceBenchmark): the clip's audio track at
16 kHz, mean removed, Kaldi fbank 128 bins (25 ms Hanning window, 10 ms shift, dither 0), cropped /
zero-padded to 1024 frames, (x + 4.503877) / (2 * 5.141276) -> audio (1024, 128) time-major; the
first frame of every second (1 fps, at most 10) at 256x256 JPEG. The 3 frames a model sees are
picked in the input pipeline (avjax.data.clips.ks_frame_indices: random per segment in training,
segment centres in evaluation), so one build serves both.

No TensorFlow: Tensor / ClassLabel / Text / Sequence(Image) features, ArrayRecord files.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import tensorflow_datasets as tfds

try:
  import data_builders.common  # noqa: F401
except ImportError:  # `tfds build data_builders/kinetics_sounds` from a source checkout.
  sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from data_builders.common.builder import Clip, ClipBuilder, Plan
from data_builders.common.config import ClipConfig, described
from data_builders.common import files as files_lib
from data_builders.common.report import BuildReport

VIDEO_EXTS = ('.mp4', '.mkv', '.webm', '.avi', '.mov', '.flv')
LISTS = ('train', 'validation', 'test')


@dataclasses.dataclass(eq=False)
class KineticsSoundsConfig(ClipConfig):
  """Front end (see ClipConfig) plus the lists.

  train_list / validation_list / test_list: file names searched anywhere under the manual folder
    (validation is optional; an empty name switches a split off). class_file: optional class names.
  num_classes: labels are 0 .. num_classes - 1 (31 in OGM-GE's and BalanceBenchmark's lists).
  """

  train_list: str = 'my_train.txt'
  validation_list: str = 'my_val.txt'
  test_list: str = 'my_test.txt'
  class_file: str = 'classes.txt'
  num_classes: int = 31
  video_exts: tuple[str, ...] = VIDEO_EXTS

  def validate(self) -> None:
    super().validate()
    if not (self.train_list and self.test_list) or self.num_classes < 2:
      raise ValueError(f'{self.name}: train_list and test_list are needed, num_classes >= 2.')


BUILDER_CONFIGS = [
    described(
        KineticsSoundsConfig, 'ogm_ge',
        'OGM-GE / valuation / BalanceBenchmark: the clip audio at 16 kHz, mean removed, Kaldi '
        'fbank 128 bins, 25 ms Hanning window, 10 ms shift, 1024 frames (zero-padded / cropped), '
        '(x + 4.503877) / (2 * 5.141276) -> audio (1024, 128); 1 fps frames (at most 10) at '
        '256x256 JPEG (3 are picked per clip in the input pipeline).',
        audio_source='video', sample_rate=16000, audio_frontend='kaldi_fbank', n_mels=128,
        win_length=400, hop_length=160, num_audio_frames=1024, fbank_mean=-4.503877,
        fbank_std=5.141276, frame_mode='fps', frame_fps=1.0, max_frames=10,
        frame_size=(256, 256), max_av_mismatch_s=0.0),
]


def read_list(path: Path) -> list[tuple[str, str]]:
  """(clip id, label text) per line: 'id,10,label' (OGM-GE) or '<path> <label>' (valuation)."""
  out = []
  for line in path.read_text(errors='replace').splitlines():
    line = line.strip()
    if not line or line.startswith('#'):
      continue
    if ',' in line:
      parts = [p.strip() for p in line.split(',')]
      out.append((parts[0], parts[-1]))
    else:
      parts = line.split()
      out.append((Path(parts[0]).stem if len(parts) > 1 else parts[0], parts[-1]))
  return out


class Builder(ClipBuilder):
  """DatasetBuilder for Kinetics-Sounds (registered with TFDS as 'kinetics_sounds')."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: ogm_ge.'}
  BUILDER_CONFIGS = BUILDER_CONFIGS
  DEFAULT_BUILDER_CONFIG_NAME = 'ogm_ge'
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Download the Kinetics-400 clips listed in the Kinetics-Sounds lists (e.g. with the '
      'Kinetics-400 downloader; files named <ytid>_<start>_<end>.mp4 or <ytid>_<start>.mp4, any '
      'folder layout), put the lists my_train.txt / my_test.txt (OGM-GE data/KineticSound, lines '
      '<ytid>_<start>,10,<label>; my_val.txt optional) and optionally classes.txt in the same '
      'folder, and pass it as --manual_dir. See data_builders/kinetics_sounds/README.md.')

  def _info(self) -> tfds.core.DatasetInfo:
    return self._make_info(
        __doc__ or '', homepage='https://github.com/GeWu-Lab/OGM-GE_CVPR2022',
        citation='Arandjelovic and Zisserman, Look, Listen and Learn, ICCV 2017; Kay et al., The '
        'Kinetics Human Action Video Dataset, arXiv:1705.06950, 2017.')

  def _label_features(self) -> dict[str, tfds.features.FeatureConnector]:
    return {'label': tfds.features.ClassLabel(num_classes=self.builder_config.num_classes),
            'youtube_id': tfds.features.Text()}

  def _plan(self, manual: Path, report: BuildReport) -> Plan:
    cfg = self.builder_config
    lists = {}
    for split, name in zip(LISTS, (cfg.train_list, cfg.validation_list, cfg.test_list)):
      found = files_lib.find_named(manual, [name]) if name else []
      if found:
        lists[split] = found[0]
      elif split != 'validation':
        raise FileNotFoundError(f'{self.name}: no {name!r} under {manual} (the {split} list).\n'
                                f'{self.MANUAL_DOWNLOAD_INSTRUCTIONS}')
    index = files_lib.index_by_stem(manual, cfg.video_exts, report, 'video')
    by_ytid = files_lib.ytid_index(index)
    classes = files_lib.find_named(manual, [cfg.class_file]) if cfg.class_file else []
    names = [n.strip() for n in classes[0].read_text().splitlines() if n.strip()] if classes else []
    if names and len(names) != cfg.num_classes:
      report.note(f'{classes[0].name} lists {len(names)} classes, the config expects '
                  f'{cfg.num_classes}; class names are not stored')
      names = []
    seen: dict[str, str] = {}
    clips = []
    for split, path in lists.items():
      for clip_id, label_text in read_list(path):
        if clip_id in seen:
          report.note(f'{clip_id} is listed in {seen[clip_id]} and {split}; kept in '
                      f'{seen[clip_id]}')
          continue
        seen[clip_id] = split
        try:
          label = int(label_text)
          if not 0 <= label < cfg.num_classes:
            raise ValueError(f'not in 0..{cfg.num_classes - 1}')
        except ValueError as e:
          report.add(clip_id, 'bad_label', f'{path.name}: label {label_text!r} ({e})')
          continue
        video = files_lib.find_youtube(clip_id, index, by_ytid)
        if video is None:
          report.add(clip_id, 'missing_media', f'listed in {path.name}, but no video named '
                     f'{" / ".join(files_lib.youtube_stems(clip_id)[:3])} was found under {manual}')
          continue
        clips.append(Clip(clip_id, split, {'video': str(video)},
                          {'label': label, 'youtube_id': clip_id[:11]}))
    used = {c.files['video'] for c in clips}
    report.exclude('videos_not_listed', len({str(p) for p in index.values()} - used))
    return Plan(clips, {
        'class_names': names,
        'split_files': {s: files_lib.relative(p, manual) for s, p in lists.items()},
        'class_file': files_lib.relative(classes[0], manual) if classes else None,
    })


KineticsSounds = Builder  # Descriptive alias (same class; registered once).
