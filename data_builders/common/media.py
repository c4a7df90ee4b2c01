"""Per-clip decoding and front ends, run inside build worker processes (numpy / PyAV / librosa).

`process_clip(job, spec)` turns one clip's files into the media part of a record. `job` maps roles
to paths ('audio', 'video', 'audio_features', 'visual_features'); `spec` is a builder config's
`media_spec()` (a plain dict, so it pickles to spawned workers). Every failure is a ClipError with a
problem kind (report.KINDS), so the builder can report and skip the clip.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Callable

import av
import numpy as np
from PIL import Image

from avjax.media import audio as audio_lib
from avjax.media import video as video_lib
from data_builders.common.report import ClipError, MediaError, classify

try:  # Optional (ships with scikit-learn); see one_blas_thread.
  from threadpoolctl import ThreadpoolController
except ImportError:
  ThreadpoolController = None

_STATE: dict[str, Any] = {}


def one_blas_thread() -> contextlib.AbstractContextManager:
  """One BLAS thread around a clip: parallelism comes from processes, and the float bits of the
  mel product then do not depend on the caller's threading (records are the same for any worker
  count)."""
  if ThreadpoolController is None:
    return contextlib.nullcontext()
  if 'blas' not in _STATE:
    _STATE['blas'] = ThreadpoolController()  # Found once: listing the loaded libraries is slow.
  return _STATE['blas'].limit(limits=1, user_api='blas')


def warm_up_once() -> None:
  """librosa/numba compilation, once per process (not per clip)."""
  if not _STATE.get('warm'):
    with one_blas_thread():
      audio_lib.warm_up()
    _STATE['warm'] = True


def _check_file(path: str | None, what: str) -> str:
  if not path:
    raise ClipError('missing_counterpart', f'no {what} file', [])
  if not os.path.isfile(path):
    raise ClipError('missing_counterpart', f'{path}: {what} file does not exist', [path])
  size = os.path.getsize(path)
  if size == 0:
    raise ClipError('empty', f'{path}: {what} file is empty (0 bytes)', [path])
  if size < 1024:  # A clone without git-lfs leaves small text pointers instead of the media.
    with open(path, 'rb') as f:
      if f.read(24).startswith(b'version https://git-lfs'):
        raise ClipError('corrupt', f'{path}: a Git LFS pointer, not the {what} (run `git lfs '
                        'pull` in the clone)', [path])
  return path


# --- Audio. ---------------------------------------------------------------------------------------


def audio_frontend(wave: np.ndarray, rate: int, spec: dict[str, Any]) -> np.ndarray:
  """The config's audio front end on a mono waveform at spec['sample_rate'], float32 (F, T)."""
  name = spec['audio_frontend']
  if name == 'waveform':  # 16-bit PCM of the whole wave (the model computes its own features).
    return np.round(np.clip(wave, -1.0, 1.0) * 32767.0).astype(np.int16)
  if name == 'ogm_ge_log_stft':
    return audio_lib.ogm_ge_log_stft(wave, n_fft=spec['n_fft'], hop_length=spec['hop_length'],
                                     num_samples=spec['num_samples'])
  if name == 'mmcosine_log_psd':
    return audio_lib.mmcosine_log_psd(wave, rate, num_samples=spec['num_samples'],
                                      nperseg=spec['n_fft'], noverlap=spec['noverlap'])
  if name == 'log_mel':
    x = wave
    if spec['num_samples']:  # Tile short clips / crop long ones to a fixed length first.
      x = audio_lib.tile_to_length(x, spec['num_samples'])
    s = audio_lib.log_mel_spectrogram(
        x, rate, n_mels=spec['n_mels'], n_fft=spec['n_fft'], hop_length=spec['hop_length'],
        win_length=spec['win_length'] or None, to_db=spec['to_db'], log_offset=spec['log_offset'])
    t = spec['num_audio_frames']
    if t:  # Crop, or pad with pad_value (power_to_db's floor), to exactly t frames.
      s = s[:, :t]
      if s.shape[1] < t:
        s = np.pad(s, ((0, 0), (0, t - s.shape[1])), constant_values=spec['pad_value'])
    return s.astype(np.float32)
  if name == 'kaldi_fbank':
    win_ms, hop_ms = 1000.0 * spec['win_length'] / rate, 1000.0 * spec['hop_length'] / rate
    return audio_lib.kaldi_fbank(
        wave, rate, num_mel_bins=spec['n_mels'], frame_length_ms=win_ms, frame_shift_ms=hop_ms,
        target_frames=spec['num_audio_frames'], mean=spec['fbank_mean'], std=spec['fbank_std'])
  raise ValueError(f'unknown audio front end {name!r}')


def has_audio_stream(path: str) -> bool:
  """Whether a container has an audio stream (True when it cannot be opened: decoding then
  reports the damage)."""
  try:
    with av.open(path) as container:
      return bool(container.streams.audio)
  except Exception:  # pylint: disable=broad-except
    return True


