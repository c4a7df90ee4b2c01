"""Tests of the synthetic_av TFDS builder: determinism, schema, advertised modality properties, reading.

Small variants (overrides) are built into tmp dirs; reading goes through `tfds.data_source` (no TF).
Single-modality accuracies come from a standardized logistic regression on simple features: audio
log-mel pooled 2x2 (1024,), frames as a colour histogram (64 RGB bins, log counts; position-invariant).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

import data_builders.synthetic_av as sav
from data_builders.synthetic_av import synthetic_av_dataset_builder as sav_lib

SMALL = dict(num_train=400, num_validation=0, num_test=200)
TINY = dict(num_train=24, num_validation=8, num_test=8)


def _records(builder: tfds.core.DatasetBuilder, split: str) -> list[dict]:
  """All records of a split through tfds.data_source, sorted by id."""
  src = tfds.data_source(f'synthetic_av/{builder.builder_config.name}',
                         data_dir=builder.data_dir_root, split=split)
  recs = [src[i] for i in range(len(src))]
  return sorted(recs, key=lambda r: r['id'])


def _features(recs: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(audio (N, 1024), visual colour histogram (N, 64), label (N,))."""
  n = len(recs)
  audio = np.stack([r['audio'] for r in recs]).reshape(n, 32, 2, 32, 2).mean((2, 4)).reshape(n, -1)
  frames = np.stack([r['frames'] for r in recs]) // 64
  code = (frames[..., 0].astype(np.int64) * 16 + frames[..., 1] * 4 + frames[..., 2]).reshape(n, -1)
  hist = np.log1p(np.stack([np.bincount(c, minlength=64) for c in code]).astype(np.float32))
  return audio, hist, np.array([r['label'] for r in recs])


def _accuracies(builder: tfds.core.DatasetBuilder) -> dict[str, float]:
  """Test accuracy of a classifier fit on train, per modality and on both."""
  pytest.importorskip('sklearn')
  from sklearn.linear_model import LogisticRegression
  from sklearn.pipeline import make_pipeline
  from sklearn.preprocessing import StandardScaler
  from threadpoolctl import threadpool_limits  # A scikit-learn dependency.
  a_tr, v_tr, y_tr = _features(_records(builder, 'train'))
  a_te, v_te, y_te = _features(_records(builder, 'test'))
  out = {}
  with threadpool_limits(limits=1, user_api='blas'):  # Tiny problems: BLAS threads only cost here.
    for name, xtr, xte in (('audio', a_tr, a_te), ('visual', v_tr, v_te),
                           ('both', np.hstack([a_tr, v_tr]), np.hstack([a_te, v_te]))):
      clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=500))
      out[name] = float(clf.fit(xtr, y_tr).score(xte, y_te))
  print(builder.builder_config.name, {k: round(v, 3) for k, v in out.items()})
  return out


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  """Lazily builds (config name -> builder) small variants, once per module."""
  cache = {}

  def get(config_name: str) -> tfds.core.DatasetBuilder:
    if config_name not in cache:
      cache[config_name] = sav.build(config_name, data_dir=str(tmp_path_factory.mktemp(config_name)),
                                     **SMALL)
    return cache[config_name]

  return get


def test_registered_and_defaults(tmp_path):
  assert tfds.builder_cls('synthetic_av') is sav.Builder
  b = tfds.builder('synthetic_av', data_dir=str(tmp_path))
  assert b.builder_config.name == 'audio_dominant'
  assert b.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  assert str(b.version) == '1.0.0' and '1.0.0' in b.release_notes
  assert set(sav.Builder.builder_configs) >= {'audio_dominant', 'balanced', 'debiased',
                                              'complementary'}
  b = tfds.builder('synthetic_av/complementary', data_dir=str(tmp_path))
  assert b.info.metadata['bounds'] == {'audio': 0.5, 'visual': pytest.approx(1 / 3), 'both': 1.0}
  assert b.info.metadata['config']['mode'] == 'complementary'


def test_overrides_make_distinct_configs():
  a = sav.make_config('audio_dominant', num_train=64)
  b = sav.make_config('audio_dominant', num_train=65)
  c = sav.make_config('audio_dominant', audio_snr_db=(-3.0, 3.0))
  assert len({a.name, b.name, c.name, 'audio_dominant'}) == 4
  assert a.num_train == 64 and c.audio_snr_db == (-3.0, 3.0) and c.num_train == 2000
  assert sav.make_config('balanced') is sav.Builder.builder_configs['balanced']
  with pytest.raises(ValueError, match='unknown config field'):
    sav.make_config('balanced', num_trains=3)
  with pytest.raises(ValueError, match='no config'):
    sav.make_config('nope')
  with pytest.raises(ValueError, match='even num_classes'):
    sav.make_config('complementary', num_classes=5)


