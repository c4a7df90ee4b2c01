"""Pipeline-time clip ops (pure numpy): which stored frames a model sees, and audio crops.

Builders store what does not change between epochs (all 1 fps frames of a clip, the spectrogram of
the whole clip); the references' per-example randomness is applied here, in the input pipeline,
from the numpy Generator grain hands each example, so one build serves every epoch and every seed.

Frame indices are 0-based positions into the stored frames (the references name frames from 1:
'frame_00001.jpg'; the conversion is done here, once).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np


def _need_rng(rng: np.random.Generator | None, what: str) -> np.random.Generator:
  if rng is None:
    raise ValueError(f'{what} in training needs a numpy Generator (grain random_map gives one).')
  return rng


def ks_frame_indices(n: int, num: int = 3, *, train: bool, rng: np.random.Generator | None = None,
                     short_clip_rule: bool = True, train_cap: int | None = 9) -> np.ndarray:
  """Kinetics-Sounds frame sampling of OGM-GE / valuation / BalanceBenchmark, int64 (num,).

  With seg = n // num and 1-based frame numbers t_i (as the references' file names):
  train t_i ~ U{i*seg + 1 .. i*seg + seg}, then t_i >= 10 becomes train_cap (9); evaluation
  t_i = i*seg + max(seg // 2, 1). With short_clip_rule (KS, VGGSound in BalanceBenchmark) a clip
  of n <= 6 frames uses frame 1 for all num (the reference's `if file_num > 6 else 1`);
  BalanceBenchmark's UCF101 has no such rule (short_clip_rule=False). Returns t_i - 1, clipped to
  n - 1; when seg == 0 without the rule, frames 0, 1, ... repeat the last one.

  Example (n = 10): evaluation -> [0, 3, 6]; training draws from {0,1,2}, {3,4,5}, {6,7,8}.
  """
  if n <= 0 or num <= 0:
    raise ValueError(f'need n > 0 frames and num > 0, got n={n} num={num}')
  if short_clip_rule and n <= 6:
    return np.zeros(num, np.int64)
  seg = n // num
  if seg == 0:
    return np.minimum(np.arange(num), n - 1).astype(np.int64)
  base = np.arange(num, dtype=np.int64) * seg
  if train:
    t = base + _need_rng(rng, 'ks_frame_indices').integers(1, seg + 1, size=num)
    if train_cap is not None:
      t = np.where(t >= 10, train_cap, t)
  else:
    t = base + max(seg // 2, 1)
  return np.clip(t - 1, 0, n - 1).astype(np.int64)


def ave_frame_indices(n: int, num: int = 3) -> np.ndarray:
  """OGM-GE's AVE frames (train and test alike): t_i = i * (n // num) + 1, 0-based, int64 (num,)."""
  if n <= 0 or num <= 0:
    raise ValueError(f'need n > 0 frames and num > 0, got n={n} num={num}')
  return np.minimum(np.arange(num, dtype=np.int64) * (n // num), n - 1)


# MMCosine's VoxCeleb training faces by stored 2 fps frame count n (dataset/vox2_dataset.py).
_VOX_TRAIN_FRAMES = {5: (1, 3), 6: (2, 4), 7: (2, 5)}


def vox_face_indices(n: int, *, train: bool) -> np.ndarray:
  """MMCosine's VoxCeleb faces, int64: training two frames by count n (n >= 8: 2 and 6; 7: 2, 5;
  6: 2, 4; 5: 1, 3; n <= 4: 0, 2), evaluation frame 2 alone; clipped to n - 1 (the reference's
  n <= 2 reads a missing file)."""
  if n <= 0:
    raise ValueError(f'need n > 0 frames, got n={n}')
  picked = ((2, 6) if n >= 8 else _VOX_TRAIN_FRAMES.get(n, (0, 2))) if train else (2,)
  return np.minimum(np.asarray(picked, np.int64), n - 1)


def random_frame_indices(n: int, num: int, *, train: bool,
                         rng: np.random.Generator | None = None) -> np.ndarray:
  """OGM-GE's VGGSound frames as intended, int64 (num,), increasing.

  The reference draws np.random.choice(n, num, replace=False), sorts it, and then (a bug) reads the
  first num files of an unsorted listdir instead. Here: training takes that sorted random choice
  (with replacement only when n < num); evaluation takes the centres of num equal segments,
  floor((i + 0.5) * n / num), so evaluation is deterministic.
  """
  if n <= 0 or num <= 0:
    raise ValueError(f'need n > 0 frames and num > 0, got n={n} num={num}')
  if train:
    pick = _need_rng(rng, 'random_frame_indices').choice(n, size=num, replace=n < num)
    return np.sort(pick).astype(np.int64)
  return np.minimum(np.floor((np.arange(num) + 0.5) * n / num), n - 1).astype(np.int64)


def crop_time(x: np.ndarray, length: int, *, train: bool, rng: np.random.Generator | None = None,
              axis: int = -1, from_start: bool = False) -> np.ndarray:
  """A window of `length` steps along `axis`: random start in training, centred in evaluation
  (or the first `length` steps with `from_start`, as MMCosine's VoxCeleb evaluation).

  Training start ~ U{0 .. T - length} (OGM-GE's VGGSound: a random 5 s of the 10 s clip, here on
  the stored spectrogram: start frame j is start sample 128 j). Evaluation takes the centred window
  (the reference crops randomly at test time too; avjax evaluates deterministically). An input
  shorter than `length` is tiled along `axis` first, as the references tile short waveforms.
  """
  x = np.asarray(x)
  t = x.shape[axis]
  if length <= 0 or t == 0:
    raise ValueError(f'need length > 0 and a non-empty axis, got length={length}, shape {x.shape}')
  if t < length:
    reps = [1] * x.ndim
    reps[axis] = -(-length // t)
    x, t = np.tile(x, reps), t * reps[axis]
  if train:
    start = int(_need_rng(rng, 'crop_time').integers(0, t - length + 1))
  else:
    start = 0 if from_start else (t - length) // 2
  return np.ascontiguousarray(np.take(x, np.arange(start, start + length), axis=axis))


def audio_crop(seconds: float, config: Mapping[str, Any]) -> tuple[int, int]:
  """(length, axis) of a `seconds` crop of a stored spectrogram, from the dataset's builder config
  (`info.metadata['config']`): STFT / PSD / log-mel are (F, T) with T = 1 + samples // hop (centred
  frames), Kaldi fbank is (T, F) with T = 1 + (samples - win) // hop, a waveform (N,) samples.

  VGGSound 'ogm_ge' (16 kHz, hop 128): audio_crop(5.0, cfg) == (626, 1).
  """
  samples = int(round(seconds * config['sample_rate']))
  hop = int(config['hop_length'])
  frontend = config['audio_frontend']
  if frontend == 'waveform':  # (N,) samples.
    return samples, 0
  if frontend in ('ogm_ge_log_stft', 'log_mel'):
    return 1 + samples // hop, 1
  if frontend == 'mmcosine_log_psd':
    n_fft, step = int(config['n_fft']), int(config['n_fft']) - int(config['noverlap'])
    return 1 + (samples - n_fft) // step, 1
  if frontend == 'kaldi_fbank':
    return 1 + (samples - int(config['win_length'])) // hop, 0
  raise ValueError(f'no audio crop for audio_frontend {frontend!r}')
