"""avjax/media/faces.py: the MTCNN port (network shapes, P-Net's 12-pixel window at stride 2,
detection and five points of a drawn face, no face on a plain frame), the package's box rules, and
the ArcFace alignment (exact similarity, template rule, warp direction)."""

from __future__ import annotations

import importlib.metadata
import math

import numpy as np
import pytest

from avjax.media import faces
from tests.data_builders.fixtures import draw_face

try:  # The dev extra installs it (CI); skipped where it is missing.
  faces.load_weights()
except faces.FacesUnavailable:
  pytest.skip("mtcnn weights not installed (pip install 'avjax[faces]')", allow_module_level=True)


@pytest.fixture(scope='module')
def detector():
  return faces.MTCNN()


def test_weights_and_network_shapes(detector):
  w = detector.weights
  assert [len(w[k]) for k in ('pnet', 'rnet', 'onet')] == [13, 16, 21]
  rng = np.random.default_rng(0)
  offsets, prob = faces.pnet(w['pnet'], rng.standard_normal((2, 30, 40, 3)).astype(np.float32))
  assert offsets.shape == (2, 10, 15, 4) and prob.shape == (2, 10, 15)  # (n - 12) // 2 + 1.
  assert np.all((prob >= 0) & (prob <= 1))
  offsets, prob = faces.rnet(w['rnet'], rng.standard_normal((3, 24, 24, 3)).astype(np.float32))
  assert offsets.shape == (3, 4) and prob.shape == (3,)
  offsets, marks, prob = faces.onet(w['onet'],
                                    rng.standard_normal((2, 48, 48, 3)).astype(np.float32))
  assert offsets.shape == (2, 4) and marks.shape == (2, 10) and prob.shape == (2,)


def test_pnet_window_is_12_pixels_at_stride_2(detector):
  """Output row i sees exactly input rows 2i .. 2i + 11: changing input row r moves the outputs
  of those i and no other."""
  rng = np.random.default_rng(1)
  x = rng.standard_normal((1, 40, 16, 3)).astype(np.float32)
  base = faces.pnet(detector.weights['pnet'], x)[0]
  for r in (0, 7, 20, 39):
    y = x.copy()
    y[0, r] += 3.0
    changed = np.abs(faces.pnet(detector.weights['pnet'], y)[0] - base).max(axis=(0, 2, 3)) > 0
    expected = [2 * i <= r <= 2 * i + 11 for i in range(base.shape[1])]
    assert changed.tolist() == expected, r


@pytest.mark.parametrize('cx, cy, size', [(112, 112, 100), (90, 120, 80), (130, 100, 140)])
def test_detects_the_drawn_face_and_its_five_points(detector, cx, cy, size):
  image, points = draw_face(224, 224, cx, cy, size)
  found = detector.detect(image)
  assert len(found) == 1 and found[0].score > 0.9
  face = found[0]
  assert np.abs(face.points - points).max() < 0.06 * size, (face.points, points)
  assert face.points[0, 0] < face.points[1, 0] and face.points[3, 0] < face.points[4, 0]
  x1, y1, x2, y2 = face.box
  assert x1 < points[:, 0].min() and points[:, 0].max() < x2
  assert y1 < points[:, 1].min() and points[:, 1].max() < y2
  assert 0.6 * size < y2 - y1 < 1.6 * size  # The face ellipse is size tall.


def test_no_face_on_a_plain_frame(detector):
  image = np.empty((224, 224, 3), np.uint8)
  image[:] = (60, 90, 140)
  image[:, :, 2] = np.arange(224, dtype=np.uint8)[None]
  assert detector.detect(image) == []


def test_aligned_face_lands_on_the_template(detector):
  """Detect, align to 224 (template x 2), detect again: the five points are where the template
  puts them (within the detector's own landmark noise)."""
  image, _ = draw_face(224, 224, 100, 120, 90)
  face = faces.pick(detector.detect(image), 224, 224)
  crop = faces.align(image, face.points, 224)
  again = detector.detect(crop)
  assert crop.shape == (224, 224, 3) and len(again) == 1
  error = np.abs(again[0].points - faces.template(224))  # Landmark noise x ~2.4 (the zoom).
  assert error.max() < 12.0 and error.mean() < 4.0, error


