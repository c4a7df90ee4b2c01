"""Report-and-skip bookkeeping for dataset builds: what was skipped, why, and which files.

Every problem found while planning (a missing counterpart, a clip listed without media) or while
decoding (corrupt, empty or truncated media, audio and video of different lengths, unreadable
feature files) becomes one entry; the build goes on without that clip unless it is strict. The
summary is logged at the end of the build and stored in the dataset metadata ('build_report').
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from typing import Any, Sequence

from avjax.media import MediaError

# Problem kinds (a clip is skipped) and what they mean.
KINDS = {
    'missing_counterpart': 'a file the config needs is missing (e.g. a wav without its flv)',
    'missing_media': 'listed in a label / split file, but no file of it was found',
    'empty': 'a file is empty (0 bytes or no samples / frames)',
    'truncated': 'a file decodes to much less than its header declares',
    'corrupt': 'a file cannot be opened or decoded',
    'length_mismatch': 'audio and video durations disagree by more than max_av_mismatch_s',
    'bad_features': 'a feature file is unreadable, has the wrong shape, or is not finite',
    'bad_label': 'its labels are missing or malformed',
    'worker_crash': 'decoding it crashed the worker process (twice)',
    'error': 'an unexpected error while processing it (a bug? see the message)',
}
_MAX_LISTED = 2000  # Entries kept in the metadata; the counts are always complete.


class ClipError(MediaError):
  """A clip that cannot be used; `kind` is one of KINDS, `files` the paths involved."""

  def __init__(self, kind: str, message: str, files: Sequence[str] = ()):
    super().__init__(message)
    if kind not in KINDS:
      raise ValueError(f'unknown problem kind {kind!r}; known: {sorted(KINDS)}')
    self.kind = kind
    self.files = [str(f) for f in files]


class StrictBuildError(RuntimeError):
  """Raised at the first problem of a strict build."""


def classify(error: BaseException) -> str:
  """The problem kind of an exception raised while processing a clip."""
  if isinstance(error, ClipError):
    return error.kind
  if isinstance(error, MediaError):
    text = str(error)
    if 'does not exist' in text:
      return 'missing_media'
    if 'empty' in text or 'no samples' in text or 'no frames' in text:
      return 'empty'
    if 'truncated' in text:
      return 'truncated'
    return 'corrupt'
  return 'error'


@dataclasses.dataclass
class BuildReport:
  """Problems (skipped clips), exclusions (clips left out on purpose) and per-split counts.

  strict: `add` raises StrictBuildError at the first problem instead of recording it.
  """

  name: str
  strict: bool = False
  problems: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  excluded: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  examples: dict[str, int] = dataclasses.field(default_factory=dict)
  notes: list[str] = dataclasses.field(default_factory=list)
  tallies: collections.Counter = dataclasses.field(default_factory=collections.Counter)

  def add(self, clip_id: str, kind: str, message: str, files: Sequence[str] = ()) -> None:
    """Records a skipped clip (or raises when strict)."""
    if kind not in KINDS:
      raise ValueError(f'unknown problem kind {kind!r}')
    if self.strict:
      raise StrictBuildError(
          f'{self.name}: {clip_id}: {kind} ({KINDS[kind]}): {message}. The build is strict '
          '(strict=True or AVJAX_BUILD_STRICT=1); without it this clip would be reported and '
          'skipped.')
    self.problems.append({'id': clip_id, 'kind': kind, 'message': message,
                          'files': [str(f) for f in files]})

  def exclude(self, reason: str, count: int = 1) -> None:
    """Counts clips left out on purpose (not problems), e.g. 'not_in_partition'."""
    if count > 0:
      self.excluded[reason] += count

  def note(self, text: str) -> None:
    """A warning that skips nothing (e.g. a duplicated file name); kept in the metadata."""
    self.notes.append(text)
    logging.warning('%s: %s', self.name, text)

  def tally(self, name: str, count: int = 1) -> None:
    """Counts something about the built clips that is not a problem (e.g. frames whose face was
    detected vs frames that fell back to a centre crop)."""
    self.tallies[name] += count

  def counts(self) -> dict[str, int]:
    return dict(sorted(collections.Counter(p['kind'] for p in self.problems).items()))

  def to_metadata(self) -> dict[str, Any]:
    """JSON-able summary; problems sorted by id so it does not depend on worker timing."""
    problems = sorted(self.problems, key=lambda p: (p['id'], p['kind']))
    return {
        'num_examples': dict(self.examples),
        'num_skipped': len(problems),
        'skipped_by_kind': self.counts(),
        'skipped': problems[:_MAX_LISTED],
        'skipped_not_listed': max(0, len(problems) - _MAX_LISTED),
        'excluded': dict(sorted(self.excluded.items())),
        'notes': self.notes[:_MAX_LISTED],
        'tallies': dict(sorted(self.tallies.items())),
        'kinds': {k: KINDS[k] for k in self.counts()},
    }

  def summary(self) -> str:
    """Human-readable end-of-build summary: counts, then one line per skipped clip."""
    made = ', '.join(f'{k} {v}' for k, v in self.examples.items()) or 'none'
    lines = [f'{self.name}: built {sum(self.examples.values())} examples ({made}); '
             f'skipped {len(self.problems)} clip(s).']
    for kind, n in self.counts().items():
      lines.append(f'  {kind}: {n} ({KINDS[kind]})')
    for reason, n in sorted(self.excluded.items()):
      lines.append(f'  excluded on purpose, {reason}: {n}')
    for name, n in sorted(self.tallies.items()):
      lines.append(f'  {name}: {n}')
    for p in sorted(self.problems, key=lambda p: p['id'])[:200]:
      lines.append(f'  - {p["id"]} [{p["kind"]}] {p["message"]}')
    if len(self.problems) > 200:
      lines.append(f'  ... and {len(self.problems) - 200} more (all in metadata["build_report"]).')
    return '\n'.join(lines)
