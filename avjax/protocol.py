"""The evaluation protocol: which split selects the checkpoint, and which split reports the result.

A run selects its checkpoint on a validation split and evaluates the test split once, at the
selected checkpoint:

  config.dataset.val_split='validation'  the dataset's own validation split;
  config.dataset.val_split='heldout'     a seeded, class-stratified fold of the training split
                                         (`validation_fold`), disjoint by speaker / video where the
                                         records carry such an id (dataset.heldout_group); the run
                                         trains on the rest of the training split.

Reproducing a reference that selected its checkpoint on the test split takes an explicit
`config.train.select_on='test'`: the per-epoch evaluations then run on the test split and are
written as `split='test'` rows, every evaluation logs a warning, and the final row carries
`selected_on='test'` (the leaderboard marks such entries). A val_split equal to the test split under
the default select_on='validation' is a ConfigError.

Two held-out folds exist and they nest: this one (validation, fixed by dataset.heldout_seed so every
method and seed trains on the same examples) is cut first; a method's own held-out fold
(`EpochContext.heldout()`, avjax.methods.base.heldout_fold, fixed by config.seed) is a fold of the
examples the run trains on, so the two never overlap.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import ml_collections
import numpy as np

from avjax.data.pipeline import Subset
from avjax.registry import ConfigError

log = logging.getLogger(__name__)

HELDOUT = "heldout"  # config.dataset.val_split value: a held-out fold of the training split.
SELECT_ON = ("validation", "test")
# Record features that name an example's speaker / source video (dataset.heldout_group='auto').
GROUP_FEATURES = ("actor", "speaker", "speaker_id", "youtube_id", "video_id")


def validate(c: ml_collections.ConfigDict) -> None:
  """The protocol settings (before any data is read)."""
  d, select_on = c.dataset, c.train.select_on
  if select_on not in SELECT_ON:
    raise ConfigError(f"config.train.select_on={select_on!r} is not one of {SELECT_ON}.")
  if not 0 < d.heldout_fraction < 1:
    raise ConfigError(f"config.dataset.heldout_fraction={d.heldout_fraction!r} must be in (0, 1).")
  if d.val_split == d.train_split:
    raise ConfigError(f"config.dataset.val_split={d.val_split!r} is the training split; use "
                      f"val_split={HELDOUT!r} for a held-out fold of it.")
  if select_on == "validation" and d.val_split and d.val_split == d.test_split:
    raise ConfigError(
        f"config.dataset.val_split={d.val_split!r} is the test split: checkpoints would be "
        f"selected on the test set. Use the dataset's validation split or "
        f"val_split={HELDOUT!r} (a held-out fold of the training split); to reproduce a "
        "reference that selected on the test split, set config.train.select_on='test' "
        "explicitly (its results are labelled as such).")
  if select_on == "test" and not d.test_split:
    raise ConfigError("config.train.select_on='test' needs config.dataset.test_split.")


def selection_split(c: ml_collections.ConfigDict) -> str:
  """The split the checkpoint is selected on ('' when there is none: the final state is kept)."""
  return c.dataset.test_split if c.train.select_on == "test" else c.dataset.val_split


def selection_label(c: ml_collections.ConfigDict) -> str:
  """The `split` of the per-epoch evaluation rows: 'val', or 'test' when they are test results."""
  return "test" if c.train.select_on == "test" else "val"


def selected_on(c: ml_collections.ConfigDict) -> str:
  """What selected the reported checkpoint: 'validation', 'heldout', 'test' or 'last' (none)."""
  split = selection_split(c)
  if not split:
    return "last"
  if c.train.select_on == "test":
    return "test"
  return HELDOUT if split == HELDOUT else "validation"


def warn_if_test_selected(c: ml_collections.ConfigDict, what: str) -> None:
  """Logs a warning when `what` (an evaluation) belongs to a run that selects on the test split."""
  if c.train.get("select_on", "validation") == "test":
    log.warning("%s: this run selects its checkpoint on the TEST split "
                "(config.train.select_on='test', a reference's protocol); its test numbers are "
                "optimistic and not comparable with validation-selected ones.", what)


def dataset_splits(c: ml_collections.ConfigDict) -> list[str]:
  """The dataset splits a run opens."""
  names = [c.dataset.train_split, c.dataset.val_split, c.dataset.test_split]
  return list(dict.fromkeys(s for s in names if s and s != HELDOUT))


@dataclasses.dataclass
class RunSources:
  """A run's sources: `train` (what the run trains on), and by name the splits it evaluates."""

  train: Any
  splits: dict[str, Any]
  heldout_indices: np.ndarray | None = None  # Positions of the held-out fold in the train split.


