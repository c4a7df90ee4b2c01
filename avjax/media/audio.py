"""Audio loading and the per-paper audio front ends (numpy / librosa / scipy / PyAV).

Every front end takes a 1-D waveform and returns a float32 array; none of them
touches JAX, so they run inside data-builder worker processes.
"""

from __future__ import annotations

import os
from typing import Any

import av
import librosa
import numpy as np
import scipy.signal
import soundfile as sf


class MediaError(Exception):
  """Unreadable, empty, corrupt or truncated media; the message names the file."""


# Extensions decoded with libsndfile; everything else goes through PyAV.
_SOUNDFILE_EXTS = frozenset({'.wav', '.flac', '.ogg', '.oga', '.aif', '.aiff'})


def _check_path(path: str | os.PathLike[str]) -> str:
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise MediaError(f'{path}: file does not exist')
  if os.path.getsize(path) == 0:
    raise MediaError(f'{path}: file is empty (0 bytes)')
  return path


def declared_duration(container: Any, stream: Any) -> float | None:
  """Duration in seconds the container declares for `stream` (None if unknown)."""
  if stream.duration is not None and stream.time_base is not None:
    return float(stream.duration * stream.time_base)
  if container.duration is not None and container.duration > 0:
    return container.duration / av.time_base
  return None


def check_not_truncated(path: str, what: str, decoded_s: float,
                        declared_s: float | None) -> None:
  """Raises MediaError when far less than the declared duration was decoded.

  Tolerance: decoded >= 0.9 * declared - 0.1 s, loose enough for codec
  padding and metadata rounding, tight enough to catch files cut short (a
  truncated FLV otherwise decodes silently up to the cut).
  """
  if declared_s is not None and decoded_s < 0.9 * declared_s - 0.1:
    raise MediaError(f'{path}: truncated {what}: decoded {decoded_s:.2f} s of '
                     f'the declared {declared_s:.2f} s')


def _wav_declared_seconds(path: str) -> float | None:
  """Duration a RIFF/WAVE header declares in its data chunk (None if unknown).

  libsndfile silently reads a truncated WAV up to the cut; comparing with the
  header's data size is the only way to notice.
  """
  with open(path, 'rb') as f:
    head = f.read(1 << 16)
  if len(head) < 12 or head[:4] != b'RIFF' or head[8:12] != b'WAVE':
    return None
  pos, bytes_per_s = 12, 0
  while pos + 8 <= len(head):
    cid, size = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], 'little')
    if cid == b'fmt ' and pos + 16 <= len(head):
      bytes_per_s = int.from_bytes(head[pos + 16:pos + 20], 'little')
    elif cid == b'data':
      if bytes_per_s <= 0 or size in (0, 0xFFFFFFFF):
        return None
      return size / bytes_per_s
    pos += 8 + size + (size & 1)
  return None


def _read_soundfile(path: str, check_truncation: bool) -> tuple[np.ndarray, int]:
  """(channels, samples) float32 and the native rate, via libsndfile."""
  data, rate = sf.read(path, dtype='float32', always_2d=True)
  if check_truncation and os.path.splitext(path)[1].lower() == '.wav':
    check_not_truncated(path, 'audio', data.shape[0] / rate,
                        _wav_declared_seconds(path))
  return np.ascontiguousarray(data.T), int(rate)


def _read_pyav(path: str, check_truncation: bool) -> tuple[np.ndarray, int]:
  """(channels, samples) float32 of the first audio stream, via PyAV."""
  with av.open(path) as container:
    if not container.streams.audio:
      raise MediaError(f'{path}: container has no audio stream')
    stream = container.streams.audio[0]
    # Convert whatever sample format the codec produces to planar float32,
    # keeping the native layout and rate (resampling is done with soxr later).
    converter = av.AudioResampler(format='fltp')
    chunks: list[np.ndarray] = []
    rate = 0
    for packet in container.demux(stream):
      for frame in packet.decode():
        rate = rate or frame.sample_rate
        for out in converter.resample(frame):
          chunks.append(out.to_ndarray())
    for out in converter.resample(None):
      chunks.append(out.to_ndarray())
    declared = declared_duration(container, stream)
  if not chunks or rate <= 0:
    raise MediaError(f'{path}: audio stream decoded to no samples')
  data = np.concatenate(chunks, axis=1).astype(np.float32, copy=False)
  if check_truncation:
    check_not_truncated(path, 'audio', data.shape[1] / rate, declared)
  return data, rate


