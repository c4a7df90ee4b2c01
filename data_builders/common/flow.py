"""Per-clip decoding for builders with an optical-flow modality (ucf101), run in build workers.

`process_clip(job, spec)` returns media.process_clip's parts (the RGB frames of the config) plus
'flow' uint8 (T, h, w, 2): the flow at the same T frame positions (spec frame_mode 'uniform'), from
precomputed flow JPEGs when the job has 'flow_u' / 'flow_v' folders (TSN / denseflow layout, one
gray JPEG per frame pair, u and v separately), else computed from the video with
spec['flow_method'] between frame i and i + 1 (i - 1 and i at the last frame). Either way the flow
is quantised to 0..255 with spec['flow_bound'] (precomputed JPEGs already are) and resized to
frame_size like the RGB frames (values are not rescaled: the TSN convention).
"""

from __future__ import annotations

import os
from typing import Any

import av
import numpy as np
from PIL import Image

from avjax.media import flow as flow_lib
from data_builders.common import media
from data_builders.common.report import ClipError

_IMAGE_EXTS = ('.jpg', '.jpeg', '.png')


def _resize_gray(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  if img.shape[:2] == tuple(size):
    return img
  return np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.BILINEAR))


def _precomputed(u_dir: str, v_dir: str, spec: dict[str, Any]) -> np.ndarray:
  """(T, h, w, 2) uint8 from the u / v JPEG folders at the config's frame positions."""
  names = []
  for d in (u_dir, v_dir):
    files = sorted(n for n in os.listdir(d) if n.lower().endswith(_IMAGE_EXTS))
    if not files:
      raise ClipError('empty', f'{d}: no flow images', [d])
    names.append(files)
  n = min(len(names[0]), len(names[1]))
  if len(names[0]) != len(names[1]):
    raise ClipError('corrupt', f'{u_dir} has {len(names[0])} flow images, {v_dir} '
                    f'{len(names[1])}', [u_dir, v_dir])
  out = []
  for i in media.frame_indices(spec['frame_mode'], n, spec):
    pair = []
    for d, files in zip((u_dir, v_dir), names):
      path = os.path.join(d, files[i])
      try:
        with Image.open(path) as img:
          pair.append(_resize_gray(np.asarray(img.convert('L')), spec['frame_size']))
      except OSError as e:
        raise ClipError('corrupt', f'{path}: cannot read flow image ({e})', [path]) from e
    out.append(np.stack(pair, axis=-1))
  return np.stack(out)


def _computed(path: str, spec: dict[str, Any]) -> np.ndarray:
  """(T, h, w, 2) uint8: flow between frames i and i + 1 of the video at the config's positions."""
  try:
    with av.open(path) as container:
      gray = [flow_lib.to_gray(f.to_ndarray(format='rgb24'))
              for f in container.decode(container.streams.video[0])]
  except Exception as e:  # PyAV raises assorted types on damaged input.
    raise ClipError('corrupt', f'{path}: cannot decode video for flow ({type(e).__name__}: {e})',
                    [path]) from e
  n = len(gray)
  if n < 2:
    raise ClipError('empty', f'{path}: {n} frame(s), optical flow needs two', [path])
  out = []
  for i in media.frame_indices(spec['frame_mode'], n, spec):
    a, b = (i, i + 1) if i + 1 < n else (i - 1, i)
    q = flow_lib.quantize_flow(flow_lib.optical_flow(gray[a], gray[b], spec['flow_method']),
                               spec['flow_bound'])
    out.append(np.stack([_resize_gray(q[..., c], spec['frame_size']) for c in (0, 1)], axis=-1))
  return np.stack(out)


def process_clip(job: dict[str, str | None], spec: dict[str, Any]) -> dict[str, Any]:
  """media.process_clip's parts plus 'flow' and 'flow_source'; raises ClipError."""
  out = media.process_clip(job, spec)
  if job.get('flow_u') and job.get('flow_v'):
    out['flow'] = _precomputed(job['flow_u'], job['flow_v'], spec)
    out['flow_source'] = 'precomputed'
  else:
    out['flow'] = _computed(job['video'], spec)
    out['flow_source'] = spec['flow_method']
  return out


def safe_process(job: dict[str, str | None], spec: dict[str, Any]) -> tuple:
  """process_clip, guarded (media.guarded): this builder's worker target."""
  return media.guarded(process_clip, job, spec)