def test_determinism(tmp_path):
  b1 = sav.build('balanced', data_dir=str(tmp_path / 'one'), **TINY)
  b2 = sav.build('balanced', data_dir=str(tmp_path / 'two'), **TINY)
  b3 = sav.build('balanced', data_dir=str(tmp_path / 'three'), seed=1, **TINY)
  assert b1.builder_config.name == b2.builder_config.name != b3.builder_config.name
  for split in ('train', 'validation', 'test'):
    r1, r2, r3 = (_records(b, split) for b in (b1, b2, b3))
    assert len(r1) == TINY[f'num_{split}']
    for x, y in zip(r1, r2):
      assert x.keys() == y.keys()
      for k in x:
        np.testing.assert_array_equal(x[k], y[k], err_msg=k)
    assert not any(np.array_equal(x['audio'], z['audio']) for x, z in zip(r1, r3))
    assert not any(np.array_equal(x['frames'], z['frames']) for x, z in zip(r1, r3))
  # Records are pure functions of (seed, split, index): regenerate one out of order.
  ex = sav.make_example(b1.builder_config, 'train', 17)
  rec = next(r for r in _records(b1, 'train') if r['id'] == b'train_000017')
  np.testing.assert_array_equal(rec['audio'], ex['audio'])
  np.testing.assert_array_equal(rec['frames'], ex['frames'])
  assert rec['label'] == ex['label']
  # Splits come from different seed streams.
  tr, te = _records(b1, 'train'), _records(b1, 'test')
  assert not np.array_equal(tr[0]['audio'], te[0]['audio'])


def test_schema_shapes_and_ranges(built):
  b = built('complementary')
  feats = b.info.features
  assert feats['label'].names == [f'class_{i}' for i in range(6)]
  assert feats['audio'].shape == (64, 64) and feats['audio'].np_dtype == np.float32
  assert feats['frames'].shape == (3, 64, 64, 3) and feats['frames'].np_dtype == np.uint8
  for name, dtype in (('audio_snr', np.float32), ('visual_visibility', np.float32),
                      ('audio_informative', np.bool_), ('visual_informative', np.bool_),
                      ('group_audio', np.int32), ('group_visual', np.int32)):
    assert feats[name].shape == () and feats[name].np_dtype == dtype, name
  assert feats['attributes'].shape == (3,)
  cfg = b.builder_config
  recs = _records(b, 'train')
  assert [r['id'] for r in recs] == [f'train_{i:06d}'.encode() for i in range(len(recs))]
  for r in recs[:50]:
    assert r['audio'].shape == (64, 64) and r['audio'].dtype == np.float32
    assert np.all(np.isfinite(r['audio']))
    assert r['frames'].shape == (3, 64, 64, 3) and r['frames'].dtype == np.uint8
    assert not np.array_equal(r['frames'][0], r['frames'][-1])  # Frames move within a clip.
    assert 0 <= r['label'] < 6
    assert r['group_audio'] == r['label'] // 2 and r['group_visual'] == r['label'] % 2
    assert cfg.audio_snr_db[0] <= r['audio_snr'] <= cfg.audio_snr_db[1]
    assert cfg.visual_visibility[0] <= r['visual_visibility'] <= cfg.visual_visibility[1]
    assert r['attributes'].shape == (3,) and np.all((0 <= r['attributes']) & (r['attributes'] <= 1))
  labels = np.array([r['label'] for r in recs])
  assert set(labels.tolist()) == set(range(6))
  # Attributes: a fixed point per class plus small noise.
  attrs = np.stack([r['attributes'] for r in recs])
  centres = np.array(b.info.metadata['class_attributes'])
  assert np.abs(attrs - centres[labels]).mean() < 0.06
  assert 'tensorflow' not in sys.modules


def test_audio_dominant_imbalance(built):
  b = built('audio_dominant')
  recs = _records(b, 'train')
  assert all(r['group_audio'] == r['label'] == r['group_visual'] for r in recs)
  assert all(r['audio_informative'] for r in recs)
  frac_v = np.mean([r['visual_informative'] for r in recs])
  assert 0.65 < frac_v < 0.85
  acc = _accuracies(b)
  assert acc['audio'] >= 0.9
  assert acc['visual'] >= 0.3  # Chance is 1/6.
  assert acc['visual'] <= b.info.metadata['bounds']['visual'] + 0.05
  assert acc['audio'] - acc['visual'] >= 0.2


