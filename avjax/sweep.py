r"""Sweeps: methods x datasets x fusions x seeds, one run (and workdir) each, under one sweep root.

  python -m avjax.sweep --config configs/sweeps/synthetic.py [--launcher local|slurm|submitit_local]
      [--root DIR] [--dry_run] [--nowait] [--config.seeds=0,1 ...]

A sweep config (configs/sweeps/*.py; its keys: avjax/sweep_plan.py) becomes runs. A run whose config does not validate (a method needing a capability the model lacks, a fusion it
cannot use) is listed as excluded with the reason; the others run in `<root>/runs/<name>`, with
`sweep_run.json` (what the run is) and `status.json` (done / failed, with the error) beside the
run's own files. Several local launchers may work on one sweep at once (each run is claimed by
one; e.g. a second one with `--config.methods` in the opposite order). Re-launching skips finished
runs and resumes the others from their checkpoints; a failed run is reported and the others go on
(chained runs start once what they need is done). Launchers: 'local' (one run after another, each
in its own process), 'slurm' (one submitit job per run; several nodes per run when the slurm section
asks for them: avjax initialises jax.distributed from SLURM's variables), 'submitit_local'
(submitit's local executor: the slurm path without a cluster).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import subprocess
import sys
import time
import traceback
from typing import Iterator

import ml_collections

from avjax.registry import ConfigError
from avjax.sweep_plan import Run, build_config, checkout, default_root, plan

log = logging.getLogger(__name__)

SPEC_FILE = "sweep_run.json"
STATUS_FILE = "status.json"
PROFILE_FILE = "profile.json"
PLAN_FILE = "sweep.json"
CLAIM_FILE = "claim.lock"
LAUNCHERS = ("local", "slurm", "submitit_local")
def read_json(path: str) -> dict | None:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _write_json(path: str, value: dict) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2, default=str)
  os.replace(tmp, path)


def is_done(run_dir: str) -> bool:
  return (read_json(os.path.join(run_dir, STATUS_FILE)) or {}).get("state") == "done"


def run_one(run_dir: str) -> dict:
  """Trains (or resumes) the run described by `<run_dir>/sweep_run.json` in `run_dir`, profiles it
  when asked, and writes `status.json`; returns the status (an error is caught and reported there,
  so one run's failure never stops the sweep)."""
  import jax  # pylint: disable=import-outside-toplevel
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  from avjax import compile_cache  # pylint: disable=import-outside-toplevel
  absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax / grain chatter; avjax logs at INFO.
  logging.getLogger("avjax").setLevel(logging.INFO)
  compile_cache.enable(compile_cache.default_dir())  # Seeds and methods share compiled steps.
  spec = read_json(os.path.join(run_dir, SPEC_FILE))
  run = Run.from_json(spec["run"])
  runs_dir = os.path.dirname(os.path.abspath(run_dir))
  unfinished = [other for _, other in run.needs if not is_done(os.path.join(runs_dir, other))]
  if unfinished:  # Reported without starting.
    status = {"state": "failed", "seconds": 0.0,
              "error": f"needs run {unfinished[0]}, which has not finished; re-launch the sweep "
                       "once it has"}
  else:
    status = _train(run, spec, run_dir, runs_dir)
  if jax.process_index() == 0:
    _write_json(os.path.join(run_dir, STATUS_FILE), status)
  return status


def _train(run: Run, spec: dict, run_dir: str, runs_dir: str) -> dict:
  """Trains (or resumes) `run` in `run_dir` and profiles it when `spec` asks; the status, with
  the error caught (one run's failure never stops the sweep) and the machine it ran on."""
  import jax  # pylint: disable=import-outside-toplevel
  from avjax import sweep_profile  # pylint: disable=import-outside-toplevel
  from avjax.train import train_and_evaluate  # pylint: disable=import-outside-toplevel
  tic = time.time()
  try:
    config = build_config(run, runs_dir)
    final = train_and_evaluate(config, run_dir)
    if spec.get("profile") and jax.process_count() == 1:
      _write_json(os.path.join(run_dir, PROFILE_FILE), sweep_profile.profile(config))
    status = {"state": "done", "seconds": time.time() - tic, "final": final}
  except Exception as e:  # pylint: disable=broad-except  # Reported; the sweep goes on.
    status = {"state": "failed", "seconds": time.time() - tic,
              "error": f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''}",
              "traceback": traceback.format_exc()}
  return {**status, "machine": sweep_profile.machine()}


