"""The output side of metrics: `metrics.jsonl`, TensorBoard scalars, end-of-run tables, plots, progress bars.

`<workdir>/metrics.jsonl` holds one JSON object per line with `step`, `epoch`, `split` and the metric
values. Non-finite values (NaN, inf) are written as `null`, so every line is strict JSON. A resumed run
continues the same file: rows written after the step it resumes from (by a run killed before its next
checkpoint, or one whose latest checkpoint was unreadable) are moved to `metrics_superseded.jsonl`,
so every (step, split) has one row, and TensorBoard is purged from that step. TensorBoard event files
go to `<workdir>/tensorboard/<split>/`, one tag per metric name.

Epochs in rows are counts of completed epochs (1 after the first epoch; docs/architecture.md).
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import re
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tqdm

from avjax import workdir as workdir_lib

log = logging.getLogger(__name__)

_RESERVED = ("step", "epoch", "split")
STEP_SPLIT = "train_step"  # Rows of train metrics every train.log_every_steps steps.
_SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}


def _to_json_value(key: str, value: Any) -> Any:
  """Converts a metric value (Python, numpy or jax scalar) to a JSON-safe Python value."""
  if isinstance(value, str) or value is None:
    return value
  if isinstance(value, (bool, np.bool_)):
    return bool(value)
  if isinstance(value, numbers.Integral):
    return int(value)
  if isinstance(value, numbers.Real):
    value = float(value)
  else:
    arr = np.asarray(value)  # jax / numpy arrays
    if arr.size != 1:
      raise ValueError(f"metric {key!r} must be a scalar, got an array of shape {arr.shape}")
    item = arr.reshape(()).item()
    if isinstance(item, (bool, int)):
      return item
    value = float(item)
  return value if math.isfinite(value) else None


class MetricWriter:
  """Appends metric rows to `<workdir>/metrics.jsonl` and to TensorBoard.

  With `enabled=False` (every process but process 0) all methods are no-ops and nothing is created.
  """

  def __init__(self, workdir: str | os.PathLike, *, enabled: bool = True,
               resume_step: int | None = None):
    """`resume_step`: the step a run starts from (0 for a fresh start); rows after it are
    superseded (moved out of metrics.jsonl) and TensorBoard purges its events after it."""
    self.workdir = os.fspath(workdir)
    self.enabled = enabled
    self.path = workdir_lib.metrics_file(self.workdir)
    self._file = None
    self._tb: dict[str, Any] = {}
    self._seen: dict[str, float] = {}  # Picture files already in TensorBoard, with their mtime.
    self._purge_step = None if resume_step is None else int(resume_step) + 1
    if not enabled:
      return
    os.makedirs(self.workdir, exist_ok=True)
    if resume_step is not None:
      _supersede_after(self.workdir, int(resume_step))
    broken_tail = False
    if os.path.exists(self.path) and os.path.getsize(self.path) > 0:
      with open(self.path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        broken_tail = f.read(1) != b"\n"
    self._file = open(self.path, "a", encoding="utf-8")
    if broken_tail:  # a crash mid-write left a line without its newline; start a fresh line after it
      self._file.write("\n")
      self._file.flush()

  def write(self, step: int, epoch: int, split: str, metrics: Mapping[str, Any]) -> None:
    """Appends one row (and its scalars to TensorBoard), then flushes both."""
    if not self.enabled:
      return
    if self._file is None:
      raise RuntimeError(f"MetricWriter for {self.workdir} is closed")
    clash = [k for k in metrics if k in _RESERVED]
    if clash:
      raise ValueError(f"metric names {clash} clash with the row keys {_RESERVED}; rename them")
    row: dict[str, Any] = {"step": int(step), "epoch": int(epoch), "split": str(split)}
    for key, value in metrics.items():
      row[str(key)] = _to_json_value(key, value)
    self._file.write(json.dumps(row, allow_nan=False) + "\n")
    self._file.flush()
    tb = self._tensorboard(row["split"])
    for key, value in metrics.items():
      v = row[str(key)]
      if v is None and value is not None:  # non-finite: TensorBoard shows NaN / inf as such
        tb.add_scalar(str(key), float(np.asarray(value).reshape(())), global_step=row["step"])
      elif isinstance(v, (int, float)) and not isinstance(v, bool):
        tb.add_scalar(str(key), float(v), global_step=row["step"])
    tb.flush()

  def text(self, tag: str, text: str, step: int) -> None:
    """A text summary in TensorBoard (e.g. the run's config), under the 'run' folder."""
    if not self.enabled:
      return
    tb = self._tensorboard("run")
    tb.add_text(tag, f"```\n{text}\n```", global_step=int(step))
    tb.flush()

  def pictures(self, folders: Sequence[str], step: int, *, record: bool = True) -> int:
    """Adds the PNG files in `folders` that are new or changed since the last call (evaluators'
    pictures, the contributions plot) to TensorBoard's 'pictures' folder, tagged by file name
    without its epoch / step numbers (one slider per picture kind); returns how many.
    `record=False` only notes the files present (a resumed run's earlier pictures)."""
    if not self.enabled:
      return 0
    found = {}
    for folder in folders:
      if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
          path = os.path.join(folder, name)
          if name.endswith(".png") and os.path.getmtime(path) != self._seen.get(path):
            found[path] = os.path.getmtime(path)
    if not found or not record:
      self._seen.update(found)
      return 0
    from PIL import Image  # pylint: disable=import-outside-toplevel
    tb = self._tensorboard("pictures")
    for path in found:
      with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
      tag = re.sub(r"_(epoch|step)_?\d+", "", os.path.splitext(os.path.basename(path))[0])
      tb.add_image(tag, pixels, global_step=int(step), dataformats="HWC")
    tb.flush()
    self._seen.update(found)
    return len(found)

  def _tensorboard(self, split: str):
    if split not in self._tb:
      from tensorboardX import SummaryWriter  # imported lazily: only process 0 needs it

      self._tb[split] = SummaryWriter(logdir=workdir_lib.tensorboard(self.workdir, split),
                                      purge_step=self._purge_step)
    return self._tb[split]

  def close(self) -> None:
    """Flushes and closes the JSON file and all TensorBoard writers (safe to call twice)."""
    for tb in self._tb.values():
      tb.close()
    self._tb = {}
    if self._file is not None:
      self._file.close()
      self._file = None

  def __enter__(self) -> MetricWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _supersede_after(workdir: str, step: int) -> int:
  """Moves metrics.jsonl rows of steps after `step` to metrics_superseded.jsonl (marked with the
  step resumed from); returns how many."""
  rows = read_metrics(workdir)
  stale = [r for r in rows if r.get("step", 0) > step]
  if not stale:
    return 0
  with open(workdir_lib.superseded_file(workdir), "a", encoding="utf-8") as f:
    for row in stale:
      f.write(json.dumps(dict(row, superseded_at=step), allow_nan=False) + "\n")
  path = workdir_lib.metrics_file(workdir)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    for row in rows:
      if row.get("step", 0) <= step:
        f.write(json.dumps(row, allow_nan=False) + "\n")
  os.replace(path + ".tmp", path)
  log.info("Moved %d metric row(s) written after step %d (superseded by this resumption) to %s.",
           len(stale), step, workdir_lib.superseded_file(workdir))
  return len(stale)


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, Any]]:
  """All rows of `<workdir>/metrics.jsonl` in file order (non-finite values read back as None).

  Returns [] when the file does not exist. A line that is not valid JSON (e.g. cut short by a crash) is
  skipped with a warning.
  """
  path = workdir_lib.metrics_file(os.fspath(workdir))
  if not os.path.exists(path):
    return []
  rows = []
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      line = line.strip()
      if not line:
        continue
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        warnings.warn(f"{path}:{lineno}: skipping a line that is not valid JSON (interrupted write?)")
  return rows


