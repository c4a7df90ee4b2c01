"""grain input pipelines: per-epoch plans, per-host shards, batches of numpy arrays.

Resumption is exact without saving iterator internals: an epoch's order and every example's
augmentation are pure functions of (seed, epoch, position), so a run resumed at (epoch, step) rebuilds
the epoch and skips `step` batches lazily (MapDataset slicing reads nothing it skips).
A grain element is a whole host batch (read, transformed and stacked by `_LocalBatches`), so
grain's per-element costs are paid once per batch.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterator

import grain
import jax
import ml_collections
import numpy as np

from avjax.data.clips import audio_crop
from avjax.data.transforms import ExampleTransform
from avjax.registry import ConfigError


@dataclasses.dataclass(frozen=True)
class EpochPlan:
  """Which source records an epoch visits, in order, and optional per-visit modality masks.

  Attributes:
    indices: (N,) int source indices.
    modality_masks: optional (N, M) float32; a re-sampled copy may train only some modalities.
  """

  indices: np.ndarray
  modality_masks: np.ndarray | None = None


def shuffled_plan(num_examples: int, seed: int, epoch: int) -> EpochPlan:
  """A fresh permutation of the source per epoch, deterministic in (seed, epoch)."""
  return EpochPlan(np.random.default_rng([seed, epoch]).permutation(num_examples))


class Subset:
  """A read-only view of `source` at `indices` (e.g. the examples a valuation pass visits)."""

  def __init__(self, source: Any, indices: np.ndarray):
    self._source = source
    self._indices = np.asarray(indices, np.int64)

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, i: int) -> dict:
    return self._source[int(self._indices[i])]


class PlanStore:
  """Epoch plans saved beside the checkpoints (`<workdir>/plans/epoch_<e>.npz`), so a resumed
  epoch replays the plan it started with even when the plan depended on the model (valuation
  re-sampling). The newest `keep` plans are kept."""

  def __init__(self, directory: str, *, enabled: bool = True, keep: int = 2):
    self.directory = directory
    self.enabled = enabled
    self.keep = keep

  def _path(self, epoch: int) -> str:
    return os.path.join(self.directory, f"epoch_{epoch:05d}.npz")

  def load(self, epoch: int) -> EpochPlan | None:
    path = self._path(epoch)
    if not os.path.exists(path):
      return None
    with np.load(path) as f:
      masks = f["modality_masks"] if "modality_masks" in f else None
      return EpochPlan(indices=f["indices"], modality_masks=masks)

  def save(self, epoch: int, plan: EpochPlan) -> None:
    if not self.enabled:
      return
    os.makedirs(self.directory, exist_ok=True)
    arrays = {"indices": np.asarray(plan.indices)}
    if plan.modality_masks is not None:
      arrays["modality_masks"] = np.asarray(plan.modality_masks)
    tmp = self._path(epoch) + ".tmp.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, self._path(epoch))  # Atomic: a plan file is whole or absent.
    saved = sorted(n for n in os.listdir(self.directory)
                   if n.startswith("epoch_") and n.endswith(".npz") and ".tmp" not in n)
    for name in saved[:-self.keep]:
      os.remove(os.path.join(self.directory, name))


class _PlannedSource:
  """Reads source[plan[i]], tagging each record with its source index and plan mask."""

  def __init__(self, source: Any, plan: EpochPlan):
    self._source = source
    self._plan = plan

  def __len__(self) -> int:
    return len(self._plan.indices)

  def __getitem__(self, i: int) -> dict:
    index = int(self._plan.indices[i])
    record = dict(self._source[index])
    record["_index"] = index
    if self._plan.modality_masks is not None:
      record["_modality_mask"] = self._plan.modality_masks[i]
    return record


class _PaddedSource:
  """Sequential reads padded to `length` by repeating records marked `_valid` = 0."""

  def __init__(self, source: Any, length: int):
    self._source = source
    self._length = length

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, i: int) -> dict:
    n = len(self._source)
    record = dict(self._source[i % n])
    record["_index"] = i % n
    record["_valid"] = np.float32(i < n)
    return record


def make_transform(icfg: ml_collections.ConfigDict, train: bool,
                   metadata: Any = None) -> ExampleTransform:
  """The configured ExampleTransform. `metadata` (the dataset's info.metadata) supplies the stored
  spectrogram's front-end parameters when `input.audio_crop_seconds` is set."""
  crops = {}
  for key in ("audio_crop_seconds", "eval_audio_crop_seconds"):
    if not icfg.get(key):
      continue
    stored = (metadata or {}).get("config") if hasattr(metadata or {}, "get") else None
    if not stored:
      raise ConfigError(f"config.input.{key} needs a dataset whose metadata records its "
                        "audio front end (the avjax builders' 'config' metadata); this one has "
                        f"none. Set config.input.{key} = 0.")
    crops[key] = audio_crop(icfg[key], stored)
  crop = crops.get("audio_crop_seconds")
  return ExampleTransform(
      train=train, num_frames=icfg.num_frames, image_size=icfg.image_size,
      frame_sampling=icfg.frame_sampling, audio_crop=crop,
      eval_audio_crop=crops.get("eval_audio_crop_seconds"),
      random_resized_crop=icfg.random_resized_crop, crop_scale=tuple(icfg.crop_scale),
      flip=icfg.flip, mean=tuple(icfg.mean), std=tuple(icfg.std), spec_augment=icfg.spec_augment,
      freq_masks=icfg.freq_masks, freq_mask_width=icfg.freq_mask_width,
      time_masks=icfg.time_masks, time_mask_width=icfg.time_mask_width,
      modality_dropout=icfg.modality_dropout, max_audio_frames=icfg.max_audio_frames,
      max_visual_frames=icfg.max_visual_frames,
      crop_on_device=crops_on_device(icfg),
      audio_source=icfg.get("audio_source", "audio"))


def crops_on_device(icfg: ml_collections.ConfigDict, backend: str | None = None) -> bool:
  """`input.crop_on_device`, with None (the default) resolved for `backend` (default: JAX's):
  on for GPU / TPU, whose step resamples a batch's frames in microseconds while PIL's resample
  is most of the host's work per example; off on a CPU backend (the dense resample costs more than
  PIL's there) and for optical flow in the audio slot (cropped on the host with its frames)."""
  value = icfg.get("crop_on_device")
  if value is not None:
    return bool(value)
  if icfg.get("audio_source", "audio") == "flow":
    return False
  return (backend or jax.default_backend()) != "cpu"


def steps_per_epoch(plan_length: int, global_batch_size: int) -> int:
  """Full global batches in an epoch (the remainder is dropped, as the references' loaders)."""
  return plan_length // global_batch_size


def example_rng(key: np.ndarray, position: int) -> np.random.Generator:
  """The generator of the example at `position` of an epoch: Philox with the epoch's key and the
  position as counter (the stream grain's `random_map` gives the element at `position`)."""
  return np.random.Generator(np.random.Philox(key=key, counter=[0, 0, 0, position]))


def _philox_key(seed: int) -> np.ndarray:
  return np.random.Philox(seed).state["state"]["key"]


class _LocalBatches:
  """Batch b of this host: the examples at epoch positions host + hosts * (b * size + j),
  read, transformed (training: with `example_rng(key, position)`) and stacked in one call.

  A whole batch is one grain element: grain's per-element costs (its thread pool, map and
  batch stages) are paid once per batch instead of once per example (on 2 cores they cost about
  as much as reading and augmenting an OGM-GE example). Positions and generators are those of
  an example-level pipeline over the whole epoch, so the batches do not depend on the number
  of hosts, workers or threads, and a resumed epoch (batches from `start_step`) is identical.
  """

  def __init__(self, source: Any, transform: ExampleTransform, *, size: int, host: int,
               hosts: int, key: np.ndarray | None = None, ids: bool = False):
    self._source = source
    self._transform = transform
    self._size = size
    self._host = host
    self._hosts = hosts
    self._key = key
    self._ids = ids

  def __call__(self, b: int) -> dict[str, np.ndarray]:
    positions = [self._host + self._hosts * (b * self._size + j) for j in range(self._size)]
    records = [self._source[p] for p in positions]
    rngs = [None if self._key is None else example_rng(self._key, p) for p in positions]
    batch = self._transform.batch(records, rngs)
    if self._ids and all("id" in r for r in records):
      batch["id"] = np.array([example_id(r["id"]) for r in records], np.str_)
    return batch


def example_id(stored: Any) -> str:
  """A record's 'id' feature (TFDS Text: bytes, or str) as text."""
  stored = stored.item() if isinstance(stored, np.ndarray) else stored
  return stored.decode("utf-8", "replace") if isinstance(stored, bytes) else str(stored)


def _read_options(num_workers: int, cores: int | None = None) -> grain.ReadOptions:
  """Batches made in parallel per process: the usable cores but one (kept for the training loop's
  thread: step dispatch, or the step itself on a CPU backend) shared among the `num_workers`
  worker processes (or this one), at least 1 and at most 8 threads each (grain's default of 16
  threads and 500 buffered elements is sized for examples, not batches), and two batches buffered
  beyond those in flight (a batch of feature sequences can be ~100 MB). Reading frames is mostly
  Python under the GIL: on a 2-core host a second reader thread added ~15% OGM-GE examples/s for
  ~60% more CPU (docs/benchmarks.md), while the step it competes with is far slower."""
  if cores is None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  threads = max(1, min(8, ((cores or 1) - 1) // max(1, num_workers)))
  return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=threads + 2)


def _finish(ds: grain.MapDataset, num_workers: int) -> Iterator[dict[str, np.ndarray]]:
  it = ds.to_iter_dataset(_read_options(num_workers))
  if num_workers:
    it = it.mp_prefetch(grain.multiprocessing.MultiprocessingOptions(num_workers=num_workers))
  return iter(it)


def train_batches(source: Any, plan: EpochPlan, transform: ExampleTransform, *, seed: int,
                  epoch: int, global_batch_size: int, start_step: int = 0,
                  num_workers: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """This host's batches of one training epoch, from batch `start_step` on.

  Every host walks the same plan and takes every `process_count`-th example, so the global batch
  is the union of the hosts' local batches.
  """
  hosts, host = jax.process_count(), jax.process_index()
  local = global_batch_size // hosts
  num_batches = len(plan.indices) // hosts // local  # The remainder is dropped.
  # Randomness is drawn per position in the epoch, before host sharding: augmentation does not
  # depend on how many hosts share the epoch.
  read = _LocalBatches(_PlannedSource(source, plan), transform, size=local, host=host,
                       hosts=hosts, key=_philox_key(_epoch_seed(seed, epoch)))
  ds = grain.MapDataset.range(num_batches).map(read)
  return _finish(ds[start_step:], num_workers)


def eval_batches(source: Any, transform: ExampleTransform, *, global_batch_size: int,
                 num_workers: int = 0, ids: bool = False) -> Iterator[dict[str, np.ndarray]]:
  """This host's batches of a whole split, padded to full global batches (`valid` marks real ones).

  `ids`: batches also hold 'id' (B,) str, each record's example id (the builders' 'id' feature: the
  clip name) when the dataset has one; host-side bookkeeping, never an input of a jitted step.
  """
  hosts, host = jax.process_count(), jax.process_index()
  num_batches = -(-len(source) // global_batch_size)
  read = _LocalBatches(_PaddedSource(source, num_batches * global_batch_size), transform,
                       size=global_batch_size // hosts, host=host, hosts=hosts, ids=ids)
  return _finish(grain.MapDataset.range(num_batches).map(read), num_workers)


def _epoch_seed(seed: int, epoch: int) -> int:
  return int(np.random.default_rng([seed, epoch, 1]).integers(2**31 - 1))