def load_wave(path: str, spec: dict[str, Any]) -> tuple[np.ndarray, int]:
  """Mono float32 waveform of a wav or of a video container's audio track, resampled."""
  _check_file(path, 'audio')
  try:
    return audio_lib.load_audio(path, sample_rate=spec['sample_rate'])
  except MediaError as e:
    raise ClipError(classify(e), str(e), [path]) from e


# --- Video. ---------------------------------------------------------------------------------------


def _count_packets(path: str) -> int:
  with av.open(path) as container:
    stream = container.streams.video[0]
    return sum(1 for p in container.demux(stream) if p.size)


def frame_indices(mode: str, n: int, spec: dict[str, Any]) -> list[int]:
  """Frame indices (in output order) picked from n decoded frames by a count-based mode."""
  if n <= 0:
    return []
  if mode == 'centre':
    return [n // 2]
  if mode == 'centre_window':  # Centre frame +- w, clamped to the clip (edges repeat).
    w = spec['frame_window']
    return [min(max(i, 0), n - 1) for i in range(n // 2 - w, n // 2 + w + 1)]
  if mode == 'uniform':  # Centres of num_frames equal segments.
    k = spec['num_frames']
    return [min(int(math.floor((i + 0.5) * n / k)), n - 1) for i in range(k)]
  raise ValueError(f'unknown frame mode {mode!r}')


def _crop_resize(frame: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
  """Optional crop ('square': centred square; [top, bottom, width]: rows top:bottom and `width`
  centred columns), then an exact bilinear resize to frame_size (h, w); frame_size None keeps the
  decoded size (a face detector downstream sees the whole frame)."""
  crop = spec['frame_crop']
  h, w = frame.shape[:2]
  if crop == 'square':
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    frame = frame[top:top + side, left:left + side]
  elif crop:
    top, bottom, width = crop
    width = min(width, w)
    left = (w - width) // 2
    frame = frame[top:min(bottom, h), left:left + width]
  size = tuple(spec['frame_size'] or frame.shape[:2])
  if frame.shape[:2] != size:
    frame = np.asarray(Image.fromarray(np.ascontiguousarray(frame)).resize(
        (size[1], size[0]), Image.BILINEAR))
  return frame


def _decode_pass(path: str, spec: dict[str, Any],
                 wanted: list[int] | None) -> tuple[dict[int, np.ndarray], int, float]:
  """One decoding pass: ({index: frame}, frames decoded, decoded span in seconds).

  With `wanted` None the 'fps' mode picks the first frame of every 1/fps-second slot (counted from
  the first frame's timestamp, 1 ms tolerance for FLV's millisecond stamps), up to max_frames.
  """
  picked: dict[int, np.ndarray] = {}
  want = set(wanted or ())
  with av.open(path) as container:
    if not container.streams.video:
      raise ClipError('corrupt', f'{path}: container has no video stream', [path])
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate
    nominal = float(rate) if rate else 25.0
    t0, t_last, last_slot, n = None, 0.0, -1, 0
    for n, frame in enumerate(container.decode(stream), start=1):
      t = frame.time if frame.time is not None else (n - 1) / nominal
      t0 = t if t0 is None else t0
      t_last = max(t_last, t)
      i = n - 1
      if wanted is None:
        slot = int(math.floor((t - t0 + 1e-3) * spec['frame_fps']))
        if slot <= last_slot or (spec['max_frames'] and len(picked) >= spec['max_frames']):
          continue
        last_slot = slot
      elif i not in want:
        continue
      picked[i] = _crop_resize(frame.to_ndarray(format='rgb24'), spec)
    span = (t_last - t0 + 1.0 / nominal) if n else 0.0
    audio_lib.check_not_truncated(path, 'video', span,
                                  audio_lib.declared_duration(container, stream))
  return picked, n, span


def decode_video(path: str, spec: dict[str, Any]) -> tuple[np.ndarray, float]:
  """Selected frames uint8 (T, H, W, 3) after crop/resize, and the decoded duration in seconds."""
  _check_file(path, 'video')
  mode = spec['frame_mode']
  try:
    if mode == 'fps':
      picked, n, span = _decode_pass(path, spec, None)
      order = sorted(picked)
    else:
      order = frame_indices(mode, _count_packets(path), spec)
      picked, n, span = _decode_pass(path, spec, order)
      if n and any(i not in picked for i in order):  # Decoder and demuxer disagree on the count.
        order = frame_indices(mode, n, spec)
        picked, n, span = _decode_pass(path, spec, order)
  except ClipError:
    raise
  except MediaError as e:
    raise ClipError(classify(e), str(e), [path]) from e
  except Exception as e:  # PyAV raises assorted types on damaged input.
    raise ClipError('corrupt', f'{path}: cannot decode video ({type(e).__name__}: {e})',
                    [path]) from e
  if not n or not order:
    raise ClipError('empty', f'{path}: video stream decoded to no frames', [path])
  return np.stack([picked[i] for i in order]), span


# --- Precomputed features. ------------------------------------------------------------------------


def load_features(path: str | None, dim: int, what: str) -> np.ndarray:
  """A (T, dim) float32 feature matrix from a .npy file ((dim,) is read as T = 1)."""
  path = _check_file(path, what)
  try:
    arr = np.load(path, allow_pickle=False)
  except Exception as e:  # Truncated / garbage files raise ValueError, OSError, EOFError, ...
    raise ClipError('bad_features', f'{path}: cannot read {what} ({type(e).__name__}: {e})',
                    [path]) from e
  if arr.ndim == 1:
    arr = arr[None]
  if arr.ndim != 2 or arr.shape[1] != dim or arr.shape[0] == 0:
    raise ClipError('bad_features', f'{path}: {what} has shape {arr.shape}, expected (T, {dim}) '
                    'with T > 0', [path])
  if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
    raise ClipError('bad_features', f'{path}: {what} is not finite numeric data', [path])
  return np.ascontiguousarray(arr, dtype=np.float32)


# --- One clip. ------------------------------------------------------------------------------------


def process_clip(job: dict[str, str | None], spec: dict[str, Any]) -> dict[str, Any]:
  """The media part of one record (see the builders' README for the keys); raises ClipError."""
  out: dict[str, Any] = {}
  for role, dim in sorted(spec['features'].items()):
    dtype = spec.get('features_dtype', 'float32')
    out[role] = load_features(job.get(role), dim, role.replace('_', ' ')).astype(dtype)
    if not np.all(np.isfinite(out[role])):
      raise ClipError('bad_features', f'{job.get(role)}: {role} overflows {dtype} (set the '
                      "config's features_dtype to float32)", [job.get(role) or ''])
  wave = rate = frames = None
  if spec['frame_mode']:  # Video first: its truncation check names a cut file best.
    frames, span = decode_video(job.get('video'), spec)
    out['video_seconds'] = np.float32(span)
  silent = False
  if spec['audio_frontend']:
    source = job.get(spec['audio_source'])
    # A container without an audio track, kept as silence where the config says so (ssw60).
    silent = (spec.get('missing_audio') == 'silence' and bool(source) and
              os.path.isfile(source) and not has_audio_stream(source))
    if silent:
      out['audio'] = np.zeros([d or 0 for d in spec['audio_shape']], spec.get('audio_dtype', 'float32'))
      out['audio_seconds'] = np.float32(0.0)
    else:
      wave, rate = load_wave(source, spec)
      out['audio_seconds'] = np.float32(len(wave) / rate)
  if spec.get('missing_audio') == 'silence':
    out['audio_present'] = np.int32(not silent)
  tol = spec['max_av_mismatch_s']
  if wave is not None and frames is not None and tol is not None:
    gap = float(out['audio_seconds']) - float(out['video_seconds'])
    if abs(gap) > tol:
      raise ClipError('length_mismatch',
                      f'audio lasts {float(out["audio_seconds"]):.2f} s but video '
                      f'{float(out["video_seconds"]):.2f} s (more than {tol} s apart)',
                      [job.get(spec['audio_source']) or '', job.get('video') or ''])
  if wave is not None:
    spec_out = audio_frontend(wave, rate, spec).astype(spec.get('audio_dtype', 'float32'))
    shape = tuple(spec['audio_shape'])
    if (spec_out.ndim != len(shape) or any(d is not None and d != n
                                           for d, n in zip(shape, spec_out.shape))
        or not np.all(np.isfinite(spec_out))):
      raise ClipError('error', f'audio front end gave shape {spec_out.shape} (expected '
                      f'{tuple(spec["audio_shape"])}) or non-finite values')
    out['audio'] = spec_out
  if frames is not None:
    out['frames'] = [video_lib.encode_jpeg(f, quality=spec['jpeg_quality']) for f in frames]
  return out


def guarded(process: Callable[[dict, dict], dict], job: dict[str, str | None],
            spec: dict[str, Any]) -> tuple:
  """('ok', process(job, spec)) or ('bad', kind, message, files): never raises for a bad clip."""
  warm_up_once()
  try:
    with one_blas_thread():
      return ('ok', process(job, spec))
  except Exception as e:  # Report-and-skip: every failure becomes a reported problem.
    files = getattr(e, 'files', None) or [p for p in job.values() if p]
    return ('bad', classify(e), str(e) or type(e).__name__, files)


def safe_process(job: dict[str, str | None], spec: dict[str, Any]) -> tuple:
  """process_clip, guarded: the builders' default worker target."""
  return guarded(process_clip, job, spec)
