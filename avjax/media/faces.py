"""Offline face detection (MTCNN in numpy) and 5-point ArcFace alignment, for dataset builders.

MTCNN (Zhang et al., IEEE SPL 2016): a cascade of three small CNNs. P-Net slides a 12x12 window with
stride 2 over an image pyramid and proposes boxes; R-Net (24x24 crops) and O-Net (48x48 crops)
rescore and refine them; O-Net also regresses five landmarks. The weights are those the pip
package `mtcnn==1.0.0` (MIT) ships as joblib+lz4 lists of numpy arrays; they are read from the
installed package's files without importing it (its code needs TensorFlow) and nothing is ever
downloaded. The networks, thresholds, pyramid, box regression, NMS and squaring follow that
package's definitions (numbers cited in the constants below); the code here is our own, in numpy,
so build workers need neither TensorFlow nor JAX.

`align` warps a face onto the ArcFace 112x112 5-point template (insightface's norm_crop),
scaled to the output size, with a least-squares similarity transform (Umeyama).

Coordinates are pixels, x to the right, y down, pixel centres at integers. Landmarks come in the
template's order: image-left eye, image-right eye, nose tip, image-left mouth corner, image-right
mouth corner.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import math
from typing import Sequence

import numpy as np
from PIL import Image

MTCNN_VERSION = '1.0.0'
INSTALL_HINT = "pip install 'avjax[faces]'"
# mtcnn 1.0.0 defaults (mtcnn/mtcnn.py detect_faces docstring; stages/stage_*.py signatures).
MIN_FACE_SIZE = 20
PYRAMID_FACTOR = 0.709
THRESHOLDS = (0.6, 0.7, 0.8)  # P-Net, R-Net, O-Net face probabilities.
NMS_PNET_SCALE, NMS_PNET_ALL, NMS_RNET, NMS_ONET = 0.5, 0.7, 0.7, 0.7
PNET_CELL, PNET_STRIDE = 12, 2
# ArcFace template for 112x112 crops, in the landmark order above.
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]], np.float64)


class FacesUnavailable(ImportError):
  """The `mtcnn` weights package is not installed (one line naming the extra to install)."""


@dataclasses.dataclass(frozen=True)
class Face:
  """One detection: box (x1, y1, x2, y2), face probability, points (5, 2) as (x, y)."""

  box: np.ndarray
  score: float
  points: np.ndarray


# --- Weights. -------------------------------------------------------------------------------------


def load_weights() -> dict[str, list[np.ndarray]]:
  """{'pnet', 'rnet', 'onet': the package's arrays in layer order}, read from its wheel files."""
  try:
    dist = importlib.metadata.distribution('mtcnn')
    import joblib  # pylint: disable=g-import-not-at-top
  except (importlib.metadata.PackageNotFoundError, ImportError) as e:
    raise FacesUnavailable(f'the face detector needs the mtcnn=={MTCNN_VERSION} weights: '
                           f'{INSTALL_HINT}') from e
  if dist.version != MTCNN_VERSION:
    raise FacesUnavailable(f'mtcnn {dist.version} is installed, the face detector is pinned to '
                           f'{MTCNN_VERSION}: {INSTALL_HINT}')
  out = {}
  for name in ('pnet', 'rnet', 'onet'):
    path = dist.locate_file(f'mtcnn/assets/weights/{name}.lz4')
    out[name] = [np.asarray(a, np.float32) for a in joblib.load(str(path))]
  return out


# --- Layers (NHWC float32). ---------------------------------------------------------------------


def _conv(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
  """'valid' stride-1 convolution; kernel HWIO."""
  kh, kw, c, o = kernel.shape
  if kh == kw == 1:
    return x @ kernel[0, 0] + bias
  windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))  # N,H',W',C,kh,kw
  cols = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, kh * kw * c)  # One copy (im2col).
  return (cols @ kernel.reshape(-1, o) + bias).reshape(*windows.shape[:3], o)


