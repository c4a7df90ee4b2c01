"""Dense optical flow between two frames, and its 8-bit storage (numpy; OpenCV when installed).

Flow is float32 (H, W, 2): per pixel the (dx, dy) displacement in pixels from the first frame to
the second. Stored flow follows the two-stream / TSN convention (denseflow, BalanceBenchmark's
UCF101 flow JPEGs): each component clipped to [-bound, bound] and mapped linearly to 0..255.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage

FLOW_METHODS = ('opencv_dis', 'opencv_farneback', 'opencv_tvl1', 'horn_schunck')
_NEEDS = {'opencv_dis': 'opencv-python-headless', 'opencv_farneback': 'opencv-python-headless',
          'opencv_tvl1': 'opencv-contrib-python-headless (cv2.optflow)'}
_HS_KERNEL = np.array([[1, 2, 1], [2, 0, 2], [1, 2, 1]], np.float32) / 12.0


def to_gray(frame: np.ndarray) -> np.ndarray:
  """uint8 (H, W, 3) RGB -> uint8 (H, W) luma (ITU-R 601: 0.299 R + 0.587 G + 0.114 B)."""
  f = np.asarray(frame, np.float32)
  return np.clip(np.round(f @ np.array([0.299, 0.587, 0.114], np.float32)), 0, 255).astype(
      np.uint8)


def check_method(method: str) -> None:
  """Raises a ValueError / ImportError that names the fix when `method` cannot run here."""
  if method not in FLOW_METHODS:
    raise ValueError(f'unknown flow method {method!r}; known: {FLOW_METHODS}')
  if method == 'horn_schunck':
    return
  try:
    import cv2  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        f"flow method {method!r} needs OpenCV: pip install {_NEEDS[method]}; or use "
        "flow_method='horn_schunck' (numpy, slower and less accurate), or put precomputed flow "
        'JPEGs in the manual folder') from e
  if method == 'opencv_tvl1' and not hasattr(cv2, 'optflow'):
    raise ImportError(f'flow method {method!r} needs {_NEEDS[method]} (cv2.optflow is missing)')


def horn_schunck(prev: np.ndarray, nxt: np.ndarray, *, alpha: float = 0.1,
                 iterations: int = 64) -> np.ndarray:
  """Horn-Schunck flow of two uint8 gray frames (H, W) on intensities in [0, 1], float32 (H, W, 2).

  Gradients are averaged over both frames (2x2 finite differences, as the original paper); the
  Jacobi iteration u = u_avg - Ix (Ix u_avg + Iy v_avg + It) / (alpha^2 + Ix^2 + Iy^2), with the
  3x3 neighbourhood average of the paper, runs `iterations` times from zero flow. Single scale, so
  only small motions (a few pixels) are recovered; the numpy fallback when OpenCV is missing.
  """
  a = np.asarray(prev, np.float32) / 255.0
  b = np.asarray(nxt, np.float32) / 255.0
  kx = np.array([[-1, 1], [-1, 1]], np.float32) * 0.25
  ky = np.array([[-1, -1], [1, 1]], np.float32) * 0.25
  grad = lambda img, k: scipy.ndimage.correlate(img, k, mode='nearest')  # Not flipped.
  ix, iy = grad(a, kx) + grad(b, kx), grad(a, ky) + grad(b, ky)
  it = grad(b - a, np.full((2, 2), 0.25, np.float32))
  u = np.zeros_like(a)
  v = np.zeros_like(a)
  denom = alpha ** 2 + ix ** 2 + iy ** 2
  for _ in range(iterations):
    ua = scipy.ndimage.convolve(u, _HS_KERNEL, mode='nearest')
    va = scipy.ndimage.convolve(v, _HS_KERNEL, mode='nearest')
    step = (ix * ua + iy * va + it) / denom
    u, v = ua - ix * step, va - iy * step
  return np.stack([u, v], axis=-1).astype(np.float32)


def optical_flow(prev: np.ndarray, nxt: np.ndarray, method: str = 'opencv_dis') -> np.ndarray:
  """Dense flow from `prev` to `nxt` (uint8 gray (H, W)), float32 (H, W, 2) in pixels.

  opencv_dis: cv2.DISOpticalFlow (PRESET_MEDIUM); opencv_farneback: cv2.calcOpticalFlowFarneback
  (pyr_scale 0.5, 3 levels, window 15, 3 iterations, poly_n 5, poly_sigma 1.2); opencv_tvl1:
  cv2.optflow.DualTVL1OpticalFlow (opencv-contrib; the classic two-stream choice); horn_schunck:
  the numpy fallback above.
  """
  check_method(method)
  prev = np.ascontiguousarray(prev, np.uint8)
  nxt = np.ascontiguousarray(nxt, np.uint8)
  if prev.shape != nxt.shape or prev.ndim != 2:
    raise ValueError(f'need two gray frames of one shape, got {prev.shape} and {nxt.shape}')
  if method == 'horn_schunck':
    return horn_schunck(prev, nxt)
  import cv2  # pylint: disable=g-import-not-at-top
  if method == 'opencv_dis':
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(prev, nxt, None)
  elif method == 'opencv_farneback':
    flow = cv2.calcOpticalFlowFarneback(prev, nxt, None, 0.5, 3, 15, 3, 5, 1.2, 0)
  else:
    flow = cv2.optflow.DualTVL1OpticalFlow_create().calc(prev, nxt, None)
  return np.asarray(flow, np.float32)


def quantize_flow(flow: np.ndarray, bound: float = 20.0) -> np.ndarray:
  """float (..., 2) pixels -> uint8: round((clip(f, -bound, bound) + bound) * 255 / (2 bound))."""
  f = np.clip(np.asarray(flow, np.float32), -bound, bound)
  return np.round((f + bound) * (255.0 / (2.0 * bound))).astype(np.uint8)


def dequantize_flow(q: np.ndarray, bound: float = 20.0) -> np.ndarray:
  """uint8 -> float32 pixels, the inverse of quantize_flow up to its rounding (bound / 127.5)."""
  return np.asarray(q, np.float32) * (2.0 * bound / 255.0) - bound