def test_balanced_modalities(built):
  acc = _accuracies(built('balanced'))
  assert 0.6 <= acc['audio'] <= 0.92 and 0.6 <= acc['visual'] <= 0.92
  assert abs(acc['audio'] - acc['visual']) <= 0.15
  assert acc['both'] >= max(acc['audio'], acc['visual'])


def test_complementary_bounds(built):
  b = built('complementary')
  bounds = b.info.metadata['bounds']
  acc = _accuracies(b)
  assert acc['audio'] <= bounds['audio'] + 0.08
  assert acc['visual'] <= bounds['visual'] + 0.08
  assert acc['both'] >= max(bounds['audio'], bounds['visual']) + 0.25


def test_debiased_flags(built):
  b = built('debiased')
  recs = _records(b, 'train') + _records(b, 'test')
  a = np.array([r['audio_informative'] for r in recs])
  v = np.array([r['visual_informative'] for r in recs])
  assert np.all(a ^ v)  # Exactly one informative modality per sample.
  assert 0.4 <= a.mean() <= 0.6
  acc = _accuracies(b)
  bounds = b.info.metadata['bounds']
  assert acc['audio'] <= bounds['audio'] + 0.08 and acc['visual'] <= bounds['visual'] + 0.08
  assert acc['both'] >= max(acc['audio'], acc['visual']) + 0.2


def test_data_source_read_path(built):
  b = built('debiased')
  # By name, from files alone (the variant's config name is not in the code's BUILDER_CONFIGS).
  ds = tfds.data_source(f'synthetic_av/{b.builder_config.name}', data_dir=b.data_dir_root)
  assert set(ds) == {'train', 'test'} and len(ds['train']) == 400 and len(ds['test']) == 200
  rec = ds['test'][5]
  assert set(rec) == {'id', 'audio', 'frames', 'label', 'audio_snr', 'visual_visibility',
                      'audio_informative', 'visual_informative', 'attributes', 'group_audio',
                      'group_visual'}
  # Through the builder, as avjax.data does.
  src = b.as_data_source(split='test')
  np.testing.assert_array_equal(src[5]['frames'], rec['frames'])
  assert (sav_lib.SyntheticAV is sav.Builder and
          b.info.file_format == tfds.core.FileFormat.ARRAY_RECORD)
  assert list(b.data_path.glob('*.array_record-*'))
  assert 'tensorflow' not in sys.modules


def test_sources_survive_pickling_for_grain_workers(tmp_path):
  """grain sends the data source to worker processes: named and overridden configs both pickle."""
  import pickle

  import data_builders.synthetic_av as synthetic_av
  named = synthetic_av.build('complementary', data_dir=str(tmp_path))
  sized = synthetic_av.build('complementary', data_dir=str(tmp_path), num_train=16,
                             num_validation=8, num_test=8)
  for builder in (named, sized):
    source = builder.as_data_source(split='test')
    clone = pickle.loads(pickle.dumps(source))
    assert len(clone) == len(source)
    assert clone[0]['id'] == source[0]['id']


def test_flow_is_the_true_motion_and_leaves_the_frames_unchanged():
  from avjax.media.flow import dequantize_flow
  base = sav_lib.SyntheticAVConfig(name='t', num_frames=3, image_size=32, pixel_noise=0.0)
  with_flow = sav_lib.SyntheticAVConfig(name='t', num_frames=3, image_size=32, pixel_noise=0.0,
                                        flow=True)
  a = sav_lib.make_example(base, 'train', 3)
  b = sav_lib.make_example(with_flow, 'train', 3)
  assert 'flow' not in a
  np.testing.assert_array_equal(a['frames'], b['frames'])
  flow = dequantize_flow(b['flow'], with_flow.flow_bound)
  assert b['flow'].shape == (3, 32, 32, 2) and b['flow'].dtype == np.uint8
  # Pixels that change between frames 0 and 1 are covered by a moving shape in one of them (a
  # static background does not change: pixel noise is off), and the flow holds one velocity per
  # shape (the target and at most 6 distractors).
  step = with_flow.flow_bound / 127.5  # One quantisation step.
  moved = np.abs(flow).max(-1) > step
  changed = (a['frames'][0] != a['frames'][1]).any(-1)
  assert changed.any() and (moved[0] | moved[1])[changed].all()
  assert 1 <= len(np.unique(b['flow'][0][moved[0]], axis=0)) <= 7
