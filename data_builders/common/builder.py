"""The shared TFDS builder for manually downloaded audio-visual datasets.

A dataset builder subclasses `ClipBuilder` and writes `_plan` (find the clips in the manual folder,
read labels and split files, assign splits, report what is missing) and `_label_features`. This
class does the rest: media features from the config, decoding in parallel workers, report-and-skip
with an end-of-build summary (printed, and stored as metadata['build_report']), the strict mode, and
ArrayRecord output (uncompressed: common/storage.py). Builds are atomic: TFDS writes into `<version dir>.incomplete*` and renames it
only after every split and dataset_info.json are written; an exception removes it.

With a Beam runner or Beam options in the DownloadConfig (`tfds build --beam_pipeline_options=...`),
clips are decoded by the Beam pipeline instead of local workers (see common/beam.py); the records,
the report and the metadata are the same.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from data_builders.common.config import ClipConfig, env_strict, env_workers, make_config
from data_builders.common.messages import BuildMessages
from data_builders.common.parallel import DEFAULT_TARGET, ClipRunner
from data_builders.common.report import BuildReport
from data_builders.common.storage import uncompressed_array_records

SPLIT_ORDER = ('train', 'validation', 'test')


@dataclasses.dataclass
class Clip:
  """One planned example: its key (= 'id'), split, files by role, and label features."""

  key: str
  split: str
  files: dict[str, str | None]
  labels: dict[str, Any]


@dataclasses.dataclass
class Plan:
  clips: list[Clip]
  metadata: dict[str, Any] = dataclasses.field(default_factory=dict)


def media_features(cfg: ClipConfig) -> dict[str, tfds.features.FeatureConnector]:
  """The record features the config's front end produces (see ClipConfig)."""
  out: dict[str, tfds.features.FeatureConnector] = {}
  scalar = tfds.features.Tensor(shape=(), dtype=np.float32)
  shape = cfg.audio_shape()
  if shape:
    out['audio'] = tfds.features.Tensor(shape=shape, dtype=np.dtype(cfg.audio_dtype),
                                        encoding=tfds.features.Encoding.BYTES)
    out['audio_seconds'] = scalar
    if getattr(cfg, 'missing_audio', '') == 'silence':  # Containers without a track kept (ssw60).
      out['audio_present'] = tfds.features.Tensor(shape=(), dtype=np.int32)
  if cfg.frame_mode:
    h, w = cfg.frame_size
    out['frames'] = tfds.features.Sequence(
        tfds.features.Image(shape=(h, w, 3), encoding_format='jpeg'),
        length=cfg.num_stored_frames())
    out['video_seconds'] = scalar
  for role, dim in cfg.media_spec()['features'].items():
    out[role] = tfds.features.Tensor(shape=(None, dim), dtype=np.dtype(cfg.features_dtype),
                                     encoding=tfds.features.Encoding.BYTES)
  return out


