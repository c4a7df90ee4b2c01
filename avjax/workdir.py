"""A run's directory: every path in it, and the rules for what may change when a run resumes.

  <workdir>/config.json          the configuration that wrote the run (checked on resume)
  <workdir>/lock.json            the running process (host, pid, start time); one run at a time
  <workdir>/final.json           the final evaluation of a finished run (a re-run has nothing to do)
  <workdir>/checkpoints/<step>/  Orbax checkpoints (avjax.checkpoint)
  <workdir>/plans/               each epoch's plan, saved at its start (avjax.data.PlanStore)
  <workdir>/metrics.jsonl        one JSON row per split evaluation / training epoch (avjax.writers)
  <workdir>/metrics_superseded.jsonl  rows a resumption dropped (written after the restored step)
  <workdir>/tensorboard/<split>/ TensorBoard events
  <workdir>/metrics.png          the metrics plot
  <workdir>/valuation/           Shapley contributions: tables, summary.jsonl, contributions.png
  <workdir>/pictures/            evaluators' pictures (CM-VQVAE masks and reconstructions)
  <workdir>/predictions/<split>/ per-example prediction files
  <workdir>/probe.json           linear-probe accuracies (python -m avjax.probe; probe_<n>.json next)

Every module asks this one for its paths; nothing else joins names onto a workdir.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import socket
from typing import Any, Iterator

import ml_collections

from avjax.registry import ConfigError

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
LOCK_FILE = "lock.json"
FINAL_FILE = "final.json"
SUPERSEDED_FILE = "metrics_superseded.jsonl"
CHECKPOINTS = "checkpoints"
PLANS = "plans"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD = "tensorboard"
PLOT_FILE = "metrics.png"
VALUATION = "valuation"
PICTURES = "pictures"
PREDICTIONS = "predictions"
PROBE_FILE = "probe.json"

# Keys that may change between a run and its resumption (they do not change the computation);
# config.evals.* too (evaluation only).
RESUMABLE_CHANGES = ("train.num_epochs", "train.progress", "train.log_every_steps",
                     "train.eval_every_epochs", "train.checkpoint_every_steps",
                     "train.checkpoint_every_epochs", "train.keep_checkpoints",
                     "train.best_metric", "train.best_mode",
                     "input.num_workers", "mesh.distributed", "mesh.coordinator_address",
                     "mesh.num_processes", "mesh.process_id", "dataset.data_dir", "name")
RESUMABLE_PREFIXES = ("evals.",)


def config_file(workdir: str) -> str:
  return os.path.join(workdir, CONFIG_FILE)


def final_file(workdir: str) -> str:
  return os.path.join(workdir, FINAL_FILE)


def superseded_file(workdir: str) -> str:
  return os.path.join(workdir, SUPERSEDED_FILE)


def checkpoints(workdir: str) -> str:
  return os.path.join(workdir, CHECKPOINTS)


def plans(workdir: str) -> str:
  return os.path.join(workdir, PLANS)


def metrics_file(workdir: str) -> str:
  return os.path.join(workdir, METRICS_FILE)


def tensorboard(workdir: str, split: str) -> str:
  return os.path.join(workdir, TENSORBOARD, split)


def plot_file(workdir: str) -> str:
  return os.path.join(workdir, PLOT_FILE)


def valuation(workdir: str, name: str = "") -> str:
  """<workdir>/valuation (or a file in it)."""
  return os.path.join(workdir, VALUATION, name) if name else os.path.join(workdir, VALUATION)


def pictures(workdir: str) -> str:
  return os.path.join(workdir, PICTURES)


def predictions(workdir: str, split: str) -> str:
  return os.path.join(workdir, PREDICTIONS, split)


def new_probe_file(workdir: str) -> str:
  """<workdir>/probe.json, or probe_<n>.json with the smallest n not taken (never overwritten)."""
  path, n = os.path.join(workdir, PROBE_FILE), 0
  while os.path.exists(path):
    n += 1
    path = os.path.join(workdir, PROBE_FILE.replace(".json", f"_{n}.json"))
  return path


def folder(path: str) -> str:
  """`path`, created if missing."""
  os.makedirs(path, exist_ok=True)
  return path


def read_config_json(path: str) -> dict[str, Any]:
  """A workdir's `config.json` as a dict; a damaged file is a ConfigError that says so."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except ValueError as e:  # JSONDecodeError, UnicodeDecodeError.
    raise ConfigError(f"{path} is not valid JSON ({type(e).__name__}: {e}): the workdir's record "
                      "of its config is damaged. Restore it (the run's config file and "
                      "overrides), or use a new workdir.") from e


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The ConfigDict a workdir was written with, in today's keys (`config.upgrade_saved`)."""
  from avjax.config import upgrade_saved  # pylint: disable=import-outside-toplevel
  path = config_file(workdir)
  if not os.path.isfile(path):
    raise ConfigError(f"{path} does not exist; --workdir must be a directory written by "
                      "`python -m avjax.main` or `python -m avjax.convert`.")
  return ml_collections.ConfigDict(upgrade_saved(read_config_json(path)))


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """<workdir>/config.json, written whole or not at all."""
  path = config_file(folder(workdir))
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(json.loads(config.to_json()), f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
  """{'a': {'b': 1}} -> {'a.b': 1}."""
  flat = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      flat.update(flatten(v, f"{prefix}{k}."))
    else:
      flat[f"{prefix}{k}"] = v
  return flat


def run_method_settings_only(flat: dict[str, Any]) -> dict[str, Any]:
  """A saved flat config without config.method keys its method does not take: workdirs written
  before `validate` resolved the method (avjax.config.with_method) stored every method's settings."""
  from avjax.methods import METHODS  # pylint: disable=import-outside-toplevel
  name = flat.get("method.name")
  if name not in METHODS:
    return flat
  takes = METHODS.get(name).settings_keys()
  return {k: v for k, v in flat.items()
          if not k.startswith("method.") or k == "method.name" or k[len("method."):] in takes}


def check_resume(config: ml_collections.ConfigDict, workdir: str, *, write: bool) -> None:
  """Refuses to resume a workdir written by a different experiment (nothing is overwritten), then
  records `config` there (`write`: the chief process)."""
  from avjax.config import upgrade_saved  # pylint: disable=import-outside-toplevel
  path = config_file(workdir)
  if os.path.exists(path):
    saved = run_method_settings_only(flatten(upgrade_saved(read_config_json(path))))
    now = flatten(json.loads(config.to_json()))
    diff = sorted(k for k in set(saved) | set(now)
                  if k not in RESUMABLE_CHANGES and not k.startswith(RESUMABLE_PREFIXES)
                  and saved.get(k) != now.get(k))
    if diff:
      details = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diff[:8])
      raise ConfigError(f"{workdir} holds a run of a different configuration ({details}). "
                        "Resuming would mix the two; pass a new --workdir (or delete that one "
                        "yourself if you no longer need it).")
  if write:
    write_config(workdir, config)