def _prelu(x: np.ndarray, slope: np.ndarray) -> np.ndarray:
  """PReLU with one slope per channel (shared over space)."""
  return np.maximum(x, 0) + slope.reshape(-1) * np.minimum(x, 0)


def _max_pool(x: np.ndarray, size: int, stride: int, same: bool) -> np.ndarray:
  """Max pooling; 'same' pads the end (Keras: total pad split with the extra at the end) with
  -inf, so padded cells never win."""
  if same:
    pads = []
    for n in x.shape[1:3]:
      total = max((math.ceil(n / stride) - 1) * stride + size - n, 0)
      pads.append((total // 2, total - total // 2))
    x = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=-np.inf)
  out_h, out_w = (x.shape[1] - size) // stride + 1, (x.shape[2] - size) // stride + 1
  out = None
  for i in range(size):  # The max of size^2 strided slices (faster than a window reduction).
    for j in range(size):
      part = x[:, i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride]
      out = part.copy() if out is None else np.maximum(out, part, out=out)
  return out


def _softmax_face(logits: np.ndarray) -> np.ndarray:
  """Probability of class 1 (face) of a 2-way softmax over the last axis."""
  return 1.0 / (1.0 + np.exp(logits[..., 0] - logits[..., 1]))


def _dense_from_map(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Flatten (N, H, W, C) with W before H (the package permutes (H, W) before Flatten), then a
  dense layer."""
  return x.transpose(0, 2, 1, 3).reshape(len(x), -1) @ w + b


def pnet(weights: Sequence[np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(N, H, W, 3) normalised -> box offsets (N, H', W', 4), face probability (N, H', W'), with
  H' = (H - 12) // 2 + 1 for even H - 10 (one output per 12x12 window, stride 2)."""
  w = weights
  x = _max_pool(_prelu(_conv(x, w[0], w[1]), w[2]), 2, 2, same=True)
  x = _prelu(_conv(x, w[3], w[4]), w[5])
  x = _prelu(_conv(x, w[6], w[7]), w[8])
  return _conv(x, w[9], w[10]), _softmax_face(_conv(x, w[11], w[12]))


def rnet(weights: Sequence[np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(N, 24, 24, 3) -> box offsets (N, 4), face probability (N,)."""
  w = weights
  x = _max_pool(_prelu(_conv(x, w[0], w[1]), w[2]), 3, 2, same=True)
  x = _max_pool(_prelu(_conv(x, w[3], w[4]), w[5]), 3, 2, same=False)
  x = _prelu(_conv(x, w[6], w[7]), w[8])
  x = _prelu(_dense_from_map(x, w[9], w[10]), w[11])
  return x @ w[12] + w[13], _softmax_face(x @ w[14] + w[15])


def onet(weights: Sequence[np.ndarray],
         x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(N, 48, 48, 3) -> box offsets (N, 4), landmarks (N, 10) as five x then five y, each a
  fraction of the box, face probability (N,)."""
  w = weights
  x = _max_pool(_prelu(_conv(x, w[0], w[1]), w[2]), 3, 2, same=True)
  x = _max_pool(_prelu(_conv(x, w[3], w[4]), w[5]), 3, 2, same=False)
  x = _max_pool(_prelu(_conv(x, w[6], w[7]), w[8]), 2, 2, same=True)
  x = _prelu(_conv(x, w[9], w[10]), w[11])
  x = _prelu(_dense_from_map(x, w[12], w[13]), w[14])
  return x @ w[15] + w[16], x @ w[17] + w[18], _softmax_face(x @ w[19] + w[20])


# --- Image operations. --------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) weights of area (box) resampling: each output cell averages the input cells it
  covers, partial cells by their covered fraction. Cached per shape: do not modify."""
  edges = np.arange(n_out + 1) * (n_in / n_out)
  lo, hi = edges[:-1, None], edges[1:, None]
  cells = np.arange(n_in)[None]
  overlap = np.clip(np.minimum(hi, cells + 1) - np.maximum(lo, cells), 0.0, None)
  return (overlap / (n_in / n_out)).astype(np.float32)


def area_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """(H, W, C) float -> (height, width, C) by area averaging (TF's AREA resize)."""
  h, w, c = image.shape
  rows = (_area_matrix(h, height) @ image.reshape(h, w * c)).reshape(height, w, c)
  cols = _area_matrix(w, width) @ rows.transpose(1, 0, 2).reshape(w, height * c)
  return cols.reshape(width, height, c).transpose(1, 0, 2)


def crop_and_resize(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
  """(N, size, size, C) bilinear crops of (H, W, C) at boxes (x1, y1, x2, y2) in pixels, sampled
  as TF's crop_and_resize with boxes normalised by (W, H): size points from x1 (W-1)/W to
  x2 (W-1)/W; samples outside the image are 0."""
  h, w = image.shape[:2]
  steps = np.arange(size) / (size - 1)
  ys = (boxes[:, 1:2] + steps * (boxes[:, 3:4] - boxes[:, 1:2])) * ((h - 1) / h)
  xs = (boxes[:, 0:1] + steps * (boxes[:, 2:3] - boxes[:, 0:1])) * ((w - 1) / w)
  return _bilinear(image, ys[:, :, None], xs[:, None, :])


def _bilinear(image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
  """Bilinear samples of (H, W, C) at broadcastable (…) ys, xs; 0 outside [0, H-1] x [0, W-1]."""
  h, w = image.shape[:2]
  ys, xs = np.broadcast_arrays(ys, xs)
  inside = (ys >= 0) & (ys <= h - 1) & (xs >= 0) & (xs <= w - 1)
  y0 = np.clip(np.floor(ys), 0, h - 1).astype(np.int64)
  x0 = np.clip(np.floor(xs), 0, w - 1).astype(np.int64)
  y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
  fy, fx = (ys - y0)[..., None], (xs - x0)[..., None]
  top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
  bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
  return np.where(inside[..., None], top * (1 - fy) + bottom * fy, 0.0).astype(np.float32)


# --- Boxes. -------------------------------------------------------------------------------------


def _iou(boxes: np.ndarray, method: str) -> np.ndarray:
  """Pairwise overlap of (N, 4) boxes: intersection over union ('union') or over the smaller
  area ('min'); areas without +1, as the package."""
  area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  lo = np.maximum(boxes[:, None, :2], boxes[None, :, :2])
  hi = np.minimum(boxes[:, None, 2:4], boxes[None, :, 2:4])
  inter = np.prod(np.clip(hi - lo, 0.0, None), axis=-1)
  denom = area[:, None] + area[None] - inter if method == 'union' else np.minimum(
      area[:, None], area[None])
  return inter / np.maximum(denom, 1e-12)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str = 'union',
        presorted: bool = False) -> np.ndarray:
  """Indices kept by the package's one-pass NMS: after sorting by score (unless presorted), a box
  is dropped when ANY higher-ranked box overlaps it by more than `threshold` (even one that is
  itself dropped)."""
  if not len(boxes):
    return np.zeros((0,), np.int64)
  order = np.arange(len(boxes)) if presorted else np.argsort(-scores, kind='stable')
  overlap = _iou(boxes[order], method) > threshold
  suppressed = np.triu(overlap, k=1).any(axis=0)
  return order[~suppressed]


def _square(boxes: np.ndarray) -> np.ndarray:
  """Boxes grown to squares of their longer side, same centre."""
  w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
  side = np.maximum(w, h)
  x1, y1 = boxes[:, 0] + (w - side) / 2, boxes[:, 1] + (h - side) / 2
  return np.stack([x1, y1, x1 + side, y1 + side], axis=1)


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
  """Boxes moved by offsets in units of their size (width = x2 - x1 + 1, as the package)."""
  w, h = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
  return boxes + offsets * np.stack([w, h, w, h], axis=1)


def pyramid_scales(height: int, width: int, min_face_size: int = MIN_FACE_SIZE,
                   factor: float = PYRAMID_FACTOR) -> list[float]:
  """Image scales for P-Net: 12 / min_face_size times factor^k, as many as the package's
  round(log(min_side / 12) / -log(factor) - 1) rule gives, without scales below one window."""
  count = round(-(math.log(min(height, width) / PNET_CELL) / math.log(factor) + 1))
  first = PNET_CELL / min_face_size
  scales = [first * factor ** k for k in range(max(count, 0))]
  return [s for s in scales if min(height, width) * s >= PNET_CELL]


# --- The detector. ------------------------------------------------------------------------------


class MTCNN:
  """The three-stage detector with the package's weights (load once, e.g. once per worker)."""

  def __init__(self, weights: dict[str, list[np.ndarray]] | None = None,
               min_face_size: int = MIN_FACE_SIZE,
               thresholds: tuple[float, float, float] = THRESHOLDS):
    self.weights = weights or load_weights()
    self.min_face_size = min_face_size
    self.thresholds = thresholds

  def _proposals(self, image: np.ndarray) -> np.ndarray:
    """P-Net over the pyramid: (N, 5) squared boxes (x1, y1, x2, y2, score)."""
    h, w = image.shape[:2]
    found = []
    for scale in pyramid_scales(h, w, self.min_face_size):
      # Rounded up, as the original MTCNN; mtcnn 1.0.0 hands TF a float size.
      hs, ws = math.ceil(h * scale), math.ceil(w * scale)
      offsets, prob = pnet(self.weights['pnet'], area_resize(image, hs, ws)[None])
      ys, xs = np.nonzero(prob[0] > self.thresholds[0])
      if not len(ys):
        continue
      score = prob[0, ys, xs]
      order = np.argsort(-score, kind='stable')
      ys, xs, score = ys[order], xs[order], score[order]
      cell = PNET_CELL - 1  # The package's windows span idx*2+1 .. idx*2+12.
      window = np.stack([xs * PNET_STRIDE + 1, ys * PNET_STRIDE + 1,
                         xs * PNET_STRIDE + PNET_CELL, ys * PNET_STRIDE + PNET_CELL], axis=1)
      boxes = (window + offsets[0, ys, xs] * cell) / scale
      keep = nms(boxes, score, NMS_PNET_SCALE, presorted=True)
      found.append(np.concatenate([boxes[keep], score[keep, None]], axis=1))
    if not found:
      return np.zeros((0, 5))
    found = np.concatenate(found)
    found = found[nms(found[:, :4], found[:, 4], NMS_PNET_ALL)]
    return np.concatenate([_square(found[:, :4]), found[:, 4:]], axis=1)

  def detect(self, image: np.ndarray) -> list[Face]:
    """Faces in an RGB uint8 (H, W, 3) image, highest score first."""
    if image.ndim != 3 or image.shape[2] != 3:
      raise ValueError(f'detect expects an (H, W, 3) RGB image, got shape {image.shape}')
    x = (image.astype(np.float32) - 127.5) / 128.0
    boxes = self._proposals(x)
    if len(boxes):  # R-Net.
      offsets, score = rnet(self.weights['rnet'], crop_and_resize(x, boxes[:, :4], 24))
      keep = score > self.thresholds[1]
      boxes = np.concatenate([_regress(boxes[keep, :4], offsets[keep]), score[keep, None]], 1)
      boxes = boxes[nms(boxes[:, :4], boxes[:, 4], NMS_RNET)]
      boxes = np.concatenate([_square(boxes[:, :4]), boxes[:, 4:]], axis=1)
    if not len(boxes):
      return []
    offsets, marks, score = onet(self.weights['onet'], crop_and_resize(x, boxes[:, :4], 48))
    size = boxes[:, 2:4] - boxes[:, 0:2] + 1  # Landmarks are fractions of the O-Net input box.
    points = np.stack([marks[:, :5] * size[:, :1] + boxes[:, :1] - 1,
                       marks[:, 5:] * size[:, 1:] + boxes[:, 1:2] - 1], axis=-1)
    keep = score > self.thresholds[2]
    boxes, score, points = _regress(boxes[keep, :4], offsets[keep]), score[keep], points[keep]
    order = nms(boxes, score, NMS_ONET, method='min')
    h, w = image.shape[:2]
    limits = np.array([w - 1, h - 1, w - 1, h - 1], np.float64)
    return [Face(np.clip(boxes[i], 0, limits), float(score[i]), points[i].astype(np.float64))
            for i in order]


# --- Choosing and aligning. ---------------------------------------------------------------------


def pick(faces: Sequence[Face], height: int, width: int, share: float = 0.5) -> Face | None:
  """The main face: among the faces at least `share` of the largest box's area, the one whose
  centre is nearest the image centre (VoxCeleb tracks are centred on the speaker)."""
  if not faces:
    return None
  areas = [float(np.prod(f.box[2:] - f.box[:2])) for f in faces]
  big = [f for f, a in zip(faces, areas) if a >= share * max(areas)]
  centre = np.array([(width - 1) / 2, (height - 1) / 2])
  return min(big, key=lambda f: float(np.sum(((f.box[:2] + f.box[2:]) / 2 - centre) ** 2)))


def template(size: int) -> np.ndarray:
  """The ArcFace 5-point template for a size x size crop: scaled by size / 112, or for multiples
  of 128 by size / 128 with x shifted by 8 size / 128 (insightface's norm_crop rule)."""
  if size % 112 and size % 128 == 0:
    return ARCFACE_112 * (size / 128) + np.array([8.0 * size / 128, 0.0])
  return ARCFACE_112 * (size / 112)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
  """(2, 3) matrix of the least-squares similarity (scale, rotation, translation) taking the
  (K, 2) points src to dst (Umeyama 1991, without reflection)."""
  src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
  mu_s, mu_d = src.mean(0), dst.mean(0)
  s, d = src - mu_s, dst - mu_d
  cov = d.T @ s / len(src)
  u, sig, vt = np.linalg.svd(cov)
  flip = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
  rot = u @ flip @ vt
  var = np.mean(np.sum(s ** 2, axis=1))
  scale = float(np.sum(sig * np.diag(flip)) / var) if var > 0 else 0.0
  return np.concatenate([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]], axis=1)


def warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
  """size x size uint8 output whose pixel (x, y) is image at matrix^-1 (x, y) (bilinear, black
  outside), i.e. `matrix` maps input to output coordinates (cv2.warpAffine's convention)."""
  inv = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
  # PIL samples pixel (x, y) at its centre (x + 0.5, y + 0.5) in corner coordinates: shift in/out.
  shift = inv[:, :2] @ np.array([-0.5, -0.5]) + inv[:, 2] + 0.5
  coeffs = (inv[0, 0], inv[0, 1], shift[0], inv[1, 0], inv[1, 1], shift[1])
  out = Image.fromarray(np.ascontiguousarray(image, np.uint8)).transform(
      (size, size), Image.AFFINE, coeffs, resample=Image.BILINEAR, fillcolor=(0, 0, 0))
  return np.asarray(out)


def align(image: np.ndarray, points: np.ndarray, size: int) -> np.ndarray | None:
  """The face with these five points warped onto the ArcFace template of a size x size crop;
  None when the points are degenerate (all in one place), so callers fall back."""
  points = np.asarray(points, np.float64)
  if points.shape != (5, 2) or not np.all(np.isfinite(points)) or np.ptp(points, 0).max() < 1:
    return None
  matrix = similarity(points, template(size))
  if not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix[:, :2])) < 1e-8:
    return None
  return warp(image, matrix, size)