def _latest_per_epoch(rows: Sequence[Mapping[str, Any]], splits: Sequence[str]) -> list[Mapping[str, Any]]:
  """The last row for each (epoch, split), ordered by epoch then train/val/test."""
  latest: dict[tuple[int, str], Mapping[str, Any]] = {}
  for row in rows:
    if row.get("split") in splits:
      latest[(row.get("epoch", 0), row["split"])] = row
  order = sorted(latest, key=lambda k: (k[0], _SPLIT_ORDER.get(k[1], 99), k[1]))
  return [latest[k] for k in order]


def _format_cell(value: Any) -> str:
  if value is None:
    return "-"
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, numbers.Integral):
    return str(value)
  if isinstance(value, numbers.Real):
    return f"{value:.4f}" if math.isfinite(value) else str(value)
  return str(value)


def summary_table(
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[str] | None = None,
    splits: Sequence[str] = ("val", "test"),
) -> str:
  """A plain-text, aligned table with one line per (epoch, split) for the given splits.

  Columns are epoch, split and `keys` (default: every metric key of those rows, in first-seen order).
  Floats are shown with 4 decimals; missing or non-finite values as '-'. When a resumed run logged the
  same (epoch, split) twice, the later row wins.
  """
  # The final test row (of the best checkpoint, maybe an earlier epoch) comes last.
  picked = sorted(_latest_per_epoch(rows, splits), key=lambda r: r["split"] == "test")
  if not picked:
    return f"(no {'/'.join(splits)} metrics)"
  if keys is None:
    keys = []
    for row in picked:
      keys.extend(k for k in row if k not in _RESERVED and k not in keys)
  header = ["epoch", "split", *keys]
  body = [[_format_cell(r.get("epoch")), str(r["split"]), *(_format_cell(r.get(k)) for k in keys)]
          for r in picked]
  widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

  def fmt(cells: list[str]) -> str:
    # split column left-aligned, numbers right-aligned
    return "  ".join(c.ljust(w) if i == 1 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

  lines = [fmt(header), "  ".join("-" * w for w in widths), *(fmt(b) for b in body)]
  return "\n".join(line.rstrip() for line in lines)


def _default_plot_keys(rows: Sequence[Mapping[str, Any]]) -> list[str]:
  present: list[str] = []
  for row in rows:
    present.extend(k for k in row if k not in _RESERVED and k not in present)
  keys = [k for k in ("loss", "accuracy") if k in present]
  keys += sorted(k for k in present if k.startswith("accuracy_"))
  return keys


def plot_metrics(
    workdir: str | os.PathLike, keys: Sequence[str] | None = None,
    out: str = workdir_lib.PLOT_FILE
) -> str:
  """Plots metrics over epochs (one subplot per key, one line per split) and saves a PNG.

  Uses the Agg canvas directly (no pyplot, so no global backend change). Default keys: `loss`,
  `accuracy` and every `accuracy_*` present. Per (epoch, split) the last logged value is used.
  `out` is relative to `workdir` unless absolute. Returns the path written.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  from matplotlib.ticker import MaxNLocator

  workdir = os.fspath(workdir)
  rows = read_metrics(workdir)
  keys = list(keys) if keys is not None else _default_plot_keys(rows)
  splits = sorted({r["split"] for r in rows if r.get("split") not in (None, STEP_SPLIT)}, key=lambda s: (_SPLIT_ORDER.get(s, 99), s))
  picked = _latest_per_epoch(rows, splits)
  n = max(len(keys), 1)
  ncols = min(n, 3)
  nrows = math.ceil(n / ncols)
  fig = Figure(figsize=(4.5 * ncols, 3.2 * nrows), layout="constrained")
  FigureCanvasAgg(fig)
  axes = fig.subplots(nrows, ncols, squeeze=False).reshape(-1)
  if not keys:
    axes[0].text(0.5, 0.5, "no metrics to plot", ha="center", va="center", transform=axes[0].transAxes)
  for ax, key in zip(axes, keys):
    for split in splits:
      pts = [(r["epoch"], r[key]) for r in picked if r["split"] == split and r.get(key) is not None]
      if pts:
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o", markersize=3, label=split)
    ax.set_title(key)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    if ax.get_lines():
      ax.legend(fontsize="small")
  for ax in axes[max(len(keys), 1):]:
    ax.set_visible(False)
  path = out if os.path.isabs(out) else os.path.join(workdir, out)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=100)
  return path


def progress_bar(
    total: int | None,
    desc: str = "",
    disable: bool = False,
    *,
    leave: bool = False,
    initial: int = 0,
    unit: str = "step",
) -> tqdm.tqdm:
  """The one place that decides how progress looks: a tqdm bar with dynamic width.

  `leave=False` (the default, for inner loops) clears the bar when done; pass `leave=True` for the
  outer epoch loop. `initial` lets a resumed run start the bar where it left off.
  """
  return tqdm.tqdm(total=total, desc=desc, disable=disable, leave=leave, initial=initial, unit=unit,
                   dynamic_ncols=True)