class WorkdirBusyError(ConfigError):
  """Another live run holds the workdir's lock."""


def _describe(holder: dict[str, Any]) -> str:
  return (f"pid {holder.get('pid')} on host {holder.get('host')!r}, started "
          f"{holder.get('started', '?')}")


@contextlib.contextmanager
def lock(workdir: str) -> Iterator[None]:
  """Holds `<workdir>/lock.json` for one run: a second run on the same workdir (a double-submitted
  job, a second terminal) stops with one line naming the holder instead of mixing its checkpoints
  and metrics into the first run's.

  The lock is an OS file lock (released by the kernel when its process dies, however it dies) plus
  the holder's host, pid and start time written in the file and cleared on a clean exit. A file
  still naming a process of this host that holds no lock is a stale lock of a killed run: taken
  over with a warning. One naming another host cannot be checked from here; delete it if that run
  no longer runs. Multi-host runs call this on process 0 only.
  """
  path = os.path.join(folder(workdir), LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise WorkdirBusyError(
          f"{workdir} is in use by another run ({_describe(_read_holder(fd))}); wait for it to "
          "end, or pass another --workdir.") from None
    holder = _read_holder(fd)
    host = socket.gethostname()
    if holder and holder.get("host") not in (host, None):
      raise WorkdirBusyError(
          f"{workdir} is locked by a run on another host ({_describe(holder)}); if that run no "
          f"longer runs, delete {path} and run again, else pass another --workdir.")
    if holder:
      log.warning("Took over the lock of %s: a run that ended without releasing it (%s).",
                  workdir, _describe(holder))
    me = {"host": host, "pid": os.getpid(),
          "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    _write_holder(fd, json.dumps(me))
    try:
      yield
    finally:
      _write_holder(fd, "")  # A clean exit leaves no holder to take over.
  finally:
    os.close(fd)  # Releases the OS lock.


def _read_holder(fd: int) -> dict[str, Any]:
  os.lseek(fd, 0, os.SEEK_SET)
  text = os.read(fd, 4096).decode("utf-8", "replace").strip()
  try:
    holder = json.loads(text) if text else {}
  except ValueError:
    holder = {"host": None, "pid": "?", "started": f"? (unreadable {LOCK_FILE})"}
  return holder if isinstance(holder, dict) else {}


def _write_holder(fd: int, text: str) -> None:
  os.ftruncate(fd, 0)
  os.lseek(fd, 0, os.SEEK_SET)
  os.write(fd, text.encode("utf-8"))
  os.fsync(fd)


def read_final(workdir: str) -> dict[str, Any] | None:
  """The final evaluation record of a finished run, or None."""
  path = final_file(workdir)
  if not os.path.exists(path):
    return None
  try:
    return read_config_json(path)
  except ConfigError:
    return None  # Damaged: the evaluation is simply run again.


def write_final(workdir: str, record: dict[str, Any]) -> None:
  """<workdir>/final.json, written whole or not at all."""
  path = final_file(folder(workdir))
  with open(path + ".tmp", "w") as f:
    json.dump(record, f, indent=2, sort_keys=True)
  os.replace(path + ".tmp", path)
