"""Variable-length feature sequences -> fixed-length arrays with validity masks (static shapes).

The `features` configs of the crema_d and msp_improv builders store one precomputed feature sequence
per utterance and modality: 'audio_features' (T_a, 1024) (wav2vec2-large-robust, ~50 Hz) and
'visual_features' (T_v, 1408) (EfficientNet-B2 per face frame, ~30 fps), float32, T varying per
utterance (T = 0 for an empty file). VAVL / AuxFormer read them as model inputs

  'audio' (max_audio_frames, 1024), 'audio_mask' (max_audio_frames,)   1 = real frame, 0 = padding
  'visual' (max_visual_frames, 1408), 'visual_mask' (max_visual_frames,)

Longer sequences keep their first frames (VAVL reads at most 12 s of audio: 600 frames at 50 Hz);
shorter ones are zero-padded at the end, as the references' padding collate does. An utterance whose
sequence is empty gets an all-zero mask and a 0 in its modality mask, so methods treat the modality
as missing for that example.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

# Record key of each modality's stored sequence -> the model input key it becomes.
FEATURE_KEYS = {"audio": "audio_features", "visual": "visual_features"}


def _frames(sequence: np.ndarray) -> np.ndarray:
  seq = np.asarray(sequence)  # float16 / float32 storage (others are cast while copying).
  if seq.ndim == 1:
    seq = seq[None]
  if seq.ndim != 2:
    raise ValueError(f"A feature sequence must be (T, D), got shape {seq.shape}.")
  return seq


def _fill(seq: np.ndarray, values: np.ndarray, mask: np.ndarray) -> None:
  """Writes the first len(mask) frames of `seq` into zero-initialised `values` / `mask`."""
  kept = min(seq.shape[0], len(mask))
  values[:kept] = seq[:kept]
  mask[:kept] = 1.0


def batch_dtype(seq: np.ndarray) -> np.dtype:
  """float16 storage stays float16 until the device (the steps cast it: half the host copies and
  transfers); everything else becomes float32."""
  return np.dtype(np.float16) if seq.dtype == np.float16 else np.dtype(np.float32)


def pad_or_crop(sequence: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
  """(T, D) -> ((length, D) in `batch_dtype`, (length,) float32 mask): the first `length` frames,
  zero-padded.

  A (D,) vector is read as one frame (T = 1), as the builders do.
  """
  if length < 1:
    raise ValueError(f"length must be >= 1, got {length}.")
  seq = _frames(sequence)
  out = np.zeros((length, seq.shape[1]), batch_dtype(seq))
  mask = np.zeros((length,), np.float32)
  _fill(seq, out, mask)
  return out, mask


def _check_length(key: str, modality: str, lengths: Mapping[str, int]) -> int:
  if lengths.get(modality, 0) < 1:
    raise ValueError(f"The record has {key!r} but no frame count is configured for "
                     f"{modality!r}: set config.input.max_{modality}_frames (e.g. 600 for 12 s "
                     "of audio at 50 Hz, 360 for 12 s of video at 30 fps).")
  return lengths[modality]


def sequence_inputs(record: Mapping[str, np.ndarray], lengths: Mapping[str, int],
                    rows: Mapping[str, np.ndarray] | None = None
                    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """The model inputs of a `features` record and its (2,) modality presence (audio, visual).

  Args:
    record: a stored example with 'audio_features' (T_a, Da) and / or 'visual_features' (T_v, Dv).
    lengths: {'audio': max_audio_frames, 'visual': max_visual_frames}.
    rows: optional zero-initialised rows of batch arrays (`batch_arrays(...)[key][j]`) to pad
      into; the modalities found there are written in place and left out of the inputs.
  Returns:
    ({'audio', 'audio_mask', 'visual', 'visual_mask'} for the modalities the record has,
     (2,) float32: 1 where the modality has at least one frame, else 0).
  """
  inputs: dict[str, np.ndarray] = {}
  present = np.zeros((2,), np.float32)
  for i, (modality, key) in enumerate(FEATURE_KEYS.items()):
    if key not in record:
      continue
    length = _check_length(key, modality, lengths)
    if rows is not None and modality in rows:
      mask = rows[f"{modality}_mask"]
      _fill(_frames(record[key]), rows[modality], mask)
    else:
      inputs[modality], mask = pad_or_crop(record[key], length)
      inputs[f"{modality}_mask"] = mask
    present[i] = float(mask[0] > 0)
  return inputs, present


def batch_arrays(record: Mapping[str, np.ndarray], lengths: Mapping[str, int], size: int
                 ) -> dict[str, np.ndarray]:
  """Zero (size, length, D) arrays (`batch_dtype`) and (size, length) masks for the sequences `record`
  has: a batch's padded inputs, written row by row by `sequence_inputs(..., rows=)` (padding
  straight into the batch saves a 4.5 MB copy per VAVL example)."""
  out = {}
  for modality, key in FEATURE_KEYS.items():
    if key in record:
      length = _check_length(key, modality, lengths)
      seq = _frames(record[key])
      out[modality] = np.zeros((size, length, seq.shape[1]), batch_dtype(seq))
      out[f"{modality}_mask"] = np.zeros((size, length), np.float32)
  return out


def has_sequences(record: Mapping[str, np.ndarray]) -> bool:
  """Whether a record comes from a `features` builder config (precomputed sequences)."""
  return any(key in record for key in FEATURE_KEYS.values())
