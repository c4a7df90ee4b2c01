"""Video probing, frame decoding and frame sampling (PyAV + Pillow, no JAX).

Frames are uint8 RGB arrays (H, W, 3); clips are (T, H, W, 3).
"""

from __future__ import annotations

import dataclasses
import io
import math
import os

import av
import numpy as np
from PIL import Image

from avjax.media.audio import (MediaError, _check_path, check_not_truncated,
                               declared_duration)


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  """Container metadata of the first video stream.

  num_frames is the stream's frame count when the container records it, else
  round(duration_s * fps) (FLV records none), so treat it as an estimate.
  """
  duration_s: float
  fps: float
  num_frames: int
  width: int
  height: int
  has_audio: bool


def probe(path: str | os.PathLike[str]) -> VideoInfo:
  """Reads container metadata without decoding; raises MediaError if unreadable."""
  path = _check_path(path)
  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise MediaError(f'{path}: container has no video stream')
      stream = container.streams.video[0]
      rate = stream.average_rate or stream.guessed_rate or stream.base_rate
      fps = float(rate) if rate else 0.0
      duration = declared_duration(container, stream) or 0.0
      num_frames = int(stream.frames or 0)
      if num_frames <= 0:
        num_frames = int(round(duration * fps))
      return VideoInfo(duration_s=duration, fps=fps, num_frames=num_frames,
                       width=int(stream.codec_context.width),
                       height=int(stream.codec_context.height),
                       has_audio=bool(container.streams.audio))
  except MediaError:
    raise
  except Exception as e:  # PyAV raises assorted types on damaged input.
    raise MediaError(f'{path}: cannot open video ({e})') from e


def resize_short_side(frame: np.ndarray, size: int) -> np.ndarray:
  """Bilinear resize (H, W, 3) uint8 so that min(H, W) == size, keeping aspect.

  The long side is int(size * long / short), as torchvision's Resize(int).
  """
  h, w = frame.shape[:2]
  if h <= w:
    new_h, new_w = size, int(size * w / h)
  else:
    new_h, new_w = int(size * h / w), size
  return _resize(frame, (new_h, new_w))