def test_similarity_is_exact_for_a_similarity():
  """Points made from the 112 template by a known similarity are mapped back exactly; a hand
  case: template / 2 + (10, 20) is undone by x -> 2 x - (20, 40)."""
  t = faces.template(112)
  src = t / 2 + np.array([10.0, 20.0])
  np.testing.assert_allclose(faces.similarity(src, t), [[2, 0, -20], [0, 2, -40]], atol=1e-9)
  scale, angle, shift = 1.7, 0.3, np.array([5.0, -3.0])
  rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
  src = (t @ rot.T) * scale + shift  # src = s R t + b, so src -> t is (1/s) R^T (x - b).
  m = faces.similarity(src, t)
  np.testing.assert_allclose(m[:, :2], rot.T / scale, atol=1e-9)
  np.testing.assert_allclose(src @ m[:, :2].T + m[:, 2], t, atol=1e-9)


def test_template_rule():
  np.testing.assert_allclose(faces.template(112), faces.ARCFACE_112)
  np.testing.assert_allclose(faces.template(224), 2 * faces.ARCFACE_112)
  np.testing.assert_allclose(faces.template(128), faces.ARCFACE_112 + [8.0, 0.0])


def test_warp_moves_a_dot_to_its_template_point():
  """A bright dot at a source point ends at the template point after align (warp direction)."""
  t = faces.template(112)
  src = t / 2 + np.array([10.0, 20.0])  # Integer-free points; the dot sits at src[2] rounded.
  image = np.zeros((120, 120, 3), np.uint8)
  dot = np.round(src[2]).astype(int)
  image[dot[1], dot[0]] = 255
  out = faces.align(image, src, 112)
  y, x = np.unravel_index(np.argmax(out[..., 0]), out.shape[:2])
  expected = 2 * dot - np.array([20, 40])  # x -> 2 x - (20, 40).
  assert (x, y) == tuple(expected)
  assert faces.align(image, np.zeros((5, 2)), 112) is None  # Degenerate points: caller falls back.


def test_pick_prefers_the_large_central_face():
  f = lambda box: faces.Face(np.array(box, float), 0.99, np.zeros((5, 2)))
  small, corner, centre = f([0, 0, 20, 20]), f([0, 0, 100, 100]), f([70, 70, 160, 160])
  assert faces.pick([small, corner, centre], 224, 224) is centre
  assert faces.pick([small, f([150, 150, 224, 224])], 224, 224).box[0] == 150
  assert faces.pick([], 224, 224) is None


def test_box_rules():
  boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [2, 0, 12, 10], [50, 50, 60, 60]], float)
  scores = np.array([0.9, 0.8, 0.7, 0.6])
  # One pass: box 2 overlaps box 1 (IoU 0.82) but box 0 only by 0.67, and goes although box 1 is
  # itself dropped (the package's rule, not greedy NMS).
  assert faces.nms(boxes, scores, 0.7).tolist() == [0, 3]
  assert faces.nms(boxes, scores, 0.6).tolist() == [0, 3]
  image = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
  np.testing.assert_allclose(faces.area_resize(image, 2, 2)[..., 0], [[2.5, 4.5], [10.5, 12.5]])
  np.testing.assert_allclose(faces.pyramid_scales(224, 224)[:2], [0.6, 0.6 * 0.709])


def test_missing_package_is_one_line(monkeypatch):
  def missing(name):
    raise importlib.metadata.PackageNotFoundError(name)
  monkeypatch.setattr(importlib.metadata, 'distribution', missing)
  with pytest.raises(faces.FacesUnavailable, match=r"pip install 'avjax\[faces\]'") as e:
    faces.load_weights()
  assert '\n' not in str(e.value)


def test_warp_matches_a_direct_bilinear_resampling():
  """PIL's affine warp with the half-pixel shift equals bilinear sampling at matrix^-1 (x, y) with
  pixel centres at integers (to PIL's 8-bit rounding), away from the border."""
  rng = np.random.default_rng(2)
  image = rng.integers(0, 256, (64, 80, 3)).astype(np.uint8)
  angle, scale = 0.4, 1.3
  m = np.array([[scale * math.cos(angle), -scale * math.sin(angle), 10.0],
                [scale * math.sin(angle), scale * math.cos(angle), -20.0]])
  out = faces.warp(image, m, 72).astype(int)
  inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))
  ys, xs = np.mgrid[0:72, 0:72].astype(float)
  sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
  sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
  ref = faces._bilinear(image.astype(np.float32), sy, sx)  # pylint: disable=protected-access
  inside = (sx > 1) & (sx < 78) & (sy > 1) & (sy < 62)
  assert inside.sum() > 1000
  assert np.abs(out - np.round(ref))[inside].max() <= 1
