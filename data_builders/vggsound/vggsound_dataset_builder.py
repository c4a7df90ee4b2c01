"""vggsound: VGGSound (~200k 10 s YouTube clips, 309/310 classes) and its MM-Debiased subset.

Manual download (see README.md): the clips (any folder layout, found by file stem: 'ytid_17',
'ytid_000017_000027' or 'ytid_000017'), vggsound.csv (rows `ytid,start_seconds,label,split`, no
header) and, for the 'mm_debiased' config, MM-Debiased.json ({id: {subset, label}}, ids in
VGGSound 'ytid_000017_000027' or Kinetics-400 'ytid_20' style, or a bare 'ytid'; MM-Debiased also
holds Kinetics-400 clips, which go in the same folder).

Front end (both configs; OGM-GE's VGGSound recipe): the clip audio at 16 kHz, tiled to 10 s, clipped
to [-1, 1], STFT n_fft 256 hop 128 (hann, centred), log(|S| + 1e-7) of the WHOLE 10 s -> audio
(129, 1251); the random 5 s crop (626 frames) is taken in the input pipeline
(avjax.data.clips.crop_time), so one build serves every epoch. 1 fps frames (at most 10) at 256x256
JPEG.

No TensorFlow: Tensor / ClassLabel / Text / Sequence(Image) features, ArrayRecord files.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

try:
  import data_builders.common  # noqa: F401
except ImportError:  # `tfds build data_builders/vggsound` from a source checkout.
  sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from data_builders.common.builder import Clip, ClipBuilder, Plan
from data_builders.common.config import ClipConfig, described
from data_builders.common import files as files_lib
from data_builders.common.report import BuildReport

VIDEO_EXTS = ('.mp4', '.mkv', '.webm', '.avi', '.mov', '.flv')
MM_DEBIASED_CLASSES = ('bowling', 'cleaning floor', 'lawn mowing', 'motorcycling', 'playing cello',
                       'playing flute', 'playing piano', 'singing', 'whistling',
                       'writing on blackboard')
CSV_SPLITS = {'train': 'train', 'test': 'test'}
JSON_SPLITS = {'training': 'train', 'validation': 'validation', 'testing': 'test'}


@dataclasses.dataclass(eq=False)
class VggSoundConfig(ClipConfig):
  """Front end (see ClipConfig) plus the label source.

  subset: '' (all of vggsound.csv; classes = its sorted label names, at most num_classes) or
    'mm_debiased' (the clips of json_file; MM_DEBIASED_CLASSES). csv_file / json_file: file names
    searched anywhere under the manual folder.
  """

  subset: str = ''
  csv_file: str = 'vggsound.csv'
  json_file: str = 'MM-Debiased.json'
  num_classes: int = 309
  video_exts: tuple[str, ...] = VIDEO_EXTS

  def validate(self) -> None:
    super().validate()
    if self.subset not in ('', 'mm_debiased'):
      raise ValueError(f"{self.name}: subset must be '' or 'mm_debiased'.")


_FRONT_END = dict(
    audio_source='video', sample_rate=16000, audio_frontend='ogm_ge_log_stft', n_fft=256,
    hop_length=128, num_samples=160000, frame_mode='fps', frame_fps=1.0, max_frames=10,
    frame_size=(256, 256), max_av_mismatch_s=0.0)
_AUDIO = ('the clip audio at 16 kHz tiled to 10 s, clipped, STFT n_fft 256 hop 128, '
          'log(|S| + 1e-7) -> audio (129, 1251) (the 5 s crop, 626 frames, is taken in the input '
          'pipeline); 1 fps frames (at most 10) at 256x256 JPEG.')
BUILDER_CONFIGS = [
    described(VggSoundConfig, 'ogm_ge',
              f'OGM-GE VGGSound: all clips of vggsound.csv (train / test): {_AUDIO}', **_FRONT_END),
    described(VggSoundConfig, 'mm_debiased',
              'Valuation paper (CVPR 2024) MM-Debiased: the clips of MM-Debiased.json (training / '
              f'validation / testing), 10 classes: {_AUDIO}', subset='mm_debiased',
              num_classes=len(MM_DEBIASED_CLASSES), **_FRONT_END),
]


class Builder(ClipBuilder):
  """DatasetBuilder for VGGSound (registered with TFDS as 'vggsound')."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: ogm_ge, mm_debiased.'}
  BUILDER_CONFIGS = BUILDER_CONFIGS
  DEFAULT_BUILDER_CONFIG_NAME = 'ogm_ge'
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Download the VGGSound clips (e.g. the Hugging Face mirror Loie/VGGSound, or your own '
      'yt-dlp download of vggsound.csv; files named <ytid>_<start>.mp4 or '
      '<ytid>_<start:06d>_<end:06d>.mp4, any folder layout) and vggsound.csv into one folder and '
      'pass it as --manual_dir. For mm_debiased add MM-Debiased.json (GeWu-Lab/Valuate-and-Enhance-'
      'Multimodal-Cooperation) and its Kinetics-400 clips. See data_builders/vggsound/README.md.')

  def _info(self) -> tfds.core.DatasetInfo:
    return self._make_info(
        __doc__ or '', homepage='https://www.robots.ox.ac.uk/~vgg/data/vggsound/',
        citation='Chen et al., VGGSound: A Large-scale Audio-Visual Dataset, ICASSP 2020; Wei et '
        'al., Enhancing Multimodal Cooperation via Sample-level Modality Valuation, CVPR 2024.')

  def _label_features(self) -> dict[str, tfds.features.FeatureConnector]:
    cfg = self.builder_config
    if cfg.subset == 'mm_debiased':
      label = tfds.features.ClassLabel(names=MM_DEBIASED_CLASSES)
    else:
      label = tfds.features.ClassLabel(num_classes=cfg.num_classes)
    return {'label': label, 'youtube_id': tfds.features.Text()}

  def _dataset_metadata(self) -> dict:
    if self.builder_config.subset == 'mm_debiased':
      return {'class_names': list(MM_DEBIASED_CLASSES)}
    return {}

  def _rows(self, manual: Path, report: BuildReport) -> tuple[list[tuple], Path, list[str]]:
    """[(clip id, split, label index)], the label file, the class names."""
    cfg = self.builder_config
    name = cfg.json_file if cfg.subset == 'mm_debiased' else cfg.csv_file
    found = files_lib.find_named(manual, [name])
    if not found:
      raise FileNotFoundError(f'{self.name}/{cfg.name}: no {name!r} under {manual}.\n'
                              f'{self.MANUAL_DOWNLOAD_INSTRUCTIONS}')
    path, rows = found[0], []
    if cfg.subset == 'mm_debiased':
      classes = list(MM_DEBIASED_CLASSES)
      for clip_id, entry in sorted(json.loads(path.read_text()).items()):
        split = JSON_SPLITS.get(str(entry.get('subset', '')).lower())
        label = entry.get('label', '')
        if split is None or label not in classes:
          report.add(clip_id, 'bad_label', f'{path.name}: subset {entry.get("subset")!r} / '
                     f'label {label!r} not in {sorted(JSON_SPLITS)} / the 10 classes')
          continue
        rows.append((clip_id, split, classes.index(label)))
      return rows, path, classes
    table = files_lib.read_csv_plain(path)
    classes = sorted({r[2] for r in table if len(r) >= 4})
    if len(classes) > cfg.num_classes:
      raise ValueError(f'{self.name}/{cfg.name}: {path.name} has {len(classes)} classes but the '
                       f'config has num_classes={cfg.num_classes}; build with '
                       f'num_classes={len(classes)} (a derived config).')
    for row in table:
      if len(row) < 4 or not row[1].isdigit() or row[3].lower() not in CSV_SPLITS:
        report.add(row[0] if row else '?', 'bad_label', f'{path.name}: malformed row {row}')
        continue
      rows.append((f'{row[0]}_{int(row[1])}', CSV_SPLITS[row[3].lower()], classes.index(row[2])))
    return rows, path, classes

  def _plan(self, manual: Path, report: BuildReport) -> Plan:
    cfg = self.builder_config
    rows, label_file, classes = self._rows(manual, report)
    index = files_lib.index_by_stem(manual, cfg.video_exts, report, 'video')
    by_ytid = files_lib.ytid_index(index)
    clips, seen = [], set()
    for clip_id, split, label in rows:
      if clip_id in seen:
        report.note(f'{clip_id} is listed twice in {label_file.name}; the first row is used')
        continue
      seen.add(clip_id)
      video = files_lib.find_youtube(clip_id, index, by_ytid)
      if video is None:
        report.add(clip_id, 'missing_media', f'listed in {label_file.name}, but no video named '
                   f'{" / ".join(files_lib.youtube_stems(clip_id)[:3])} was found under {manual}')
        continue
      clips.append(Clip(clip_id, split, {'video': str(video)},
                        {'label': label, 'youtube_id': clip_id[:11]}))
    used = {c.files['video'] for c in clips}
    report.exclude('videos_not_listed', len({str(p) for p in index.values()} - used))
    counts = np.bincount([c.labels['label'] for c in clips], minlength=len(classes))
    return Plan(clips, {'class_names': classes,
                        'label_file': files_lib.relative(label_file, manual),
                        'clips_per_class': [int(n) for n in counts]})


VggSound = Builder  # Descriptive alias (same class; registered once).