def _resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Bilinear (antialiased, Pillow) resize of uint8 (H, W, 3) to (h, w)."""
  h, w = size
  if frame.shape[:2] == (h, w):
    return frame
  img = Image.fromarray(np.ascontiguousarray(frame))
  return np.asarray(img.resize((w, h), Image.BILINEAR))


def center_crop(frame: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
  """Central (h, w) crop of (H, W, ...); offsets round((H - h) / 2) as torchvision."""
  h, w = (size, size) if isinstance(size, int) else size
  height, width = frame.shape[:2]
  if h > height or w > width:
    raise ValueError(f'crop {(h, w)} larger than frame {(height, width)}')
  top = int(round((height - h) / 2.0))
  left = int(round((width - w) / 2.0))
  return frame[top:top + h, left:left + w]


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
  """Encodes uint8 RGB (H, W, 3) as baseline JPEG bytes (Pillow, 4:2:0)."""
  buf = io.BytesIO()
  Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8)).save(
      buf, format='JPEG', quality=quality)
  return buf.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
  """Decodes JPEG (or any Pillow image) bytes to uint8 RGB (H, W, 3)."""
  try:
    with Image.open(io.BytesIO(data)) as img:
      return np.asarray(img.convert('RGB'))
  except (OSError, ValueError) as e:
    raise MediaError(f'<{len(data)} image bytes>: cannot decode ({e})') from e


def _to_rgb(frame: av.VideoFrame, resize: int | None,
            size: tuple[int, int] | None) -> np.ndarray:
  arr = frame.to_ndarray(format='rgb24')
  if resize is not None:
    arr = resize_short_side(arr, resize)
  elif size is not None:
    arr = _resize(arr, size)
  return arr


def decode_frames(path: str | os.PathLike[str], *, fps: float | None = None,
                  num_frames: int | None = None, max_frames: int | None = None,
                  resize_short_side: int | None = None,
                  size: tuple[int, int] | None = None,
                  check_truncation: bool = True) -> np.ndarray:
  """Decodes selected frames of the first video stream, uint8 (T, H, W, 3) RGB.

  Exactly one sampling mode:
    fps: the first frame of every 1/fps-second interval, intervals counted from
      the first frame's timestamp (OGM-GE's 1 fps extraction with fps=1.0).
    num_frames: N frames evenly spaced over the clip, index floor((i + 0.5) *
      n / N) for i < N, the centres of N equal segments (repeats when n < N).
  max_frames caps T. resize_short_side (bilinear, aspect kept) or size (h, w),
  exact resize, at most one of them. The whole stream is decoded sequentially,
  which is robust for FLV files without an index. With `check_truncation`, a
  stream whose decoded span is much shorter than its declared duration is
  rejected (not checked when max_frames stops decoding early).

  Raises:
    MediaError: the file is missing, empty, unreadable or has no frames.
  """
  if (fps is None) == (num_frames is None):
    raise ValueError('pass exactly one of fps / num_frames')
  if fps is not None and fps <= 0:
    raise ValueError(f'fps must be positive, got {fps}')
  if num_frames is not None and num_frames <= 0:
    raise ValueError(f'num_frames must be positive, got {num_frames}')
  if resize_short_side is not None and size is not None:
    raise ValueError('pass at most one of resize_short_side / size')
  path = _check_path(path)
  picked: list[np.ndarray] = []
  kept: list[av.VideoFrame] = []
  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise MediaError(f'{path}: container has no video stream')
      stream = container.streams.video[0]
      stream.thread_type = 'AUTO'
      rate = stream.average_rate or stream.guessed_rate
      nominal_fps = float(rate) if rate else 25.0
      t0: float | None = None
      t_last = 0.0
      last_slot = -1
      stopped_early = False
      for index, frame in enumerate(container.decode(stream)):
        t = frame.time if frame.time is not None else index / nominal_fps
        if t0 is None:
          t0 = t
        t_last = max(t_last, t)
        if num_frames is not None:
          kept.append(frame)
          continue
        # 1 ms tolerance absorbs millisecond-rounded timestamps (FLV).
        slot = int(math.floor((t - t0 + 1e-3) * fps))
        if slot > last_slot:
          last_slot = slot
          picked.append(_to_rgb(frame, resize_short_side, size))
          if max_frames is not None and len(picked) >= max_frames:
            stopped_early = True
            break
      if check_truncation and t0 is not None and not stopped_early:
        check_not_truncated(path, 'video', t_last - t0 + 1.0 / nominal_fps,
                            declared_duration(container, stream))
  except MediaError:
    raise
  except Exception as e:  # PyAV raises assorted types on damaged input.
    raise MediaError(f'{path}: cannot decode video ({e})') from e

  if num_frames is not None and kept:
    n = len(kept)
    idx = np.floor((np.arange(num_frames) + 0.5) * n / num_frames).astype(int)
    idx = np.minimum(idx, n - 1)
    if max_frames is not None:
      idx = idx[:max_frames]
    picked = [_to_rgb(kept[i], resize_short_side, size) for i in idx]
  if not picked:
    raise MediaError(f'{path}: video stream decoded to no frames')
  return np.stack(picked)


def sample_segment_indices(n: int, num: int, *, train: bool,
                           rng: np.random.Generator | None = None) -> np.ndarray:
  """Kinetics-Sounds segment sampling of `num` frame indices from n, int64 (num,).

  seg = n // num. Train: t_i ~ U{i*seg, ..., i*seg + seg - 1} (0-indexed form
  of the reference's U{i*seg+1 .. i*seg+seg}); test: t_i = i*seg + max(seg//2,
  1), clipped to n - 1. When n < num (seg = 0) the n frames are repeated in
  order: t_i = floor(i * n / num). rng defaults to a fresh default_rng().
  """
  if n <= 0 or num <= 0:
    raise ValueError(f'need n > 0 and num > 0, got n={n} num={num}')
  seg = n // num
  if seg == 0:
    return (np.arange(num) * n // num).astype(np.int64)
  base = np.arange(num, dtype=np.int64) * seg
  if train:
    rng = rng if rng is not None else np.random.default_rng()
    return base + rng.integers(0, seg, size=num)
  return np.minimum(base + max(seg // 2, 1), n - 1)