def load_audio(path: str | os.PathLike[str], *, sample_rate: int | None = None,
               mono: bool = True,
               check_truncation: bool = True) -> tuple[np.ndarray, int]:
  """Decodes an audio file or a video container's first audio stream.

  WAV/FLAC/OGG/AIFF go through soundfile (falling back to PyAV when libsndfile
  cannot read them); other containers (flv, mp4, mkv, avi, webm, mp3, ...) go
  through PyAV. Samples are float32 in [-1, 1]. `mono` averages channels (as
  librosa.load does); `sample_rate` resamples with librosa's soxr_hq (the
  librosa.load default). With `check_truncation`, a container whose decoded
  audio is much shorter than its declared duration is rejected (see
  check_not_truncated); decoding errors of any kind become MediaError.

  Returns:
    (wave, rate): wave float32 (N,) when mono else (C, N); rate the output rate.

  Raises:
    MediaError: the file is missing, empty, unreadable or has no audio samples.
  """
  path = _check_path(path)
  ext = os.path.splitext(path)[1].lower()
  errors: list[str] = []
  data = None
  rate = 0
  if ext in _SOUNDFILE_EXTS:
    try:
      data, rate = _read_soundfile(path, check_truncation)
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
      errors.append(f'soundfile: {e}')
  if data is None:
    try:
      data, rate = _read_pyav(path, check_truncation)
    except MediaError:
      raise
    except Exception as e:  # PyAV raises assorted types on damaged input.
      errors.append(f'PyAV: {e}')
      raise MediaError(f'{path}: cannot decode audio ({"; ".join(errors)})') from e
  if data.size == 0 or data.shape[-1] == 0:
    raise MediaError(f'{path}: audio is empty (0 samples)')
  if not np.all(np.isfinite(data)):
    raise MediaError(f'{path}: audio contains NaN or Inf samples')
  wave = data.mean(axis=0) if mono else data
  if sample_rate is not None and int(sample_rate) != rate:
    wave = librosa.resample(wave, orig_sr=rate, target_sr=int(sample_rate),
                            res_type='soxr_hq', axis=-1)
    rate = int(sample_rate)
  return np.ascontiguousarray(wave, dtype=np.float32), rate


