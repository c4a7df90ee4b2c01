"""Per-example transforms run by grain workers: frame sampling, crops, flips, normalisation,
SpecAugment and modality dropout.

Input records follow the builders' common schema: 'audio' (F, T) float spectrogram, 'frames'
(T0, H, W, 3) uint8 or a (T0,) array of encoded images (decoded here, only the sampled ones),
'label' int. Output examples:
  audio (F, T, 1) float32 (float16 from float16 storage: the steps cast it on the device),
  visual (T, S, S, C) uint8, label int32, modality_mask (M,) float32, index int32 (position in the
  source, for per-sample bookkeeping), valid float32 (0 for padding).
With `crop_on_device` (training), visual is the whole decoded (T, H, W, C) uint8 frames and
visual_crop (T, 5) float32 holds each frame's RandomResizedCrop box and flip, drawn here and applied
in the jitted step (avjax.data.device_augment): the host skips the resample, its largest cost.
Frames leave the host as uint8 (a quarter of the bytes of float32) and are normalised on the device
at the start of every step (avjax.steps.normalize_inputs, fused by XLA into the first convolution),
so what models and methods read is float32 (x / 255 - mean) / std.
With `audio_source='flow'` (UCF101: RGB + optical flow), the audio slot carries the record's
'flow' (T0, H, W, 2) uint8 frames instead of a spectrogram: the same frame indices, crop box and
flip as the RGB frames -> audio (T, S, S, 2) uint8, scaled to flow / bound in [-1, 1] on the device.
"""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Any

import numpy as np
import simplejpeg
from PIL import Image

from avjax.data import sequences
from avjax.data.clips import (ave_frame_indices, crop_time, ks_frame_indices,
                              random_frame_indices, vox_face_indices)
from avjax.media.video import sample_segment_indices
from avjax.registry import ConfigError

_PASSTHROUGH = ("attributes", "soft_label", "audio_informative", "visual_informative",
                "utterance")  # utterance: an index into the dataset's trial lists (voxceleb).

# input.frame_sampling -> (stored frames n, wanted t, train, rng) -> indices (t,).
FRAME_SAMPLING = {
    # Centres of t equal segments (evaluation), a random frame per segment (training).
    "segment": lambda n, t, train, rng: sample_segment_indices(n, t, train=train, rng=rng),
    # Kinetics-Sounds rule of OGM-GE / valuation / BalanceBenchmark (clips.ks_frame_indices).
    "ks": lambda n, t, train, rng: ks_frame_indices(n, t, train=train, rng=rng),
    "ks_no_short": lambda n, t, train, rng: ks_frame_indices(n, t, train=train, rng=rng,
                                                             short_clip_rule=False),
    # OGM-GE's AVE frames, the same in training and evaluation.
    "ave": lambda n, t, train, rng: ave_frame_indices(n, t),
    # OGM-GE's VGGSound frames: sorted random choice (training), segment centres (evaluation).
    "random": lambda n, t, train, rng: random_frame_indices(n, t, train=train, rng=rng),
    # MMCosine's VoxCeleb faces: two frames by count (training), frame 2 (evaluation); t unused.
    "mmcosine_vox": lambda n, t, train, rng: vox_face_indices(n, train=train),
}