class ClipBuilder(BuildMessages, tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the manual-download audio-visual builders (not registered itself).

  num_workers: decoding processes (None: $AVJAX_BUILD_WORKERS, else the usable CPUs; 0 decodes in
    this process). strict: fail at the first problem (None: $AVJAX_BUILD_STRICT). Neither changes
    the records, so neither is part of the config.
  PROCESS_TARGET: 'module:function' that turns one clip's files into its media features (default
    media.safe_process); a builder with extra modalities (ucf101's optical flow) names its own.
  """

  PROCESS_TARGET = DEFAULT_TARGET

  def __init__(self, *, num_workers: int | None = None, strict: bool | None = None,
               file_format: str | tfds.core.FileFormat | None = None, **kwargs: Any):
    super().__init__(file_format=file_format, **kwargs)
    self.num_workers = env_workers(num_workers)
    self.strict = env_strict(strict)
    self.report: BuildReport | None = None
    self._runner: ClipRunner | None = None
    self._beam = False
    # ArrayRecord (random access through tfds.data_source) unless asked otherwise or already built.
    if file_format is None and not self.is_prepared():
      self.info.set_file_format(tfds.core.FileFormat.ARRAY_RECORD, override=True)

  # --- Subclass hooks. ----------------------------------------------------------------------------

  def _label_features(self) -> dict[str, tfds.features.FeatureConnector]:
    raise NotImplementedError

  def _dataset_metadata(self) -> dict[str, Any]:
    """Static metadata (class orders, code tables) besides the config."""
    return {}

  def _plan(self, manual_dir: Path, report: BuildReport) -> Plan:
    raise NotImplementedError

  # --- TFDS. --------------------------------------------------------------------------------------

  def _make_info(self, description: str, homepage: str = '',
                 citation: str = '') -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    cfg.validate()
    features = {'id': tfds.features.Text(), **self._label_features(), **media_features(cfg)}
    metadata = tfds.core.MetadataDict(config=cfg.knobs(), **self._dataset_metadata())
    return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.FeaturesDict(features), metadata=metadata,
        description=description + '\n' + (cfg.description or ''), homepage=homepage or None,
        citation=citation or None)

  def _download_and_prepare(self, dl_manager: Any, download_config: Any) -> None:
    cfg = self.builder_config
    name = f'{self.name}/{cfg.name}'
    self._beam = (getattr(download_config, 'beam_runner', None) is not None or
                  getattr(download_config, 'beam_options', None) is not None)
    if self._beam:
      from data_builders.common import beam as beam_lib  # pylint: disable=g-import-not-at-top
      super()._download_and_prepare(dl_manager=dl_manager, download_config=download_config)
      beam_lib.collect(self)
      self.info.metadata['build_report'] = self.report.to_metadata()
      (logging.warning if self.report.problems else logging.info)('%s', self._summary())
      return
    with ClipRunner(cfg.media_spec(), self.num_workers, name,
                    target=self.PROCESS_TARGET) as runner, uncompressed_array_records():
      self._runner = runner
      try:
        super()._download_and_prepare(dl_manager=dl_manager, download_config=download_config)
      finally:
        self._runner = None
    # Runs before TFDS writes dataset_info.json / metadata.json into the incomplete directory.
    self.info.metadata['build_report'] = self.report.to_metadata()
    rate = runner.clips / runner.seconds if runner.seconds else 0.0
    logging.info('%s: decoded %d clips in %.1f s (%.1f clips/s, %d worker(s)).', name,
                 runner.clips, runner.seconds, rate, self.num_workers)
    (logging.warning if self.report.problems else logging.info)('%s', self._summary())

  def _summary(self) -> str:
    """The build report's summary, with the split scheme the plan used when it names one."""
    scheme = self.info.metadata.get('split_scheme')
    return self.report.summary() + (f'\n  split scheme: {scheme}' if scheme else '')

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
    manual = Path(dl_manager.manual_dir)
    if not manual.is_dir():
      raise FileNotFoundError(f'{self.name}: manual_dir {manual} is not a folder.\n'
                              f'{self.MANUAL_DOWNLOAD_INSTRUCTIONS}')
    self.report = BuildReport(f'{self.name}/{self.builder_config.name}', strict=self.strict)
    plan = self._plan(manual, self.report)
    self.info.metadata.update(plan.metadata)
    by_split: dict[str, list[Clip]] = collections.defaultdict(list)
    for clip in plan.clips:
      by_split[clip.split].append(clip)
    if not by_split:
      raise RuntimeError(f'{self.name}: found no usable clip under {manual}: config '
                         f'{self.builder_config.name!r} reads, per clip, '
                         f'{self.builder_config.reads()}.\n'
                         f'{self.report.summary()}\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}')
    names = [s for s in SPLIT_ORDER if s in by_split] + sorted(set(by_split) - set(SPLIT_ORDER))
    if self._beam:
      from data_builders.common import beam as beam_lib  # pylint: disable=g-import-not-at-top
      return {s: beam_lib.examples(self, s, by_split[s]) for s in names}
    return {s: self._generate_examples(s, by_split[s]) for s in names}

  def _generate_examples(self, split: str, clips: list[Clip]) -> Iterator[tuple[str, dict]]:
    by_key = {c.key: c for c in clips}
    made = 0
    jobs = [(c.key, c.files) for c in clips]
    desc = f'{self.name}/{self.builder_config.name} {split}'
    for key, result in self._runner.run(jobs, desc=desc):
      if result[0] == 'ok':
        made += 1
        yield key, {'id': key, **by_key[key].labels, **result[1]}
      else:
        _, kind, message, files = result
        self.report.add(key, kind, message, files)
    self.report.examples[split] = made
    if not made:
      raise RuntimeError(f'{self.name}: no example of split {split!r} could be built.\n'
                         f'{self.report.summary()}')


def build(builder_cls: type[ClipBuilder], config_name: str, *, data_dir: str | None = None,
          manual_dir: str | None = None, num_workers: int | None = None,
          strict: bool | None = None, **overrides: Any) -> ClipBuilder:
  """Builds `builder_cls/<config>` (with `overrides` as a distinct variant) unless already built."""
  cfg = make_config(builder_cls, config_name, **overrides)
  # A named config goes by name: a builder holding the registered config object would not survive
  # pickling into grain worker processes (TFDS refuses a custom config with a taken name).
  builder = builder_cls(config=cfg if overrides else cfg.name, data_dir=data_dir,
                        num_workers=num_workers, strict=strict)
  if not builder.is_prepared():
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir, try_download_gcs=False))
  return builder
