r"""Frames per second of the numpy MTCNN (avjax/media/faces.py) and its 5-point alignment.

  python scripts/benchmark_faces.py [--size 224] [--frames 40] [--repeats 3]

Frames are drawn faces (tests/data_builders/fixtures.draw_face, a different position and size per
frame) and faceless frames (a plain gradient) of --size x --size pixels, as the official VoxCeleb2
face tracks (224x224). One process and one BLAS thread, as a build worker runs them
(data_builders/common/media.one_blas_thread); a build with N workers does about N times this.
Prints one Markdown row per case and step: best of --repeats passes over --frames frames.
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


def best_seconds(fn, repeats: int) -> float:
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return best


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--size', type=int, default=224)
  parser.add_argument('--frames', type=int, default=40)
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args()
  detector = faces.MTCNN()
  print(f'# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, '
        f'load average {os.getloadavg()[0]:.1f}; numpy {np.__version__}; one BLAS thread')
  print('| frames | step | faces found | frames/s (best of repeats) | ms/frame |')
  print('|---|---|---|---|---|')
  with threadpool_limits(limits=1, user_api='blas'):
    for kind in ('face', 'none'):
      images = frames(kind, args.frames, args.size)
      picked = [faces.pick(detector.detect(im), *im.shape[:2]) for im in images]  # Also warms up.
      found = sum(p is not None for p in picked)
      rows = [('detect (MTCNN)', lambda: [detector.detect(im) for im in images])]
      if found:
        rows.append(('align (5-point warp)', lambda: [
            faces.align(im, p.points, args.size) for im, p in zip(images, picked) if p]))
      for step, fn in rows:
        n = len(images) if step.startswith('detect') else found
        best = best_seconds(fn, args.repeats)
        print(f'| {kind} {args.size}x{args.size} | {step} | {found}/{len(images)} | '
              f'{n / best:.1f} | {1000 * best / n:.2f} |')

if __name__ == '__main__':
  main()
