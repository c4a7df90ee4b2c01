"""Padding / cropping of precomputed feature sequences to static shapes with masks."""

import numpy as np
import pytest

from avjax.data import sequences


def test_pad_shorter_sequence():
  seq = np.arange(6, dtype=np.float32).reshape(3, 2)
  out, mask = sequences.pad_or_crop(seq, 5)
  assert out.shape == (5, 2) and out.dtype == np.float32
  np.testing.assert_array_equal(out[:3], seq)
  np.testing.assert_array_equal(out[3:], 0.0)
  np.testing.assert_array_equal(mask, [1, 1, 1, 0, 0])


def test_crop_longer_sequence_keeps_the_first_frames():
  seq = np.arange(20, dtype=np.float32).reshape(10, 2)
  out, mask = sequences.pad_or_crop(seq, 4)
  np.testing.assert_array_equal(out, seq[:4])
  np.testing.assert_array_equal(mask, 1.0)


def test_vector_is_one_frame_and_empty_sequence_is_all_padding():
  out, mask = sequences.pad_or_crop(np.ones(3), 2)
  np.testing.assert_array_equal(out, [[1, 1, 1], [0, 0, 0]])
  np.testing.assert_array_equal(mask, [1, 0])
  out, mask = sequences.pad_or_crop(np.zeros((0, 3)), 2)
  np.testing.assert_array_equal(mask, 0.0)
  with pytest.raises(ValueError, match="length"):
    sequences.pad_or_crop(np.ones((2, 3)), 0)


def test_sequence_inputs_of_a_features_record():
  record = {"audio_features": np.ones((7, 4), np.float32),
            "visual_features": np.zeros((0, 3), np.float32), "label": 1}
  assert sequences.has_sequences(record) and not sequences.has_sequences({"audio": 0})
  inputs, present = sequences.sequence_inputs(record, {"audio": 5, "visual": 2})
  assert inputs["audio"].shape == (5, 4) and inputs["visual"].shape == (2, 3)
  np.testing.assert_array_equal(inputs["audio_mask"], 1.0)
  np.testing.assert_array_equal(inputs["visual_mask"], 0.0)
  np.testing.assert_array_equal(present, [1.0, 0.0])  # The empty visual file: modality missing.
  with pytest.raises(ValueError, match="max_visual_frames"):
    sequences.sequence_inputs(record, {"audio": 5})


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_batches_pad_in_place_exactly_as_example_by_example(dtype):
  from avjax.data.transforms import ExampleTransform, collate
  rng = np.random.default_rng(0)
  records = [{"audio_features": rng.normal(size=(n, 4)).astype(dtype),
              "visual_features": rng.normal(size=(m, 3)).astype(dtype),
              "label": i, "attributes": np.ones(3, np.float32)}
             for i, (n, m) in enumerate([(7, 2), (3, 0), (12, 9)])]
  t = ExampleTransform(train=True, max_audio_frames=5, max_visual_frames=4, modality_dropout=0.4)
  rngs = lambda: [np.random.default_rng(s) for s in range(3)]
  want = collate([t(r, g) for r, g in zip(records, rngs())])
  got = t.batch(records, rngs())
  assert got.keys() == want.keys()
  for key in want:
    assert got[key].dtype == want[key].dtype, key
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  assert got["audio"].dtype == dtype and got["visual_mask"][1].sum() == 0
