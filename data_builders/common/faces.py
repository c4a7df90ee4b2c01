"""Per-clip decoding for builders whose frames are faces (voxceleb), run in build workers: audio
as common/media.py, and the faces by the config's face_source:

  'mtcnn': frames at frame_fps, whole; in each, MTCNN (avjax/media/faces.py) finds the faces, the
    main one (faces.pick: large and central) is warped onto the ArcFace 5-point template at
    frame_size; a frame without a face falls back to the config's centre crop (frame_crop).
    'face_detected' (T,) int32 says which (1: aligned detector crop, 0: centre crop).
  'centre': media.process_clip as is (the centre crop of every frame).
  'folders': already-extracted face images (MMCosine's layout: one folder per utterance of
    0000000.png, 0000001.png, ... at 2 fps), every image in name order (at most max_frames when
    > 0), resized to frame_size; 'video_seconds' is then their count / frame_fps.

The detector is loaded once per worker process, on its first clip.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image

from avjax.media import faces as faces_lib
from avjax.media import video as video_lib
from data_builders.common import media
from data_builders.common.report import ClipError

FACE_SOURCES = ('mtcnn', 'centre', 'folders')
IMAGE_EXTS = ('.png', '.jpg', '.jpeg')
_DETECTOR: dict[str, faces_lib.MTCNN] = {}


def detector() -> faces_lib.MTCNN:
  """This process's MTCNN (weights read once)."""
  if 'mtcnn' not in _DETECTOR:
    _DETECTOR['mtcnn'] = faces_lib.MTCNN()
  return _DETECTOR['mtcnn']


def face_or_centre(frame: np.ndarray, spec: dict[str, Any]) -> tuple[np.ndarray, bool]:
  """(frame_size crop, whether it is an aligned detected face) of one whole RGB frame."""
  h, w = frame.shape[:2]
  size = tuple(spec['frame_size'])
  face = faces_lib.pick(detector().detect(frame), h, w)
  if face is not None:
    side = max(size)
    aligned = faces_lib.align(frame, face.points, side)
    if aligned is not None:
      if size != (side, side):
        aligned = np.asarray(Image.fromarray(aligned).resize((size[1], size[0]), Image.BILINEAR))
      return aligned, True
  return media._crop_resize(frame, spec), False  # pylint: disable=protected-access


def _folder_frames(folder: str | None, spec: dict[str, Any]) -> np.ndarray:
  """(T, h, w, 3) uint8 of a face folder's images in name order, resized to frame_size."""
  if not folder or not os.path.isdir(folder):
    raise ClipError('missing_counterpart', f'{folder}: no face folder', [folder or ''])
  names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTS))
  if spec['max_frames']:
    names = names[:spec['max_frames']]
  if not names:
    raise ClipError('empty', f'{folder}: no face images ({", ".join(IMAGE_EXTS)})', [folder])
  h, w = spec['frame_size']
  out = []
  for name in names:
    path = os.path.join(folder, name)
    try:
      with Image.open(path) as img:
        out.append(np.asarray(img.convert('RGB').resize((w, h), Image.BILINEAR)))
    except OSError as e:
      raise ClipError('corrupt', f'{path}: cannot read face image ({e})', [path]) from e
  return np.stack(out)


def process_clip(job: dict[str, str | None], spec: dict[str, Any]) -> dict[str, Any]:
  """The media part of one voxceleb record; raises ClipError."""
  source = spec['face_source']
  if source == 'centre':
    return media.process_clip(job, spec)
  if source == 'folders':
    frames = _folder_frames(job.get('faces'), spec)
    seconds, flags = len(frames) / spec['frame_fps'], None
  else:
    whole, seconds = media.decode_video(job.get('video'), {**spec, 'frame_crop': '',
                                                            'frame_size': None})
    crops = [face_or_centre(f, spec) for f in whole]
    frames = np.stack([c for c, _ in crops])
    flags = np.array([found for _, found in crops], np.int32)
  out = media.process_clip(job, {**spec, 'frame_mode': ''})  # The audio.
  tol = spec['max_av_mismatch_s']
  if tol is not None and abs(float(out['audio_seconds']) - seconds) > tol:
    raise ClipError('length_mismatch', f'audio lasts {float(out["audio_seconds"]):.2f} s but the '
                    f'faces {seconds:.2f} s (more than {tol} s apart)',
                    [p for p in job.values() if p])
  out['video_seconds'] = np.float32(seconds)
  out['frames'] = [video_lib.encode_jpeg(f, quality=spec['jpeg_quality']) for f in frames]
  if flags is not None:
    out['face_detected'] = flags
  return out


def safe_process(job: dict[str, str | None], spec: dict[str, Any]) -> tuple:
  """process_clip, guarded (media.guarded): this builder's worker target."""
  return media.guarded(process_clip, job, spec)
