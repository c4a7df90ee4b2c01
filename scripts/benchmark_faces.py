r"""Frames per second of the numpy MTCNN (avjax/media/faces.py) and its 5-point alignment.

  python scripts/benchmark_faces.py [--size 224] [--frames 40] [--repeats 3]

Frames are drawn faces (tests/data_builders/fixtures.draw_face, a different position and size per
frame) and faceless frames (a plain gradient) of --size x --size pixels, as the official VoxCeleb2
face tracks (224x224). One process and one BLAS thread, as a build worker runs them
(data_builders/common/media.one_blas_thread); a build with N workers does about N times this.
Prints one Markdown row per case: best of --repeats passes over --frames frames.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
from threadpoolctl import threadpool_limits

from avjax.media import faces
from tests.data_builders.fixtures import draw_face


def frames(kind: str, n: int, size: int) -> list[np.ndarray]:
  rng = np.random.default_rng(0)
  out = []
  for _ in range(n):
    if kind == 'face':
      face = rng.uniform(0.3, 0.6) * size
      cx, cy = rng.uniform(0.4, 0.6, 2) * size
      out.append(draw_face(size, size, cx, cy, face)[0])
    else:
      img = np.empty((size, size, 3), np.uint8)
      img[:] = rng.integers(0, 256, 3)
      img[..., 2] = np.linspace(0, 255, size).astype(np.uint8)[None]
      out.append(img)
  return out


def run(detector: faces.MTCNN, images: list[np.ndarray], aligned: bool, size: int) -> int:
  found = 0
  for image in images:
    face = faces.pick(detector.detect(image), *image.shape[:2])
    if face is not None:
      found += 1
      if aligned:
        faces.align(image, face.points, size)
  return found


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--size', type=int, default=224)
  parser.add_argument('--frames', type=int, default=40)
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args()
  detector = faces.MTCNN()
  print(f'# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, '
        f'load average {os.getloadavg()[0]:.1f}; numpy {np.__version__}; one BLAS thread')
  print('| frames | step | detected | frames/s (best of repeats) | ms/frame |')
  print('|---|---|---|---|---|')
  with threadpool_limits(limits=1, user_api='blas'):
    for kind in ('face', 'none'):
      images = frames(kind, args.frames, args.size)
      run(detector, images[:2], True, args.size)  # Warm caches.
      for aligned in (False, True):
        best, found = float('inf'), 0
        for _ in range(args.repeats):
          start = time.perf_counter()
          found = run(detector, images, aligned, args.size)
          best = min(best, time.perf_counter() - start)
        step = 'detect + align' if aligned else 'detect'
        print(f'| {kind} {args.size}x{args.size} | {step} | {found}/{len(images)} | '
              f'{len(images) / best:.1f} | {1000 * best / len(images):.1f} |')


if __name__ == '__main__':
  main()
