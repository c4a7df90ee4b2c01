"""Finding files in a manual download: recursive indexes by stem, label / split files, CSVs."""

from __future__ import annotations

import csv
import fnmatch
import os
from pathlib import Path
from typing import Iterable

from data_builders.common.report import BuildReport


def walk_files(root: Path) -> Iterable[Path]:
  """Every file under root (symlinks followed, hidden folders skipped), in sorted order."""
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
    for name in sorted(filenames):
      yield Path(dirpath) / name


def index_by_stem(root: Path, exts: Iterable[str], report: BuildReport | None = None,
                  what: str = 'file') -> dict[str, Path]:
  """{stem: path} of the files under root with one of `exts` (lower-case, with the dot).

  A stem found twice keeps the first path in sorted order; the duplicate becomes a report note.
  """
  exts = {e.lower() for e in exts}
  index: dict[str, Path] = {}
  if not root.is_dir():
    return index
  for path in walk_files(root):
    if path.suffix.lower() not in exts:
      continue
    stem = path.stem
    if stem in index:
      if report is not None:
        report.note(f'{what} {stem} found twice: using {index[stem]}, ignoring {path}')
      continue
    index[stem] = path
  return index


def find_named(root: Path, patterns: Iterable[str]) -> list[Path]:
  """Files under root whose name matches one of the fnmatch `patterns`, sorted."""
  patterns = list(patterns)
  return [p for p in walk_files(root) if any(fnmatch.fnmatch(p.name, pat) for pat in patterns)]


def pick_one(paths: list[Path], prefer_dir: str) -> Path | None:
  """The path whose parent folder is `prefer_dir` if any, else the first; None when empty."""
  for p in paths:
    if p.parent.name == prefer_dir:
      return p
  return paths[0] if paths else None


def read_csv_rows(path: Path) -> list[dict[str, str]]:
  """Rows of a CSV with a header, as dicts with stripped keys and values (BOM tolerated)."""
  with open(path, newline='', encoding='utf-8-sig') as f:
    return [{(k or '').strip(): (v or '').strip() for k, v in row.items()}
            for row in csv.DictReader(f)]


def read_csv_plain(path: Path) -> list[list[str]]:
  """Rows of a header-less CSV (blank lines dropped)."""
  with open(path, newline='', encoding='utf-8-sig') as f:
    return [[c.strip() for c in row] for row in csv.reader(f) if any(c.strip() for c in row)]


def relative(path: Path | None, root: Path) -> str | None:
  """path relative to root for the metadata (absolute paths do not travel), None stays None."""
  if path is None:
    return None
  try:
    return str(path.relative_to(root))
  except ValueError:
    return str(path)


def youtube_stems(clip_id: str, clip_seconds: int = 10) -> list[str]:
  """File stems a YouTube-based clip id may have on disk, most specific first.

  'ytid_17' (OGM-GE / Kinetics-Sounds lists, MM-Debiased's Kinetics-style ids) and
  'ytid_000017_000027' (VGGSound / Kinetics-400 downloads) name the same 10 s clip; each is tried
  in the other forms too ('ytid_000017' as well). YouTube ids are 11 characters and may contain '_'
  and '-'. A bare 'ytid' gives only itself (see find_youtube for the prefix search).
  """
  clip_id = clip_id.strip()
  out = [clip_id]
  ytid, rest = clip_id[:11], clip_id[12:].split('_') if len(clip_id) > 12 else []
  if len(clip_id) > 12 and clip_id[11] == '_' and rest and all(r.isdigit() for r in rest):
    start = int(rest[0])
    end = int(rest[1]) if len(rest) > 1 else start + clip_seconds
    out += [f'{ytid}_{start}', f'{ytid}_{start:06d}_{end:06d}', f'{ytid}_{start:06d}',
            f'{ytid}_{start}_{end}']
  return list(dict.fromkeys(out))


def find_youtube(clip_id: str, index: dict[str, Path], by_ytid: dict[str, list[str]] | None = None,
                 clip_seconds: int = 10) -> Path | None:
  """The file of a YouTube-based clip id in a {stem: path} index (see youtube_stems), or for a
  bare 11-character id the only stem 'ytid_*' in `by_ytid` ({ytid: [stems]}); None if not found
  or ambiguous."""
  for stem in youtube_stems(clip_id, clip_seconds):
    if stem in index:
      return index[stem]
  if by_ytid is not None and len(clip_id.strip()) == 11:
    stems = by_ytid.get(clip_id.strip(), [])
    if len(stems) == 1:
      return index[stems[0]]
  return None


def ytid_index(index: dict[str, Path]) -> dict[str, list[str]]:
  """{11-character YouTube id: [stems 'ytid_...']} of a {stem: path} index."""
  out: dict[str, list[str]] = {}
  for stem in index:
    if len(stem) > 12 and stem[11] == '_':
      out.setdefault(stem[:11], []).append(stem)
  return out
