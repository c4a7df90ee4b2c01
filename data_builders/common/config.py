"""Builder configs whose every field is a preprocessing parameter (stored in the dataset metadata).

`ClipConfig` holds the media front end shared by the audio-visual builders; dataset configs subclass
it with their label / split fields. `make_config` derives distinctly named variants from a named
config, so a changed parameter never shares a directory on disk with the original.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from typing import Any

import tensorflow_datasets as tfds

AUDIO_FRONTENDS = ('', 'ogm_ge_log_stft', 'mmcosine_log_psd', 'log_mel', 'kaldi_fbank',
                   'waveform')
AUDIO_DTYPES = ('float32', 'float16')  # Storage of spectrograms / feature sequences.
WAVEFORM_DTYPE = 'int16'  # Storage of 'waveform' audio: 16-bit PCM, as distributed.
FRAME_MODES = ('', 'fps', 'centre', 'centre_window', 'uniform')
_BASE_FIELDS = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}


@dataclasses.dataclass(eq=False)
class ClipConfig(tfds.core.BuilderConfig):
  """Media front end of one clip (an empty string switches a part off).

  Audio: audio_source 'audio' (the separate audio file) or 'video' (the video container's track),
    decoded to mono at sample_rate (soxr_hq resampling, as librosa.load), then audio_frontend:
    'ogm_ge_log_stft' (tile to num_samples, clip, STFT n_fft / hop_length, log(|S| + 1e-7));
    'mmcosine_log_psd' (tile to num_samples, scipy PSD nperseg = n_fft, noverlap, log, z-score);
    'log_mel' (tile/crop to num_samples when > 0, mel power spectrogram n_mels / n_fft /
    win_length / hop_length, log(S + log_offset) or power_to_db(ref=max) when to_db, then crop /
    pad with pad_value to num_audio_frames when > 0);
    'kaldi_fbank' (Kaldi / torchaudio fbank of the mean-removed wave: n_mels bins, win_length /
    hop_length samples, zero-padded / cropped to num_audio_frames, then (x - fbank_mean) /
    (2 * fbank_std)); stored TIME-major (num_audio_frames, n_mels), as the references feed it;
    'waveform' (the whole mono wave as 16-bit PCM, variable length (N,); models with their own
    front end, e.g. MMCosine's VoxCeleb speaker encoder).
  Frames: frame_mode 'fps' (first frame of every 1/frame_fps s, at most max_frames if > 0),
    'centre' (one frame, index n // 2), 'centre_window' (n // 2 +- frame_window, edges repeated),
    'uniform' (num_frames segment centres); frame_crop '' / 'square' (centred) / (top, bottom,
    width) (rows top:bottom, `width` centred columns); exact bilinear resize to frame_size (h, w);
    stored as JPEG at jpeg_quality.
  audio_dtype: 'float32' or 'float16' storage of the spectrogram (computed in float32 either way;
    float16 halves the bytes each read decompresses and copies, at a rounding error of at most
    2^-11 of a value's magnitude: <= 0.008 on the OGM-GE log-STFT, whose floor is log(1e-7) =
    -16.1; the input pipeline reads it back as float32).
  max_av_mismatch_s: a clip whose decoded audio and video durations differ by more is skipped.
  Features: .npy files (T, dim) found under audio_features_dir / visual_features_dir (relative to
    the manual folder) when those are set, stored as features_dtype ('float32' or 'float16', as
    audio_dtype: half the bytes per read, rounding error <= 2^-11 of a value's magnitude).
  """

  audio_source: str = ''
  sample_rate: int = 16000
  audio_frontend: str = ''
  n_fft: int = 512
  hop_length: int = 160
  win_length: int = 0
  noverlap: int = 0
  n_mels: int = 0
  num_samples: int = 0
  num_audio_frames: int = 0
  to_db: bool = False
  log_offset: float = 1e-6
  pad_value: float = 0.0
  audio_dtype: str = 'float32'
  frame_mode: str = ''
  frame_fps: float = 1.0
  max_frames: int = 0
  frame_window: int = 0
  num_frames: int = 0
  frame_crop: Any = ''
  frame_size: tuple[int, int] = (224, 224)
  jpeg_quality: int = 90
  max_av_mismatch_s: float = 1.0
  audio_features_dir: str = ''
  visual_features_dir: str = ''
  audio_feature_dim: int = 1024
  visual_feature_dim: int = 1408
  features_dtype: str = 'float32'
  fbank_mean: float = -4.503877  # kaldi_fbank normalisation (Kinetics-Sounds / AST statistics).
  fbank_std: float = 5.141276

  def knobs(self) -> dict[str, Any]:
    """Every non-TFDS field as a JSON-able dict (tuples become lists)."""
    out = {}
    for f in dataclasses.fields(self):
      if f.name not in _BASE_FIELDS:
        v = getattr(self, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out

  @property
  def uses_features(self) -> bool:
    return bool(self.audio_features_dir or self.visual_features_dir)

  def reads(self) -> str:
    """What this config reads of each clip, for messages about a download that lacks it."""
    parts = [f'{d}/<clip>.npy' for d in (self.audio_features_dir, self.visual_features_dir) if d]
    if self.audio_frontend:
      parts.append('an audio file' if self.audio_source == 'audio' else "a video's audio track")
    if self.frame_mode:
      parts.append('a video')
    return ', '.join(parts)

  def audio_shape(self) -> tuple[int | None, ...] | None:
    """(F, T) of the stored spectrogram ((None,) for a variable-length waveform), None without an
    audio front end."""
    fe = self.audio_frontend
    if fe == 'waveform':
      return (None,)
    if fe == 'ogm_ge_log_stft':
      return 1 + self.n_fft // 2, 1 + self.num_samples // self.hop_length
    if fe == 'mmcosine_log_psd':
      step = self.n_fft - self.noverlap
      return 1 + self.n_fft // 2, 1 + (self.num_samples - self.n_fft) // step
    if fe == 'log_mel':
      return self.n_mels, self.num_audio_frames or 1 + self.num_samples // self.hop_length
    if fe == 'kaldi_fbank':  # (T, F): time-major, as the references store it.
      return self.num_audio_frames, self.n_mels
    return None

  def num_stored_frames(self) -> int | None:
    """Frames per clip when fixed by the mode, None when it varies ('fps')."""
    return {'centre': 1, 'centre_window': 2 * self.frame_window + 1,
            'uniform': self.num_frames}.get(self.frame_mode)

  def validate(self) -> None:
    if self.audio_frontend not in AUDIO_FRONTENDS:
      raise ValueError(f'{self.name}: audio_frontend must be one of {AUDIO_FRONTENDS}.')
    if self.frame_mode not in FRAME_MODES:
      raise ValueError(f'{self.name}: frame_mode must be one of {FRAME_MODES}.')
    if self.audio_dtype not in AUDIO_DTYPES and not (
        self.audio_frontend == 'waveform' and self.audio_dtype == WAVEFORM_DTYPE):
      raise ValueError(f'{self.name}: audio_dtype must be one of {AUDIO_DTYPES} ({WAVEFORM_DTYPE!r} '
                       "for the 'waveform' front end).")
    if self.features_dtype not in AUDIO_DTYPES:
      raise ValueError(f'{self.name}: features_dtype must be one of {AUDIO_DTYPES}.')
    if self.audio_frontend and self.audio_source not in ('audio', 'video'):
      raise ValueError(f"{self.name}: audio_source must be 'audio' or 'video'.")
    if self.audio_frontend == 'log_mel' and not (self.num_samples or self.num_audio_frames):
      raise ValueError(f'{self.name}: log_mel needs num_samples or num_audio_frames (fixed T).')
    if self.audio_frontend == 'kaldi_fbank' and min(self.num_audio_frames, self.n_mels,
                                                    self.win_length, self.hop_length) <= 0:
      raise ValueError(f'{self.name}: kaldi_fbank needs num_audio_frames, n_mels, win_length and '
                       'hop_length > 0.')
    if self.audio_frontend == 'kaldi_fbank' and any(  # Kaldi counts in ms: they must round-trip.
        int(self.sample_rate * (1000.0 * n / self.sample_rate) * 0.001) != n
        for n in (self.win_length, self.hop_length)):
      raise ValueError(f'{self.name}: kaldi_fbank win_length / hop_length do not survive the '
                       f'conversion to milliseconds at {self.sample_rate} Hz; pick other values.')
    if self.frame_mode == 'uniform' and self.num_frames <= 0:
      raise ValueError(f'{self.name}: frame_mode uniform needs num_frames > 0.')
    if not (self.audio_frontend or self.frame_mode or self.uses_features):
      raise ValueError(f'{self.name}: the config reads nothing (no audio, frames or features).')

  def media_spec(self) -> dict[str, Any]:
    """What the workers need (a plain dict, picklable into spawned processes)."""
    spec = self.knobs()
    crop = self.frame_crop
    spec['frame_crop'] = list(crop) if isinstance(crop, (tuple, list)) else crop
    spec['audio_shape'] = list(self.audio_shape() or ())
    features = {}
    if self.audio_features_dir:
      features['audio_features'] = self.audio_feature_dim
    if self.visual_features_dir:
      features['visual_features'] = self.visual_feature_dim
    spec['features'] = features
    spec['max_av_mismatch_s'] = (self.max_av_mismatch_s if self.max_av_mismatch_s > 0 else None)
    return spec


def described(cls: type[ClipConfig], name: str, text: str, **kw: Any) -> ClipConfig:
  """A named config whose description also lists all its fields (kept in dataset_info.json)."""
  cfg = cls(name=name, **kw)
  cfg.description = f'{text} Fields: {json.dumps(cfg.knobs(), sort_keys=True)}'
  cfg.validate()
  return cfg


def _variant_name(base: str, overrides: dict[str, Any]) -> str:
  """'ogm_ge-jpeg_quality95' (readable) or 'ogm_ge-<hash>' when not."""
  parts = []
  for k in sorted(overrides):
    v = overrides[k]
    v = '_'.join(map(str, v)) if isinstance(v, (tuple, list)) else str(v)
    parts.append(f'{k}{v}')
  name = '-'.join([base] + parts)
  if len(name) <= 96 and re.fullmatch(r'[\w+\-.]+', name):
    return name
  digest = hashlib.sha1(repr(sorted(overrides.items())).encode()).hexdigest()[:12]
  return f'{base}-{digest}'


def make_config(builder_cls: type, config_name: str, **overrides: Any) -> ClipConfig:
  """The named config of `builder_cls`, or a copy with `overrides` under a derived name."""
  if config_name not in builder_cls.builder_configs:
    raise ValueError(f'{builder_cls.name} has no config {config_name!r}; known: '
                     f'{sorted(builder_cls.builder_configs)}.')
  base = builder_cls.builder_configs[config_name]
  if not overrides:
    return base
  fields = {f.name for f in dataclasses.fields(base)} - _BASE_FIELDS
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f'{builder_cls.name}: unknown config field(s) {unknown}; known: '
                     f'{sorted(fields)}.')
  overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
  cfg = dataclasses.replace(base, name=_variant_name(config_name, overrides), **overrides)
  cfg.description = (f'{config_name} with overrides {sorted(overrides)}. Fields: '
                     f'{json.dumps(cfg.knobs(), sort_keys=True)}')
  cfg.validate()
  return cfg


def env_workers(num_workers: int | None) -> int:
  """Worker processes: the argument, else $AVJAX_BUILD_WORKERS, else the usable CPUs (0: serial).
  """
  if num_workers is None:
    env = os.environ.get('AVJAX_BUILD_WORKERS', '').strip()
    if env:
      num_workers = int(env)
    else:
      cpus = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
      num_workers = cpus if (cpus or 1) > 1 else 0
  return max(0, int(num_workers))


def env_strict(strict: bool | None) -> bool:
  """Strict builds: the argument, else $AVJAX_BUILD_STRICT (1 / true / yes)."""
  if strict is None:
    return os.environ.get('AVJAX_BUILD_STRICT', '').strip().lower() in ('1', 'true', 'yes')
  return bool(strict)