@dataclasses.dataclass(frozen=True)
class ExampleTransform:
  """Turns one stored record into one model example. Module-level and frozen so grain can pickle it.

  `train` selects random frame sampling, RandomResizedCrop + flip and the stochastic augmentations;
  otherwise frames are centred and resized deterministically.
  """

  train: bool
  num_frames: int = 0
  image_size: int = 0
  frame_sampling: str = "segment"  # See FRAME_SAMPLING.
  audio_crop: tuple[int, int] | None = None  # (length, axis) window of the stored spectrogram.
  eval_audio_crop: tuple[int, int] | None = None  # Evaluation's window, from the clip's start.
  random_resized_crop: bool = True
  crop_scale: tuple[float, float] = (0.08, 1.0)
  flip: bool = True
  mean: tuple[float, ...] = (0.485, 0.456, 0.406)
  std: tuple[float, ...] = (0.229, 0.224, 0.225)
  spec_augment: bool = False
  freq_masks: int = 1
  freq_mask_width: int = 8
  time_masks: int = 1
  time_mask_width: int = 8
  modality_dropout: float = 0.0
  max_audio_frames: int = 0  # Feature sequences are padded / cropped to these lengths.
  max_visual_frames: int = 0
  crop_on_device: bool = False  # Training crops / flips: draw here, resample on the device.
  audio_source: str = "audio"  # 'flow': the audio slot carries the record's optical flow frames.

  def __call__(self, record: dict, rng: np.random.Generator | None = None) -> dict:
    return self._example(record, rng)

  def batch(self, records: list[dict], rngs: list[np.random.Generator | None]
            ) -> dict[str, np.ndarray]:
    """The stacked examples of `records` (rngs: one generator, or None, per record): np.stack of
    `self(record, rng)` key by key, but the big arrays (padded feature sequences, spectrograms,
    frames) are written straight into the batch: one copy of each instead of two."""
    n = len(records)
    rows: dict[str, np.ndarray] = {}  # Batch arrays that examples write their row of.
    if sequences.has_sequences(records[0]):
      rows = sequences.batch_arrays(records[0], self._sequence_lengths(), n)
    examples = []
    for j, (record, rng) in enumerate(zip(records, rngs)):
      example = self._example(record, rng, {k: v[j] for k, v in rows.items()})
      for key in ("audio", "visual"):  # The first example sizes the batch arrays of the rest.
        if key in example and n > 1:
          value = example.pop(key)
          rows[key] = np.empty((n,) + value.shape, value.dtype)
          rows[key][j] = value
      examples.append(example)
    return {**collate(examples), **rows}

  def _sequence_lengths(self) -> dict[str, int]:
    return {"audio": self.max_audio_frames, "visual": self.max_visual_frames}

  def _example(self, record: dict, rng: np.random.Generator | None,
               rows: dict[str, np.ndarray] | None = None) -> dict:
    """One example; the keys found in `rows` (this example's rows of batch arrays) are written
    there instead of returned."""
    if self.train and rng is None:
      raise ValueError("Training transforms need a random generator (train_batches gives each "
                       "example its own).")
    if sequences.has_sequences(record):  # Precomputed feature sequences (VAVL `features` builds).
      inputs, present = sequences.sequence_inputs(record, self._sequence_lengths(), rows)
      example = {**inputs, "modality_mask": self._modality_mask(rng) * present}
    else:
      rows = rows or {}
      example = {}
      if self.audio_source == "flow":  # Flow frames in the audio slot, cropped with the RGB.
        visual, crops, audio = self._frames(record["frames"], rng, rows.get("visual"),
                                            record["flow"], rows.get("audio"))
        if "audio" not in rows:
          example["audio"] = audio
      else:
        self._spectrogram(record["audio"], rng, rows, example)
        visual, crops, _ = self._frames(record["frames"], rng, rows.get("visual"))
      if "visual" not in rows:
        example["visual"] = visual
      example["modality_mask"] = self._modality_mask(rng)
      if crops is not None:
        example["visual_crop"] = crops
    example.update({
        "label": np.int32(record.get("label", -1)),  # -1: a regression-only dataset.
        "index": np.int32(record.get("_index", -1)),
        "valid": np.float32(record.get("_valid", 1.0)),
    })
    if "_modality_mask" in record:  # From an epoch plan that trains only some modalities.
      example["modality_mask"] = example["modality_mask"] * record["_modality_mask"]
    for key in _PASSTHROUGH:
      if key in record:
        example[key] = np.asarray(record[key], np.float32)
    return example

  def _spectrogram(self, stored: Any, rng: np.random.Generator | None,
                   rows: dict[str, np.ndarray], example: dict) -> None:
    """The stored (F, T) spectrogram -> (F, T, 1) in its stored float dtype (the steps cast float16
    to float32 on the device: half the host copies): cropped in time, SpecAugmented, written
    into rows['audio'] when the batch has that row, else into example['audio']."""
    audio = np.asarray(stored)  # float16 / float32 storage; float16 stays so until the device.
    if not self.train and self.eval_audio_crop is not None:
      length, axis = self.eval_audio_crop
      audio = crop_time(audio, length, train=False, axis=axis, from_start=True)
    elif self.audio_crop is not None:
      length, axis = self.audio_crop
      audio = crop_time(audio, length, train=self.train, rng=rng, axis=axis)
    if self.train and self.spec_augment:
      audio = self._spec_augment(audio, rng)
    if "audio" in rows:
      rows["audio"][...] = audio[..., None]
    else:
      example["audio"] = audio[..., None]

  def _frames(self, frames: Any, rng: np.random.Generator | None, out: np.ndarray | None = None,
              flow: np.ndarray | None = None, flow_out: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(T0, H, W, 3) uint8 or (T0,) encoded images -> ((T, S, S, 3) uint8, None, flow), or with
    crop_on_device in training ((T, H, W, 3) uint8 whole frames, (T, 5) float32 crops, None).
    `flow`: the clip's (T0, H, W, 2) uint8 optical flow, sampled, cropped and flipped as the
    frames -> (T, S, S, 2) uint8 (else None). `out` / `flow_out`: batch rows to write into."""
    t = self.num_frames or len(frames)
    idx = FRAME_SAMPLING[self.frame_sampling](len(frames), t, self.train, rng)
    on_device = self.train and self.crop_on_device
    pixels, crops, flows = [], [], []
    for k, i in enumerate(idx):
      frame = frames[i]
      stored = decode_image(frame) if isinstance(frame, bytes) else frame  # (H, W, 3) uint8
      h, w = stored.shape[:2]
      size = self._size(h, w)
      full = (0, 0, w, h)
      if self.train and self.random_resized_crop:
        box = random_resized_crop_box(h, w, self.crop_scale, rng)
      else:
        box = full
      flip = self.train and self.flip and rng.random() < 0.5  # Drawn after the box, as always.
      if on_device:
        crops.append((box[1], box[0], box[3] - box[1], box[2] - box[0], float(flip)))
        pixels.append(stored)
      elif size != (h, w) or box != full or flip:
        image = Image.fromarray(stored)
        if size != (h, w) or box != full:
          image = crop_and_resize(image, box, size)
        if flip:  # PIL's flip is ~8x faster than copying numpy's reversed (H, W, 3) view.
          image = image.transpose(Image.FLIP_LEFT_RIGHT)
        pixels.append(np.asarray(image))
      else:
        pixels.append(stored)
      if out is not None:
        if out.shape[1:] != pixels[-1].shape:
          raise ConfigError(self._mixed_sizes_message(out.shape[1:3], pixels[-1].shape[:2]))
        out[k] = pixels.pop()
      if flow is not None:
        if flow[i].shape[:2] != (h, w):
          raise ValueError(f"flow frames {flow[i].shape[:2]} and RGB frames {(h, w)} differ in "
                           "size: rebuild the dataset.")
        flows.append(flow_frame(flow[i], box, size, flip))
        if flow_out is not None:
          flow_out[k] = flows.pop()
    crops = np.asarray(crops, np.float32) if on_device else None
    flows = None if flow is None else (np.stack(flows) if flow_out is None else flow_out)
    return (np.stack(pixels) if out is None else out), crops, flows

  def _mixed_sizes_message(self, first: tuple[int, ...], other: tuple[int, ...]) -> str:
    """Why frames of sizes `first` and `other` cannot share a batch, and the setting that fixes it."""
    if self.train and self.crop_on_device:
      fix = ("input.crop_on_device batches whole frames: set config.input.crop_on_device=False "
             "(crops on the host)")
    else:
      fix = "frames keep their stored size: set config.input.image_size"
    return (f"This batch mixes frame sizes {tuple(first)} and {tuple(other)}; {fix}, or store the "
            "dataset's frames at one size (the builders' frame_size).")

  def _size(self, height: int, width: int) -> tuple[int, int]:
    return (self.image_size, self.image_size) if self.image_size else (height, width)

  def _spec_augment(self, spec: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Zeroes `freq_masks` frequency bands and `time_masks` time spans of random width."""
    spec = spec.copy()
    for axis, count, width in ((0, self.freq_masks, self.freq_mask_width),
                               (1, self.time_masks, self.time_mask_width)):
      for _ in range(count):
        w = int(rng.integers(0, width + 1))
        start = int(rng.integers(0, max(spec.shape[axis] - w, 0) + 1))
        index = [slice(None)] * spec.ndim
        index[axis] = slice(start, start + w)
        spec[tuple(index)] = 0.0
    return spec

  def _modality_mask(self, rng: np.random.Generator | None) -> np.ndarray:
    """(audio, visual) weights; training may zero one modality (never both) with modality_dropout."""
    mask = np.ones(2, np.float32)
    if self.train and self.modality_dropout > 0:
      drop = rng.random(2) < self.modality_dropout
      if not drop.all():
        mask[drop] = 0.0
    return mask


def collate(examples: list[dict[str, Any]]) -> dict[str, np.ndarray]:
  """Stacks examples key by key into one batch (leading axis = position in the batch)."""
  return {key: np.stack([e[key] for e in examples]) for key in examples[0]}


def resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Bilinear resize of an (H, W, 3) uint8 frame to `size` = (height, width)."""
  if frame.shape[:2] == tuple(size):
    return frame
  return np.asarray(Image.fromarray(frame).resize((size[1], size[0]), Image.BILINEAR))


def flow_frame(flow: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int],
               flip: bool) -> np.ndarray:
  """One stored (H, W, 2) uint8 flow frame (u, v; 127.5 = no motion) cropped to `box`, resized to
  `size` (bilinear, each component on its own) and, if `flip`, mirrored left-right with u negated
  (255 - u): a mirrored clip moves the other way. -> (S, S, 2) uint8."""
  full = (0, 0, flow.shape[1], flow.shape[0])
  channels = []
  for c in range(2):
    image = Image.fromarray(np.ascontiguousarray(flow[..., c]))
    if box != full or size != (flow.shape[0], flow.shape[1]):
      image = crop_and_resize(image, box, size)
    if flip:
      image = image.transpose(Image.FLIP_LEFT_RIGHT)
    channels.append(np.asarray(image))
  if flip:
    channels[0] = 255 - channels[0]
  return np.stack(channels, axis=-1)


def decode_image(data: bytes) -> np.ndarray:
  """An encoded (JPEG / PNG) frame -> (H, W, 3) uint8 RGB. YCbCr / gray JPEGs (what the builders
  write) go through simplejpeg: libjpeg-turbo straight into a numpy array, the same pixels as PIL's
  decode and ~1.8x faster than PIL's Python-side header parsing, decode and copy out. Other
  formats and colour spaces (CMYK, whose conversion PIL does its own way) go through PIL."""
  if data[:2] == b"\xff\xd8" and simplejpeg.decode_jpeg_header(data)[2] in _SIMPLEJPEG_SPACES:
    return simplejpeg.decode_jpeg(data, colorspace="RGB")
  image = Image.open(io.BytesIO(data))
  return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


_SIMPLEJPEG_SPACES = ("YCbCr", "Gray", "RGB")


def random_resized_crop_box(h: int, w: int, scale: tuple[float, float], rng: np.random.Generator,
                            ratio: tuple[float, float] = (3 / 4, 4 / 3)
                            ) -> tuple[int, int, int, int]:
  """torchvision's RandomResizedCrop region as a PIL box (left, top, right, bottom): 10 tries at a
  random area / aspect, else the largest centre crop within the ratio bounds."""
  area = h * w
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(*log_ratio))
    cw = int(round(math.sqrt(target * aspect)))
    ch = int(round(math.sqrt(target / aspect)))
    if 0 < cw <= w and 0 < ch <= h:
      top = int(rng.integers(0, h - ch + 1))
      left = int(rng.integers(0, w - cw + 1))
      return (left, top, left + cw, top + ch)
  in_ratio = w / h
  if in_ratio < ratio[0]:
    cw, ch = w, int(round(w / ratio[0]))
  elif in_ratio > ratio[1]:
    ch, cw = h, int(round(h * ratio[1]))
  else:
    cw, ch = w, h
  top, left = (h - ch) // 2, (w - cw) // 2
  return (left, top, left + cw, top + ch)


def random_resized_crop(frame: np.ndarray, size: tuple[int, int], scale: tuple[float, float],
                        rng: np.random.Generator,
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
  """RandomResizedCrop of an (H, W, 3) uint8 frame to `size` = (height, width)."""
  box = random_resized_crop_box(frame.shape[0], frame.shape[1], scale, rng, ratio)
  return np.asarray(crop_and_resize(Image.fromarray(frame), box, size))


def crop_and_resize(image: Image.Image, box: tuple[int, int, int, int],
                    size: tuple[int, int]) -> Image.Image:
  """torchvision's resized_crop: crop to `box` (left, top, right, bottom), then bilinear resize to
  `size` = (height, width), so the filter sees only the box's pixels (PIL's resize(box=...) would
  blend pixels from outside it into the border when downscaling)."""
  if box != (0, 0, image.width, image.height):
    image = image.crop(box)
  return image.resize((size[1], size[0]), Image.BILINEAR)
