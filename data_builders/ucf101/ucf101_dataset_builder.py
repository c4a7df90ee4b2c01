"""ucf101: UCF101 (13,320 clips, 101 actions), RGB frames and optical flow as the two modalities.

Manual download (see README.md): UCF101.rar unpacked (UCF-101/<Class>/v_<Class>_gXX_cYY.avi) and
UCF101TrainTestSplits-RecognitionTask.zip (ucfTrainTestlist/classInd.txt, trainlist0{1,2,3}.txt,
testlist0{1,2,3}.txt); optionally precomputed flow JPEGs (TSN / denseflow layout:
<flow_dir>/u/<video>/frame000001.jpg ... and <flow_dir>/v/<video>/...). Configs split1..split3 are
the official splits (train / test, by group).

Each record: 'frames' (6, 224, 224, 3) JPEG, the centres of 6 equal segments (BalanceBenchmark
stores 6 RGB frames and picks 3); 'flow' (6, 224, 224, 2) uint8 at the same positions, (dx, dy)
clipped to +-20 px and mapped to 0..255 (TSN), from the precomputed JPEGs when present, else
computed with OpenCV (flow_method, default DIS; 'horn_schunck' is a numpy fallback);
'flow_source' says which.

No TensorFlow: Tensor / ClassLabel / Text / Sequence(Image) features, ArrayRecord files.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

try:
  import data_builders.common  # noqa: F401
except ImportError:  # `tfds build data_builders/ucf101` from a source checkout.
  sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from avjax.media import flow as flow_lib
from data_builders.common.builder import Clip, ClipBuilder, Plan
from data_builders.common.config import ClipConfig, described
from data_builders.common import files as files_lib
from data_builders.common.report import BuildReport

NAME_RE = re.compile(r'^v_([A-Za-z]+)_g(\d+)_c(\d+)$')


@dataclasses.dataclass(eq=False)
class Ucf101Config(ClipConfig):
  """Frames (see ClipConfig: frame_mode 'uniform') plus the split and the flow.

  split: official split 1..3. flow_dir: precomputed flow root under the manual folder ('' never
  looks). flow_method: avjax.media.flow.FLOW_METHODS, for videos without precomputed flow.
  flow_bound: +- pixels mapped to 0..255.
  """

  split: int = 1
  flow_dir: str = 'flow'
  flow_method: str = 'opencv_dis'
  flow_bound: float = 20.0
  num_classes: int = 101
  video_exts: tuple[str, ...] = ('.avi', '.mp4')

  def validate(self) -> None:
    super().validate()
    if self.split not in (1, 2, 3) or self.frame_mode != 'uniform':
      raise ValueError(f"{self.name}: split must be 1..3 and frame_mode 'uniform'.")
    if self.flow_method not in flow_lib.FLOW_METHODS:
      raise ValueError(f'{self.name}: flow_method must be one of {flow_lib.FLOW_METHODS}.')


BUILDER_CONFIGS = [
    described(
        Ucf101Config, f'split{k}',
        f'Official split {k} (trainlist0{k} / testlist0{k}): 6 RGB frames at segment centres, '
        '224x224 JPEG; optical flow at the same frames (precomputed JPEGs, else OpenCV DIS), '
        '+-20 px -> uint8 (6, 224, 224, 2).',
        split=k, frame_mode='uniform', num_frames=6, frame_size=(224, 224))
    for k in (1, 2, 3)
]


def parse_name(stem: str) -> tuple[str, int, int] | None:
  """(class, group, clip) of 'v_ApplyEyeMakeup_g08_c01', None if it is not a UCF101 name."""
  m = NAME_RE.match(stem)
  return None if m is None else (m[1], int(m[2]), int(m[3]))


class Builder(ClipBuilder):
  """DatasetBuilder for UCF101 (registered with TFDS as 'ucf101')."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: split1, split2, split3.'}
  BUILDER_CONFIGS = BUILDER_CONFIGS
  DEFAULT_BUILDER_CONFIG_NAME = 'split1'
  PROCESS_TARGET = 'data_builders.common.flow:safe_process'
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Download UCF101.rar and UCF101TrainTestSplits-RecognitionTask.zip from '
      'https://www.crcv.ucf.edu/data/UCF101.php, unpack both into one folder (UCF-101/, '
      'ucfTrainTestlist/) and pass it as --manual_dir; optionally add precomputed flow JPEGs as '
      'flow/u/<video>/*.jpg and flow/v/<video>/*.jpg. See data_builders/ucf101/README.md.')

  def _info(self) -> tfds.core.DatasetInfo:
    return self._make_info(
        __doc__ or '', homepage='https://www.crcv.ucf.edu/data/UCF101.php',
        citation='Soomro, Zamir and Shah, UCF101: A Dataset of 101 Human Actions Classes From '
        'Videos in The Wild, CRCV-TR-12-01, 2012.')

  def _label_features(self) -> dict[str, tfds.features.FeatureConnector]:
    cfg = self.builder_config
    h, w = cfg.frame_size
    return {
        'label': tfds.features.ClassLabel(num_classes=cfg.num_classes),
        'group': tfds.features.Tensor(shape=(), dtype=np.int32),
        'flow': tfds.features.Tensor(shape=(cfg.num_frames, h, w, 2), dtype=np.uint8,
                                     encoding=tfds.features.Encoding.ZLIB),
        'flow_source': tfds.features.Text(),
    }

  def _flow_root(self, manual: Path) -> Path | None:
    """<manual>/<flow_dir> or <manual>/*/<flow_dir> holding u/ and v/ (not searched deeper: the
    flow folders hold millions of files)."""
    name = self.builder_config.flow_dir
    if not name:
      return None
    for root in [manual / name] + sorted(manual.glob(f'*/{name}')):
      if (root / 'u').is_dir() and (root / 'v').is_dir():
        return root
    return None

  def _plan(self, manual: Path, report: BuildReport) -> Plan:
    cfg = self.builder_config
    lists = {}
    for name in ('classInd.txt', f'trainlist0{cfg.split}.txt', f'testlist0{cfg.split}.txt'):
      found = files_lib.find_named(manual, [name])
      if not found:
        raise FileNotFoundError(f'{self.name}: no {name} under {manual}.\n'
                                f'{self.MANUAL_DOWNLOAD_INSTRUCTIONS}')
      lists[name] = found[0]
    classes = [line.split()[1] for line in lists['classInd.txt'].read_text().splitlines()
               if len(line.split()) == 2]
    if len(classes) != cfg.num_classes:
      raise ValueError(f'{self.name}: classInd.txt lists {len(classes)} classes, expected '
                       f'{cfg.num_classes}.')
    index = files_lib.index_by_stem(manual, cfg.video_exts, report, 'video')
    flow_root = self._flow_root(manual)
    clips, needs_method = [], 0
    for split, key in (('train', f'trainlist0{cfg.split}.txt'),
                       ('test', f'testlist0{cfg.split}.txt')):
      for line in lists[key].read_text().splitlines():
        if not line.strip():
          continue
        stem = Path(line.split()[0]).stem
        parsed = parse_name(stem)
        if parsed is None or parsed[0] not in classes:
          report.add(stem, 'bad_label', f'{key}: {line.strip()!r} is not a UCF101 clip of a '
                     'class in classInd.txt')
          continue
        if stem not in index:
          report.add(stem, 'missing_media', f'listed in {key}, but no {stem}.avi was found under '
                     f'{manual}')
          continue
        files = {'video': str(index[stem])}
        u, v = (flow_root / c / stem if flow_root else None for c in ('u', 'v'))
        if u is not None and u.is_dir() and v.is_dir():
          files.update(flow_u=str(u), flow_v=str(v))
        else:
          needs_method += 1
        clips.append(Clip(stem, split, files, {'label': classes.index(parsed[0]),
                                               'group': np.int32(parsed[1])}))
    if needs_method:  # Fail now, not once per clip, when the flow method cannot run here.
      flow_lib.check_method(cfg.flow_method)
    return Plan(clips, {
        'class_names': classes,
        'split_files': {k: files_lib.relative(p, manual) for k, p in lists.items()},
        'flow_dir': files_lib.relative(flow_root, manual),
        'clips_with_precomputed_flow': len(clips) - needs_method,
        'clips_with_computed_flow': needs_method,
    })


Ucf101 = Builder  # Descriptive alias (same class; registered once).
