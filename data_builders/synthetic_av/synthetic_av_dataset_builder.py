"""synthetic_av: deterministic audio-visual clips with controllable modality imbalance.

Each clip has a class label; the audio is a harmonic, amplitude-modulated tone whose pitch and
modulation rate identify a "pattern", buried in pink noise at a per-sample SNR and stored as a log-mel
spectrogram through `avjax.media.audio.log_mel_spectrogram` (the front end real builders use). The
frames show a striped shape whose colour, stripe orientation and outline identify a pattern, at a random
moving position under clutter, blended in with a per-sample visibility. The configs decide how the
patterns relate to the label (see README.md): audio_dominant, balanced, debiased, complementary.
With `flow=True` records also hold the frames' true optical flow as the ucf101 builder stores flow
('flow' (T, S, S, 2) uint8), for RGB + flow experiments without a download.

No download, no TensorFlow: Tensor / ClassLabel / Text features only, ArrayRecord files by default.
Every record is a pure function of (seed, split, index), so the dataset does not depend on generation
order or parallelism.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

try:
  from avjax.media import audio as audio_lib
except ImportError:  # `tfds build data_builders/synthetic_av` from a source checkout (not pip-installed).
  sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
  from avjax.media import audio as audio_lib
from avjax.media import flow as flow_lib
from data_builders.common import storage
from data_builders.common.messages import BuildMessages

from . import signals

try:  # Optional (ships with scikit-learn); see _one_blas_thread.
  from threadpoolctl import ThreadpoolController
except ImportError:
  ThreadpoolController = None

MODES = ('standard', 'debiased', 'complementary')
SPLITS = ('train', 'validation', 'test')  # Index in this tuple = the split's seed-stream index.


@dataclasses.dataclass(eq=False)
class SyntheticAVConfig(tfds.core.BuilderConfig):
  """All generation parameters; every field is stored in the dataset metadata.

  mode: 'standard' (both modalities encode the label), 'debiased' (per sample exactly one modality
    encodes it), 'complementary' (audio encodes label // 2, visual encodes label % 2).
  audio_snr_db / visual_visibility: per-sample uniform ranges (dB; [0, 1] blend of the target).
  *_informative_prob: probability a modality carries its pattern in 'standard' mode; in 'debiased'
    mode audio_informative_prob is P(audio is the informative one) and visual is the complement.
  other_class_prob: an uninformative modality shows another pattern with this probability, else only
    noise (no tone / no target shape).
  """

  mode: str = 'standard'
  num_classes: int = 6
  num_frames: int = 3
  image_size: int = 64
  sample_rate: int = 16000
  clip_seconds: float = 1.0
  n_mels: int = 64
  n_fft: int = 512
  hop_length: int = 250
  n_audio_frames: int = 64
  log_offset: float = 1e-6
  num_train: int = 2000
  num_validation: int = 400
  num_test: int = 400
  seed: int = 0
  audio_snr_db: tuple[float, float] = (-12.0, 0.0)
  audio_informative_prob: float = 1.0
  pitch_jitter: float = 0.02
  visual_visibility: tuple[float, float] = (0.4, 0.8)
  visual_informative_prob: float = 0.75
  num_distractors: tuple[int, int] = (3, 6)
  pixel_noise: float = 12.0
  other_class_prob: float = 1.0
  attribute_noise: float = 0.05
  flow: bool = False  # Also store the frames' true optical flow ('flow', as the ucf101 builder).
  flow_bound: float = 4.0  # Pixels per frame mapped to 0 / 255 (the motions here are small).

  def knobs(self) -> dict[str, Any]:
    """The generation parameters as a JSON-able dict (no TFDS name/version fields)."""
    base = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}
    out = {}
    for f in dataclasses.fields(self):
      if f.name not in base:
        v = getattr(self, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out

  @property
  def num_audio_groups(self) -> int:
    """Number of distinct audio patterns (what audio alone can tell apart)."""
    return self.num_classes // 2 if self.mode == 'complementary' else self.num_classes

  @property
  def num_visual_groups(self) -> int:
    return 2 if self.mode == 'complementary' else self.num_classes

  @property
  def num_samples(self) -> int:
    """Waveform length giving exactly n_audio_frames centred STFT frames."""
    return (self.n_audio_frames - 1) * self.hop_length

  def validate(self) -> None:
    if self.mode not in MODES:
      raise ValueError(f'synthetic_av: mode must be one of {MODES}, got {self.mode!r}.')
    if self.num_classes < 2:
      raise ValueError('synthetic_av: num_classes must be >= 2.')
    if self.mode == 'complementary' and (self.num_classes % 2 or self.num_classes < 4):
      raise ValueError('synthetic_av: complementary mode needs an even num_classes >= 4 '
                       f'(audio encodes label // 2, visual label % 2), got {self.num_classes}.')

  def bounds(self) -> dict[str, float]:
    """Best achievable single-modality accuracy implied by the generator (upper bounds)."""
    k = self.num_classes
    if self.mode == 'complementary':
      return {'audio': 1.0 / (k // self.num_audio_groups), 'visual': 1.0 / (k // 2), 'both': 1.0}
    pa, pv, q = self.audio_informative_prob, self.visual_informative_prob, self.other_class_prob
    if self.mode == 'debiased':
      pv = 1.0 - pa
    # An uninformative modality shows noise (a guess is right 1/k) or another class (never right).
    single = lambda p: p + (1 - p) * (1 - q) / k
    # Neither informative: guess among the classes not shown (two other-class patterns agree 1/(k-1)).
    same = 1 / (k - 1)
    guess = ((1 - q) ** 2 / k + 2 * q * (1 - q) / (k - 1)
             + q * q * (same / (k - 1) + (1 - same) / max(k - 2, 1)))
    p_none = 0.0 if self.mode == 'debiased' else (1 - pa) * (1 - pv)
    return {'audio': single(pa), 'visual': single(pv), 'both': 1 - p_none * (1 - guess)}


def _described(name: str, text: str, **kw: Any) -> SyntheticAVConfig:
  """A named config whose description also lists all its knobs (kept in dataset_info.json)."""
  cfg = SyntheticAVConfig(name=name, **kw)
  cfg.description = f'{text} Knobs: {json.dumps(cfg.knobs(), sort_keys=True)}'
  return cfg


BUILDER_CONFIGS = [
    _described(
        'audio_dominant',
        'Audio easy (audio-only > 90%), visual informative but hard (visual-only well above chance, '
        'capped by visual_informative_prob): joint training tends to starve the visual encoder.',
        audio_snr_db=(-12.0, 0.0), visual_visibility=(0.4, 0.8), visual_informative_prob=0.75,
        other_class_prob=1.0),
    _described(
        'balanced',
        'Both modalities about equally hard (each alone ~70-85%); fusing them helps.',
        audio_snr_db=(-19.0, -7.0), visual_visibility=(0.45, 0.85), audio_informative_prob=0.85,
        visual_informative_prob=0.85, other_class_prob=0.0),
    _described(
        'debiased',
        'Per sample exactly one modality (about 50/50) carries the label; the other shows only noise '
        '(audio_informative / visual_informative record which).',
        mode='debiased', audio_snr_db=(-12.0, 0.0), visual_visibility=(0.6, 0.9),
        audio_informative_prob=0.5, visual_informative_prob=0.5, other_class_prob=0.0),
    _described(
        'complementary',
        'Audio encodes label // 2 and visual label % 2: audio alone reaches at most 1/2, visual alone '
        'at most 1/3 (6 classes), both together 1.0.',
        mode='complementary', audio_snr_db=(-12.0, 0.0), visual_visibility=(0.6, 0.9),
        visual_informative_prob=1.0),
]


_BLAS: list = []


def _one_blas_thread() -> contextlib.AbstractContextManager:
  """One BLAS thread around the mel filterbank product.

  The summation order of OpenBLAS (so the last float32 bits of the spectrogram) depends on its thread
  count; pinning it makes records bit-identical whatever the caller's threading. It is also ~20x faster
  for this tiny product on a busy machine.
  """
  if ThreadpoolController is None:
    return contextlib.nullcontext()
  if not _BLAS:
    _BLAS.append(ThreadpoolController())  # Found once: listing the loaded libraries is slow.
  return _BLAS[0].limit(limits=1, user_api='blas')


def _other(rng: np.random.Generator, pattern: int, num_patterns: int) -> int:
  return (pattern + 1 + int(rng.integers(num_patterns - 1))) % num_patterns


def make_example(cfg: SyntheticAVConfig, split: str, index: int) -> dict[str, Any]:
  """One record; a pure function of (cfg, split, index)."""
  split_index = SPLITS.index(split)
  rng = np.random.default_rng([cfg.seed, split_index, index])
  k = cfg.num_classes
  label = int(rng.integers(k))
  if cfg.mode == 'complementary':
    group_a, group_v = label // 2, label % 2
  else:
    group_a = group_v = label
  if cfg.mode == 'debiased':
    audio_inf = bool(rng.random() < cfg.audio_informative_prob)
    visual_inf = not audio_inf
  elif cfg.mode == 'complementary':
    audio_inf = visual_inf = True
  else:
    audio_inf = bool(rng.random() < cfg.audio_informative_prob)
    visual_inf = bool(rng.random() < cfg.visual_informative_prob)
  # What each modality shows: its group's pattern, another pattern, or nothing (None).
  shown = []
  for inf, group, n in ((audio_inf, group_a, cfg.num_audio_groups),
                        (visual_inf, group_v, cfg.num_visual_groups)):
    other = _other(rng, group, n)
    use_other = rng.random() < cfg.other_class_prob
    shown.append(group if inf else (other if use_other else None))
  snr = float(rng.uniform(*cfg.audio_snr_db))
  vis = float(rng.uniform(*cfg.visual_visibility))
  attrs = signals.class_attributes(k)[label] + rng.normal(0.0, cfg.attribute_noise, 3)
  # Separate streams per modality: changing one modality's generator never shifts the other.
  stream = lambda i: np.random.default_rng([cfg.seed, split_index, index, i])
  wave = signals.synth_audio(stream(1), shown[0], cfg, snr)
  with _one_blas_thread():
    spec = audio_lib.log_mel_spectrogram(
        wave, cfg.sample_rate, n_mels=cfg.n_mels, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
        log_offset=cfg.log_offset)
  if spec.shape != (cfg.n_mels, cfg.n_audio_frames):
    raise ValueError(f'synthetic_av: spectrogram shape {spec.shape} != '
                     f'({cfg.n_mels}, {cfg.n_audio_frames}); check hop_length / n_audio_frames.')
  frames, flow = signals.render_frames(stream(2), shown[1], cfg, vis)
  extra = {'flow': flow_lib.quantize_flow(flow, cfg.flow_bound)} if cfg.flow else {}
  return {
      **extra,
      'id': f'{split}_{index:06d}',
      'audio': spec,
      'frames': frames,
      'label': label,
      'audio_snr': np.float32(snr),
      'visual_visibility': np.float32(vis),
      'audio_informative': np.bool_(audio_inf),
      'visual_informative': np.bool_(visual_inf),
      'attributes': np.clip(attrs, 0.0, 1.0).astype(np.float32),
      'group_audio': np.int32(group_a),
      'group_visual': np.int32(group_v),
  }


class Builder(BuildMessages, tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for synthetic_av (registered with TFDS as 'synthetic_av')."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: audio_dominant, balanced, debiased, complementary.'}
  BUILDER_CONFIGS = BUILDER_CONFIGS
  DEFAULT_BUILDER_CONFIG_NAME = 'audio_dominant'
  BUILD_SOURCE = 'generated signals (nothing to download)'

  def __init__(self, *, file_format: str | tfds.core.FileFormat | None = None, **kwargs: Any):
    super().__init__(file_format=file_format, **kwargs)
    # ArrayRecord (random access through tfds.data_source) unless asked otherwise or already on disk.
    if file_format is None and not self.is_prepared():
      self.info.set_file_format(tfds.core.FileFormat.ARRAY_RECORD, override=True)

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    cfg.validate()
    s, k = cfg.image_size, cfg.num_classes
    scalar = lambda dt: tfds.features.Tensor(shape=(), dtype=dt)
    features = tfds.features.FeaturesDict({
        'id': tfds.features.Text(),
        'audio': tfds.features.Tensor(shape=(cfg.n_mels, cfg.n_audio_frames), dtype=np.float32,
                                      encoding=tfds.features.Encoding.BYTES),
        'frames': tfds.features.Tensor(shape=(cfg.num_frames, s, s, 3), dtype=np.uint8,
                                       encoding=tfds.features.Encoding.BYTES),
        'label': tfds.features.ClassLabel(names=[f'class_{i}' for i in range(k)]),
        'audio_snr': scalar(np.float32),
        'visual_visibility': scalar(np.float32),
        'audio_informative': scalar(np.bool_),
        'visual_informative': scalar(np.bool_),
        'attributes': tfds.features.Tensor(shape=(3,), dtype=np.float32),
        'group_audio': scalar(np.int32),
        'group_visual': scalar(np.int32),
        **({'flow': tfds.features.Tensor(shape=(cfg.num_frames, s, s, 2), dtype=np.uint8,
                                         encoding=tfds.features.Encoding.BYTES)}
           if cfg.flow else {}),
    })
    metadata = tfds.core.MetadataDict(
        config=cfg.knobs(), bounds=cfg.bounds(), num_audio_groups=cfg.num_audio_groups,
        num_visual_groups=cfg.num_visual_groups,
        class_attributes=signals.class_attributes(k).tolist(),
        attribute_names=['arousal', 'valence', 'dominance'])
    return tfds.core.DatasetInfo(builder=self, features=features, metadata=metadata,
                                 description=(__doc__ or '') + '\n' + (cfg.description or ''))

  def _download_and_prepare(self, dl_manager: Any, download_config: Any) -> None:
    with storage.uncompressed_array_records():  # Faster reads (data_builders/common/storage.py).
      super()._download_and_prepare(dl_manager=dl_manager, download_config=download_config)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    cfg = self.builder_config
    # Warm librosa (numba compilation on a fresh environment) once, not inside the first example.
    audio_lib.log_mel_spectrogram(np.zeros(cfg.num_samples, np.float32), cfg.sample_rate,
                                  n_mels=cfg.n_mels, n_fft=cfg.n_fft, hop_length=cfg.hop_length)
    sizes = {'train': cfg.num_train, 'validation': cfg.num_validation, 'test': cfg.num_test}
    return {split: self._generate_examples(split, n) for split, n in sizes.items() if n > 0}

  def _generate_examples(self, split: str, num: int) -> Iterator[tuple[str, dict[str, Any]]]:
    cfg = self.builder_config
    for i in range(num):
      ex = make_example(cfg, split, i)
      yield ex['id'], ex


SyntheticAV = Builder  # Descriptive alias (same class; registered once).