def run_sources(c: ml_collections.ConfigDict, sources: dict[str, Any]) -> RunSources:
  """The training source and evaluated splits of a run, from the dataset's opened `sources`."""
  d = c.dataset
  train = sources[d.train_split]
  splits = {k: v for k, v in sources.items() if k != d.train_split}
  if d.val_split != HELDOUT:
    return RunSources(train, splits)
  labels, groups = read_labels_and_groups(train, d.heldout_group)
  fit, held = validation_fold(labels, groups, fraction=d.heldout_fraction, seed=d.heldout_seed)
  log.info("Validation: a held-out fold of %d of the %d training examples (%s); training on %d.",
           len(held), len(labels), f"disjoint by {groups[1]!r}" if groups[0] is not None
           else "no group ids", len(fit))
  splits[HELDOUT] = Subset(train, held)
  return RunSources(Subset(train, fit), splits, held)


def read_labels_and_groups(source: Any, group: str) -> tuple[np.ndarray, tuple[Any, str]]:
  """(labels (N,), (group ids (N,) or None, the group feature's name)) of a training source."""
  first = source[0]
  if "label" not in first:
    raise ConfigError(f"config.dataset.val_split={HELDOUT!r} stratifies by class, but the records "
                      "have no 'label'; name the dataset's validation split instead.")
  if group == "auto":
    group = next((g for g in GROUP_FEATURES if g in first), "")
  elif group and group not in first:
    raise ConfigError(f"config.dataset.heldout_group={group!r} is not a record feature; use one "
                      f"of {sorted(first)}, '' (no groups) or 'auto'.")
  read = getattr(source, "read", None)  # avjax.data.records.RecordSource: only these features.
  names = ["label"] + ([group] if group else [])
  rows = [read(i, names) if read else source[i] for i in range(len(source))]
  labels = np.asarray([int(np.asarray(r["label"]).reshape(-1)[0]) for r in rows])
  groups = np.asarray([_key(r[group]) for r in rows]) if group else None
  return labels, (groups, group)


def _key(value: Any) -> str:
  """A group id (str, bytes or a number) as a string."""
  value = np.asarray(value).reshape(()).item()
  return value.decode() if isinstance(value, bytes) else str(value)


def validation_fold(labels: np.ndarray, groups: tuple[Any, str] | np.ndarray | None = None, *,
                    fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(fit, held-out) sorted indices: a seeded, class-stratified fold of `fraction` of the examples.

  Examples sharing a group id (speaker, video) fall on the same side. Groups are visited in a
  seeded order and one joins the held-out fold when that brings the fold's per-class counts
  closer (in squared distance) to `fraction` of each class's count; without groups every example
  is its own group, which makes each class's held-out count its target rounded.
  """
  if isinstance(groups, tuple):
    groups = groups[0]
  labels = np.asarray(labels, np.int64)
  n = len(labels)
  num_classes = int(labels.max()) + 1 if n else 0
  if groups is None:
    group_of = np.arange(n)
  else:
    _, group_of = np.unique(np.asarray(groups), return_inverse=True)
  num_groups = int(group_of.max()) + 1 if n else 0
  counts = np.zeros((num_groups, num_classes), np.int64)
  np.add.at(counts, (group_of, labels), 1)
  target = fraction * counts.sum(0)
  held_counts = np.zeros(num_classes, np.float64)
  take = np.zeros(num_groups, bool)
  for g in np.random.default_rng([seed, 0x5E1EC7]).permutation(num_groups):
    after = held_counts + counts[g]
    if np.sum((after - target) ** 2) < np.sum((held_counts - target) ** 2):
      held_counts, take[g] = after, True
  held = take[group_of]
  return np.flatnonzero(~held), np.flatnonzero(held)
