"""avjax.data.clips: the references' frame sampling rules and the spectrogram crop."""

from __future__ import annotations

import random

import numpy as np
import pytest

from avjax.data import clips


def reference_ks(file_num: int, train: bool, pick_num: int = 3, short_rule: bool = True) -> list:
  """The valuation repo's / BalanceBenchmark's KS loop, verbatim in logic, with Python's random:
  1-based frame numbers."""
  seg = int(file_num / pick_num)
  t = [0] * pick_num
  for i in range(pick_num):
    if train:
      t[i] = random.randint(i * seg + 1, i * seg + seg) if (file_num > 6 or not short_rule) else 1
      if t[i] >= 10:
        t[i] = 9
    else:
      t[i] = i * seg + max(int(seg / 2), 1) if (file_num > 6 or not short_rule) else 1
  return t


@pytest.mark.parametrize('n', [1, 3, 6, 7, 9, 10, 12, 30])
def test_ks_frame_indices_follow_the_reference(n):
  assert list(clips.ks_frame_indices(n, train=False) + 1) == reference_ks(n, train=False)
  rng = np.random.default_rng(n)
  seen = {tuple(clips.ks_frame_indices(n, train=True, rng=rng) + 1) for _ in range(300)}
  random.seed(n)
  want = {tuple(reference_ks(n, train=True)) for _ in range(300)}
  assert seen == want  # The same support (every combination is hit at these sizes).


def test_ks_frame_indices_details():
  assert clips.ks_frame_indices(10, train=False).tolist() == [0, 3, 6]
  assert clips.ks_frame_indices(6, train=False, short_clip_rule=False).tolist() == [0, 2, 4]
  train = clips.ks_frame_indices(6, train=True, rng=np.random.default_rng(0),
                                 short_clip_rule=False)
  assert [t // 2 for t in train.tolist()] == [0, 1, 2]  # One per segment of 2 (UCF101: 6 frames).
  assert clips.ks_frame_indices(2, train=False, short_clip_rule=False).tolist() == [0, 1, 1]
  t = clips.ks_frame_indices(14, train=True, rng=np.random.default_rng(1))
  assert t.max() <= 8  # 1-based frames >= 10 become 9 in training (reference quirk).
  with pytest.raises(ValueError, match='Generator'):
    clips.ks_frame_indices(10, train=True)


def test_ave_and_random_frame_indices():
  assert clips.ave_frame_indices(10).tolist() == [0, 3, 6]
  assert clips.ave_frame_indices(2).tolist() == [0, 0, 0]
  rng = np.random.default_rng(0)
  for _ in range(50):
    t = clips.random_frame_indices(10, 3, train=True, rng=rng)
    assert len(set(t.tolist())) == 3 and list(t) == sorted(t) and t.max() < 10
  assert len(clips.random_frame_indices(2, 3, train=True, rng=rng)) == 3  # With replacement.
  assert clips.random_frame_indices(10, 3, train=False).tolist() == [1, 5, 8]


def test_crop_time():
  x = np.arange(2 * 20, dtype=np.float32).reshape(2, 20)
  rng = np.random.default_rng(0)
  starts = set()
  for _ in range(200):
    y = clips.crop_time(x, 5, train=True, rng=rng)
    assert y.shape == (2, 5)
    start = int(y[0, 0])
    starts.add(start)
    np.testing.assert_array_equal(y, x[:, start:start + 5])
  assert starts == set(range(16))  # Every start 0 .. T - length.
  np.testing.assert_array_equal(clips.crop_time(x, 5, train=False), x[:, 7:12])
  np.testing.assert_array_equal(clips.crop_time(x, 6, train=False, axis=0),
                                np.concatenate([x, x, x])[:6])  # Tiled when too short.
  with pytest.raises(ValueError, match='Generator'):
    clips.crop_time(x, 5, train=True)


def test_audio_crop_lengths():
  stft = {'sample_rate': 16000, 'hop_length': 128, 'audio_frontend': 'ogm_ge_log_stft'}
  assert clips.audio_crop(5.0, stft) == (626, 1)  # VGGSound: (129, 626) as the reference.
  fbank = {'sample_rate': 16000, 'hop_length': 160, 'win_length': 400,
           'audio_frontend': 'kaldi_fbank'}
  assert clips.audio_crop(5.0, fbank) == (498, 0)
  psd = {'sample_rate': 16000, 'hop_length': 0, 'n_fft': 512, 'noverlap': 353,
         'audio_frontend': 'mmcosine_log_psd'}
  assert clips.audio_crop(3.0, psd) == (299, 1)  # MMCosine CREMA-D (257, 299).
  with pytest.raises(ValueError, match='no audio crop'):
    clips.audio_crop(1.0, {'sample_rate': 1, 'hop_length': 1, 'audio_frontend': ''})


def test_vox_face_indices_follow_mmcosine_table():
  from avjax.data.clips import vox_face_indices  # pylint: disable=import-outside-toplevel
  table = {9: [2, 6], 8: [2, 6], 7: [2, 5], 6: [2, 4], 5: [1, 3], 4: [0, 2], 3: [0, 2], 2: [0, 1]}
  for n, expected in table.items():
    assert vox_face_indices(n, train=True).tolist() == expected, n
  assert vox_face_indices(8, train=False).tolist() == [2]
  assert vox_face_indices(1, train=False).tolist() == [0]  # Clipped: the reference reads a gap.


def test_crop_from_start_in_evaluation():
  from avjax.data.clips import crop_time  # pylint: disable=import-outside-toplevel
  x = np.arange(10)
  assert crop_time(x, 4, train=False, axis=0, from_start=True).tolist() == [0, 1, 2, 3]
  assert crop_time(x, 4, train=False, axis=0).tolist() == [3, 4, 5, 6]
  assert crop_time(np.arange(3), 5, train=False, axis=0, from_start=True).tolist() == [0, 1, 2, 0, 1]