def tile_to_length(wave: np.ndarray, length: int) -> np.ndarray:
  """Repeats `wave` (N,) end to end and crops to exactly `length` samples.

  Equivalent to the references' np.tile(x, k)[:length] whenever k * N >= length.
  """
  wave = np.asarray(wave)
  if wave.ndim != 1:
    raise ValueError(f'expected a 1-D waveform, got shape {wave.shape}')
  if wave.shape[0] == 0:
    raise ValueError('cannot tile an empty waveform')
  reps = -(-int(length) // wave.shape[0])
  return np.tile(wave, reps)[:int(length)]


def log_mel_spectrogram(wave: np.ndarray, sample_rate: int, *, n_mels: int,
                        n_fft: int, hop_length: int,
                        win_length: int | None = None, to_db: bool = False,
                        log_offset: float = 1e-6,
                        pad_mode: str = 'constant') -> np.ndarray:
  """Log mel power spectrogram, float32 (n_mels, n_frames).

  librosa.feature.melspectrogram (power 2, hann, centred, Slaney mel filters),
  then log(S + log_offset), or librosa.power_to_db(S, ref=np.max) when `to_db`
  (the CM-VQVAE recipe: 44.1 kHz, n_mels 256, n_fft 2048, win 512, hop 353).
  n_frames = 1 + len(wave) // hop_length.
  """
  wave = np.asarray(wave, dtype=np.float32)
  s = librosa.feature.melspectrogram(
      y=wave, sr=sample_rate, n_fft=n_fft, hop_length=hop_length,
      win_length=win_length, window='hann', center=True, pad_mode=pad_mode,
      power=2.0, n_mels=n_mels)
  if to_db:
    out = librosa.power_to_db(s, ref=np.max)
  else:
    out = np.log(s + log_offset)
  return out.astype(np.float32)


def ogm_ge_log_stft(wave: np.ndarray, *, n_fft: int = 512, hop_length: int = 353,
                    num_samples: int = 66150, start: int = 0, clip: bool = True,
                    pad_mode: str = 'constant') -> np.ndarray:
  """OGM-GE log-magnitude STFT, float32 (1 + n_fft // 2, 1 + num_samples // hop).

  CREMA-D (defaults; 22.05 kHz input): tile, keep 66150 samples (3 s), clip to
  [-1, 1], librosa.stft(n_fft=512, hop_length=353, hann, centred),
  log(|S| + 1e-7) -> (257, 188).
  VGGSound (16 kHz input): n_fft=256, hop_length=128, num_samples=80000,
  clip=False, start = a random offset in [0, 80000] -> (129, 626); tiling to
  start + num_samples equals the reference's tile-to-10-s then crop.

  The reference tiles x3 and cuts, which gives fewer samples for clips under
  num_samples / 3; here the wave is always tiled to the full length.
  `pad_mode` is librosa's centring pad: 'constant' is librosa >= 0.10's default,
  the reference environment (librosa < 0.10) padded with 'reflect'.
  """
  x = tile_to_length(np.asarray(wave, dtype=np.float32), start + num_samples)
  x = x[start:start + num_samples]
  if clip:
    x = np.clip(x, -1.0, 1.0)
  spec = librosa.stft(x, n_fft=n_fft, hop_length=hop_length, window='hann',
                      center=True, pad_mode=pad_mode)
  return np.log(np.abs(spec) + 1e-7).astype(np.float32)


def mmcosine_log_psd(wave: np.ndarray, sample_rate: int = 16000, *,
                     num_samples: int = 48000, nperseg: int = 512,
                     noverlap: int = 353, clip: bool = True) -> np.ndarray:
  """MMCosine CREMA-D log power spectral density, z-scored, float32 (257, 299).

  Tile to 48000 samples (3 s at 16 kHz), clip to [-1, 1], then
  scipy.signal.spectrogram(x, fs=sample_rate, nperseg=512, noverlap=353) with
  scipy's defaults (Tukey(0.25) window, per-segment constant detrend,
  'density' scaling, one-sided), log(P + 1e-7), and (x - mean) / (std + 1e-9)
  over the whole array. Computed in float64 (soundfile's default dtype in the
  reference) and returned as float32.
  """
  x = tile_to_length(np.asarray(wave, dtype=np.float64), num_samples)
  if clip:
    x = np.clip(x, -1.0, 1.0)
  _, _, p = scipy.signal.spectrogram(
      x, fs=sample_rate, window=('tukey', 0.25), nperseg=nperseg,
      noverlap=noverlap, scaling='density', mode='psd')
  logp = np.log(p + 1e-7)
  logp = (logp - logp.mean()) / (logp.std() + 1e-9)
  return logp.astype(np.float32)


def _kaldi_mel_banks(num_bins: int, n_fft: int, sample_rate: float,
                     low_freq: float, high_freq: float) -> np.ndarray:
  """Kaldi triangular mel filters, float64 (num_bins, n_fft // 2 + 1).

  Triangles are linear on the Kaldi mel scale 1127 ln(1 + f / 700); the
  Nyquist bin always gets weight 0 (Kaldi / torchaudio pad it on).
  """
  nyquist = 0.5 * sample_rate
  if high_freq <= 0.0:
    high_freq += nyquist
  if not 0.0 <= low_freq < high_freq <= nyquist:
    raise ValueError(f'bad mel range low={low_freq} high={high_freq}')

  def mel(f: Any) -> Any:
    return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)

  mel_low, mel_high = mel(low_freq), mel(high_freq)
  delta = (mel_high - mel_low) / (num_bins + 1)
  edges = mel_low + delta * np.arange(num_bins + 2)
  left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
  fft_mel = mel(sample_rate / n_fft * np.arange(n_fft // 2))[None, :]
  up = (fft_mel - left) / (centre - left)
  down = (right - fft_mel) / (right - centre)
  banks = np.maximum(0.0, np.minimum(up, down))
  return np.pad(banks, ((0, 0), (0, 1)))


def kaldi_fbank(wave: np.ndarray, sample_rate: int = 16000, *,
                num_mel_bins: int = 128, frame_length_ms: float = 25.0,
                frame_shift_ms: float = 10.0, target_frames: int | None = 1024,
                mean: float = -4.503877, std: float = 5.141276,
                normalize: bool = True, low_freq: float = 20.0,
                high_freq: float = 0.0, preemphasis: float = 0.97,
                subtract_wave_mean: bool = True) -> np.ndarray:
  """Kaldi log mel filterbank, float32 (target_frames or n_frames, num_mel_bins).

  Matches torchaudio.compliance.kaldi.fbank(wave[None], htk_compat=True,
  sample_frequency=sample_rate, use_energy=False, window_type='hanning',
  num_mel_bins=num_mel_bins, dither=0.0, frame_length=frame_length_ms,
  frame_shift=frame_shift_ms) with its other defaults: snip_edges=True
  (n_frames = 1 + (N - win) // shift, 0 when N < win), remove_dc_offset per
  frame, preemphasis 0.97 (x[0] uses itself as predecessor), symmetric Hann
  window (0.5 - 0.5 cos(2 pi n / (win - 1))), zero-padded to the next power of
  two, power spectrum, Kaldi mel banks (low_freq 20, high_freq 0 = Nyquist),
  log(max(E, float32 eps)), no energy term, no mean subtraction. Here computed
  in float64, so it agrees with torchaudio's float32 to ~1e-4 in log energy.

  Around it, the Kinetics-Sounds / AcFormer recipe: the waveform mean is removed
  first (`subtract_wave_mean`), frames are zero-padded / cropped to
  `target_frames` (None keeps all), and when `normalize` the output is
  (x - mean) / (2 * std), i.e. (x + 4.503877) / (2 * 5.141276) by default
  (AcFormer / VAT: mean=-4.2677, std=4.5690).
  """
  x = np.asarray(wave, dtype=np.float64)
  if x.ndim != 1:
    raise ValueError(f'expected a 1-D waveform, got shape {x.shape}')
  if subtract_wave_mean and x.size:
    x = x - x.mean()
  win = int(sample_rate * frame_length_ms * 0.001)
  shift = int(sample_rate * frame_shift_ms * 0.001)
  n_fft = 1 << max(0, (win - 1).bit_length())
  n_frames = 1 + (x.shape[0] - win) // shift if x.shape[0] >= win else 0

  if n_frames > 0:
    starts = np.arange(n_frames)[:, None] * shift
    frames = x[starts + np.arange(win)[None, :]]
    frames = frames - frames.mean(axis=1, keepdims=True)
    prev = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    frames = frames - preemphasis * prev
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(win) / (win - 1))
    power = np.abs(np.fft.rfft(frames * window, n=n_fft, axis=1)) ** 2
    banks = _kaldi_mel_banks(num_mel_bins, n_fft, float(sample_rate),
                             low_freq, high_freq)
    energies = power @ banks.T
    eps = float(np.finfo(np.float32).eps)
    feats = np.log(np.maximum(energies, eps))
  else:
    feats = np.zeros((0, num_mel_bins), np.float64)

  if target_frames is not None:
    if feats.shape[0] < target_frames:
      feats = np.pad(feats, ((0, target_frames - feats.shape[0]), (0, 0)))
    else:
      feats = feats[:target_frames]
  if normalize:
    feats = (feats - mean) / (2.0 * std)
  return feats.astype(np.float32)


def warm_up() -> None:
  """Runs every librosa path once on a short signal.

  librosa's numba helpers compile on first use (seconds); builders call this
  once per worker process so the first real clip is not slow.
  """
  rng = np.random.default_rng(0)
  wave = (0.1 * rng.standard_normal(4096)).astype(np.float32)
  librosa.resample(wave, orig_sr=22050, target_sr=16000, res_type='soxr_hq')
  ogm_ge_log_stft(wave, num_samples=4096)
  log_mel_spectrogram(wave, 22050, n_mels=16, n_fft=512, hop_length=256,
                      to_db=True)
  log_mel_spectrogram(wave, 22050, n_mels=16, n_fft=512, hop_length=256)
  mmcosine_log_psd(wave, num_samples=4096)
  kaldi_fbank(wave, target_frames=None)