def launch(sweep: ml_collections.ConfigDict, root: str, launcher: str = "local", *,
           wait: bool = True, base_dir: str = ".", command: str = "") -> dict[str, dict]:
  """Runs the sweep's unfinished runs under `root`; returns {run name: status} ('skipped' for
  runs finished before, 'submitted' for jobs not waited for, 'waiting' for chained runs whose
  dependencies were not waited for). `command`, the launching command line, goes in the plan
  file for the leaderboard to print."""
  if launcher not in LAUNCHERS:
    raise ConfigError(f"--launcher={launcher!r} is not one of {LAUNCHERS}.")
  runs, excluded = plan(sweep, base_dir, root)
  runs_dir = os.path.join(root, "runs")
  os.makedirs(runs_dir, exist_ok=True)
  _write_json(os.path.join(root, PLAN_FILE), {
      "name": sweep.name, "description": sweep.get("description", ""),
      "baseline": sweep.get("baseline", "baseline"), "command": command,
      "runs": [r.name for r in runs], "excluded": excluded})
  results, todo = {}, []
  for run in runs:
    run_dir = os.path.join(runs_dir, run.name)
    if is_done(run_dir):
      results[run.name] = {"state": "skipped"}
      continue
    os.makedirs(run_dir, exist_ok=True)
    _write_json(os.path.join(run_dir, SPEC_FILE), {
        "run": dataclasses.asdict(run),  # Cost is measured once per configuration.
        "profile": bool(sweep.get("profile", False)) and run.seed == min(sweep.seeds)})
    todo.append((run, run_dir))
  _prepare_datasets([run for run, _ in todo], runs_dir)
  _export_pythonpath()
  if launcher == "local":  # In plan order: what a run needs has run before it.
    for run, run_dir in todo:
      with _claim(run_dir) as claimed:  # Several local launchers may share one sweep.
        if not claimed:
          results[run.name] = {"state": "elsewhere", "error": "another launcher runs it"}
          continue
        if is_done(run_dir):  # Finished by another launcher since this one planned.
          results[run.name] = {"state": "skipped"}
          continue
        log.info("Run %s", run.name)
        results[run.name] = _run_in_process(run_dir)
    return results
  import submitit  # pylint: disable=import-outside-toplevel
  folder = os.path.join(root, "submitit", "%j")
  if launcher == "slurm":
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(**dict(sweep.get("slurm", {})))
  else:
    executor = submitit.LocalExecutor(folder=folder)
    executor.update_parameters(timeout_min=int(dict(sweep.get("slurm", {})).get("timeout_min", 60)))
  for index, wave in enumerate(_waves(todo)):  # Chained runs: one wave after the other.
    if index and not wait:
      for run, _ in wave:
        results[run.name] = {"state": "waiting",
                             "error": "needs other runs; re-launch the sweep once they are done"}
      continue
    jobs = [(run, executor.submit(run_one, run_dir)) for run, run_dir in wave]
    for run, job in jobs:
      if not wait:
        results[run.name] = {"state": "submitted", "job": job.job_id}
        continue
      try:
        results[run.name] = job.result()
      except Exception as e:  # pylint: disable=broad-except  # The job died (killed, no memory).
        results[run.name] = {"state": "failed", "error": f"job {job.job_id}: "
                             f"{str(e).strip().splitlines()[-1] if str(e) else type(e).__name__}"}
  return results


