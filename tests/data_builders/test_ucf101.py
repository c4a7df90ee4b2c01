"""ucf101 builder on a generated download: official split lists, 6 RGB frames, optical flow from
precomputed JPEGs and computed (numpy Horn-Schunck here; OpenCV DIS by default), report-and-skip,
the error that names the fix when OpenCV is missing, and the flow helpers."""

from __future__ import annotations

import os

import av
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import data_builders.ucf101 as ucf
from avjax.media import flow as flow_lib
from tests.data_builders import fixtures as fx
from tests.data_builders import fixtures_av as fa

HS = {'flow_method': 'horn_schunck'}


@pytest.fixture(scope='module')
def base(tmp_path_factory):
  return tmp_path_factory.getbasetemp()


@pytest.fixture(scope='module')
def fixture(base):
  return fa.downloads(base)['ucf101']


@pytest.fixture(scope='module')
def partial_flow(fixture, base):
  """The download with the precomputed flow of one clip removed (that clip's flow is computed)."""
  root = base / 'ucf101_partial_flow'
  if not root.exists():
    fx.link_tree(fixture.root, root, skip=('flow',))
    for comp in ('u', 'v'):
      (root / 'flow' / comp).mkdir(parents=True)
      for d in sorted((fixture.root / 'flow' / comp).iterdir()):
        if d.name != fixture.info['computed']:
          os.symlink(d, root / 'flow' / comp / d.name)
  return root


@pytest.fixture(scope='module')
def built(partial_flow, base):
  return fa.build_once(ucf, 'split1', partial_flow, base, **HS)


def test_configs_and_features(tmp_path):
  assert tfds.builder_cls('ucf101') is ucf.Builder
  assert set(ucf.Builder.builder_configs) == {'split1', 'split2', 'split3'}
  info = tfds.builder('ucf101/split2', data_dir=str(tmp_path)).info
  assert info.features['frames'].shape == (6, 224, 224, 3)
  assert info.features['flow'].shape == (6, 224, 224, 2)
  assert info.metadata['config']['flow_method'] == 'opencv_dis'
  assert ucf.parse_name('v_YoYo_g09_c01') == ('YoYo', 9, 1) and ucf.parse_name('x') is None


def test_records_splits_and_flow_sources(fixture, built):
  recs = fa.records(built)
  assert [r['_id'] for r in recs] == sorted(fixture.good)
  assert fa.skipped(built) == fixture.bad
  meta = built.info.metadata
  assert meta['class_names'] == fixture.info['classes'] and meta['flow_dir'] == 'flow'
  assert (meta['clips_with_precomputed_flow'], meta['clips_with_computed_flow']) == (6, 1)
  for r in recs:
    cls = r['_id'].split('_')[1]
    assert r['_split'] == ('train' if r['_id'] in fixture.info['train'] else 'test')
    assert meta['class_names'][r['label']] == cls and int(r['group']) in (1, 8)
    assert np.asarray(r['frames']).shape == (6, 224, 224, 3)
    assert r['flow'].shape == (6, 224, 224, 2) and r['flow'].dtype == np.uint8
    computed = r['_id'] == fixture.info['computed']
    assert r['flow_source'].decode() == ('horn_schunck' if computed else 'precomputed')


def test_flow_values(fixture, built):
  recs = {r['_id']: r for r in fa.records(built)}
  # Precomputed: the u / v JPEGs at the centres of 6 segments, resized like the frames.
  r = recs['v_YoYo_g08_c01']
  names = sorted(os.listdir(fixture.root / 'flow' / 'u' / r['_id']))
  i = int(np.floor(2.5 * len(names) / 6))
  u = Image.open(fixture.root / 'flow' / 'u' / r['_id'] / names[i]).convert('L')
  want = np.asarray(u.resize((224, 224), Image.BILINEAR))
  np.testing.assert_array_equal(r['flow'][2, ..., 0], want)
  # Computed: Horn-Schunck between frames i and i + 1 of the video, quantised (+-20 px), resized.
  r = recs[fixture.info['computed']]
  path = next(fixture.root.rglob(f'{r["_id"]}.avi'))
  with av.open(str(path)) as c:
    gray = [flow_lib.to_gray(f.to_ndarray(format='rgb24')) for f in c.decode(video=0)]
  i = int(np.floor(0.5 * len(gray) / 6))
  q = flow_lib.quantize_flow(flow_lib.horn_schunck(gray[i], gray[i + 1]))
  want = np.asarray(Image.fromarray(q[..., 1]).resize((224, 224), Image.BILINEAR))
  np.testing.assert_array_equal(r['flow'][0, ..., 1], want)


def test_missing_opencv_names_the_fix(partial_flow, tmp_path):
  try:
    import cv2  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:  # The usual case here: the error names the package and the fallbacks.
    with pytest.raises(ImportError, match='pip install opencv-python-headless.*horn_schunck'):
      ucf.build('split1', data_dir=str(tmp_path), manual_dir=str(partial_flow), num_workers=0)
  else:  # With OpenCV the default method builds.
    b = ucf.build('split1', data_dir=str(tmp_path), manual_dir=str(partial_flow), num_workers=0)
    assert b.info.metadata['clips_with_computed_flow'] == 1


def test_horn_schunck_recovers_a_small_shift():
  yy, xx = np.mgrid[0:48, 0:64].astype(np.float32)
  img = lambda dx: (127 + 60 * np.sin((xx - dx) / 5.0) * np.cos(yy / 7.0)).astype(np.uint8)
  flow = flow_lib.horn_schunck(img(0.0), img(1.0), iterations=200)
  centre = flow[8:-8, 8:-8]
  assert abs(float(np.median(centre[..., 0])) - 1.0) < 0.25  # dx ~ +1 px.
  assert abs(float(np.median(centre[..., 1]))) < 0.1
  q = flow_lib.quantize_flow(np.array([[-25.0, 0.0], [20.0, 3.0]]))
  assert q.tolist() == [[0, 128], [255, 147]]
  np.testing.assert_allclose(flow_lib.dequantize_flow(q), [[-20, 0.078], [20, 3.059]], atol=0.01)
  with pytest.raises(ValueError, match='unknown flow method'):
    flow_lib.optical_flow(img(0), img(1), 'farneback')