@contextlib.contextmanager
def _claim(run_dir: str) -> Iterator[bool]:
  """Whether this process got the run's claim (an OS lock on `<run_dir>/claim.lock`, released when
  the process ends however it ends): two local launchers started on one sweep (e.g. with the
  methods in opposite orders) share its runs instead of running any twice."""
  fd = os.open(os.path.join(run_dir, CLAIM_FILE), os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      yield False
      return
    yield True
  finally:
    os.close(fd)


def _waves(todo: list[tuple[Run, str]]) -> list[list[tuple[Run, str]]]:
  """`todo` in waves: a run goes one wave after the latest unfinished run it needs."""
  depth: dict[str, int] = {}
  for run, _ in todo:  # Plan order: what a run needs comes before it.
    depth[run.name] = max([depth[other] + 1 for _, other in run.needs if other in depth] + [0])
  waves: list[list[tuple[Run, str]]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
  for run, run_dir in todo:
    waves[depth[run.name]].append((run, run_dir))
  return waves


def _prepare_datasets(runs: list[Run], runs_dir: str) -> None:
  """Opens each dataset the runs read once, before any run starts: datasets built on first use
  (synthetic_av) are built here rather than by concurrent jobs racing to, and a dataset that is not
  built fails the launch with its build command instead of failing every run."""
  from avjax import data, protocol  # pylint: disable=import-outside-toplevel
  seen = set()
  for run in runs:
    config = build_config(run, runs_dir)
    key = config.dataset.to_json()
    if key not in seen:
      seen.add(key)
      data.open_dataset(config.dataset, protocol.dataset_splits(config))


def _export_pythonpath() -> None:
  """Run processes import this avjax checkout (sbatch and subprocesses inherit the environment)."""
  here = checkout()
  paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
  if here not in paths:
    os.environ["PYTHONPATH"] = os.pathsep.join([here] + [p for p in paths if p])


def _run_in_process(run_dir: str) -> dict:
  """`run_one` in a child process (a crash stops that run only); output in <run_dir>/log.txt."""
  with open(os.path.join(run_dir, "log.txt"), "ab") as out:
    code = subprocess.call([sys.executable, "-m", "avjax.sweep", "--run_dir", run_dir],
                           stdout=out, stderr=subprocess.STDOUT)
  status = read_json(os.path.join(run_dir, STATUS_FILE)) or {}
  if code and status.get("state") != "failed":
    status = {"state": "failed", "error": f"exit status {code}; see {run_dir}/log.txt"}
  return status


def format_results(results: dict[str, dict], excluded: dict[str, str]) -> str:
  """One line per run (state, time, error) and per exclusion."""
  lines = []
  for name, status in results.items():
    seconds = f"{status['seconds']:.0f}s" if "seconds" in status else ""
    lines.append(f"{status['state']:9s} {seconds:>6s}  {name}  {status.get('error', '')}".rstrip())
  lines += [f"excluded          {name}: {reason}" for name, reason in excluded.items()]
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  from absl import flags  # pylint: disable=import-outside-toplevel
  from avjax.cli import fail  # pylint: disable=import-outside-toplevel
  f = flags.FLAGS
  if len(argv) > 1:
    fail(f"unexpected arguments {argv[1:]}.")
  logging.getLogger("avjax").setLevel(logging.INFO)
  if f.run_dir:  # A launched run's own process.
    status = run_one(f.run_dir)
    sys.exit(0 if status["state"] == "done" else 1)
  if not flags.FLAGS["config"].present:
    fail("--config is required, e.g. --config configs/sweeps/synthetic.py")
  sweep = f.config
  root = f.root or default_root(sweep)
  try:
    if f.dry_run:
      runs, excluded = plan(sweep, root=root)
      print(format_results({r.name: {"state": "planned"} for r in runs}, excluded))
      return
    results = launch(sweep, root, f.launcher, wait=f.wait,
                     command=" ".join(["python -m avjax.sweep"] + sys.argv[1:]))
  except ConfigError as e:
    fail(str(e))
  plan_info = read_json(os.path.join(root, PLAN_FILE)) or {}
  print(format_results(results, plan_info.get("excluded", {})))
  failed = [n for n, s in results.items() if s["state"] == "failed"]
  print(f"{len(results)} runs in {root}: {len(failed)} failed. Leaderboard: "
        f"python -m avjax.leaderboard {root}")
  if failed:
    sys.exit(1)


def _define_flags() -> None:
  from absl import flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  config_flags.DEFINE_config_file("config", None, "Sweep config (configs/sweeps/*.py).")
  flags.DEFINE_string("root", None, "Sweep directory (default runs/sweeps/<name>).")
  flags.DEFINE_enum("launcher", "local", list(LAUNCHERS), "How runs are started.")
  flags.DEFINE_bool("wait", True, "Wait for submitted jobs and report them.")
  flags.DEFINE_bool("dry_run", False, "Only list the runs and exclusions.")
  flags.DEFINE_string("run_dir", None, "Internal: run the one run described in this directory.")


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  from avjax.cli import parse_flags  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main, flags_parser=parse_flags)
