r"""Sweeps: methods x datasets x fusions x seeds, one run (and workdir) each, under one sweep root.

  python -m avjax.sweep --config configs/sweeps/synthetic.py [--launcher local|slurm|submitit_local]
      [--root DIR] [--dry_run] [--nowait] [--config.seeds=0,1 ...]

A sweep config (configs/sweeps/*.py) names an experiment config every run starts from and what
varies (`plan` reads these keys):

  experiment        'configs/<file>.py[:arg]': the base experiment.
  overrides         nested settings applied to every run (e.g. train.num_epochs, extra evals).
  datasets          {label: nested settings} (e.g. {'debiased': {'dataset': {'config': ...}}}).
  fusions, seeds    tuples.
  methods           entries: method names (e.g. every registered one: METHODS.names()) and
                    variants' labels.
  variants          {label: {'method': name, 'settings': nested settings}}: a method run again
                    under another name: the method's own overrides, then these settings (e.g.
                    'unimodal_audio').
  method_overrides  {entry: nested settings}: that entry's own (e.g. another model or fusion).
  experiments       {entry: 'configs/<file>.py[:arg]'}: an entry's own base experiment (a method
                    that brings its own model and recipe); the overrides still apply.
  needs             {entry: nested settings naming entries}: chained runs. Each setting (e.g.
                    {'init_from': 'unimodal'}, {'method': {'umt': {'teacher_audio': ...}}}) takes
                    the workdir of the named entry's run with the same dataset, fusion and seed;
                    that run goes first, and a run whose dependency did not finish is reported,
                    not started.
  excluded          {entry: reason}: entries a plain sweep cannot run.
  baseline          the method the leaderboard tests the others against.
  description       a line the leaderboard prints under its title (sizes, machine).
  profile           measure parameters, train-step FLOPs, step time and memory (first seed's runs).
  slurm             submitit's executor parameters for --launcher=slurm (timeout_min, nodes, ...).

A run whose config does not validate (a method needing a capability the model lacks, a fusion it
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
import copy
import dataclasses
import fcntl
import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
import traceback
from typing import Any, Iterator

import ml_collections

from avjax.registry import ConfigError, did_you_mean

log = logging.getLogger(__name__)

SPEC_FILE = "sweep_run.json"
STATUS_FILE = "status.json"
PROFILE_FILE = "profile.json"
PLAN_FILE = "sweep.json"
CLAIM_FILE = "claim.lock"
LAUNCHERS = ("local", "slurm", "submitit_local")
# Keys under which overrides may add settings the base config lacks (method sections, evaluators,
# the builder's keyword arguments).
_OPEN_SECTIONS = ("config.method", "config.evals", "config.dataset.build_overrides")


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a sweep: what it trains, and the settings that make it so."""

  dataset: str
  method: str
  fusion: str
  seed: int
  experiment: str  # Absolute 'path.py[:arg]'.
  overrides: tuple  # ((nested settings dict), ...), applied in order.
  label: str = ""  # The sweep entry: the method's name, or a variant's label.
  needs: tuple = ()  # ((setting, run name), ...): settings that take another run's workdir.

  @property
  def entry(self) -> str:
    return self.label or self.method

  @property
  def name(self) -> str:
    return f"{self.dataset}__{self.fusion}__{self.entry}__seed{self.seed}"

  @classmethod
  def from_json(cls, value: dict) -> Run:
    return cls(**{**value, "overrides": tuple(value["overrides"]),
                  "needs": tuple(tuple(n) for n in value.get("needs", ()))})


def load_module(path: str) -> Any:
  """The Python file at `path` as a module (config files and what they share)."""
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path!r} does not exist.")
  spec = importlib.util.spec_from_file_location(f"_avjax_cfg_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_module_config(path_arg: str) -> ml_collections.ConfigDict:
  """`get_config(arg)` of a config file given as 'path.py[:arg]'."""
  path, _, arg = path_arg.partition(":")
  module = load_module(path)
  return module.get_config(arg) if arg else module.get_config()


def apply_overrides(c: ml_collections.ConfigDict, settings: dict, where: str = "config") -> None:
  """Sets nested `settings` on `c`: existing keys only, except under config.method / config.evals
  (method sections, evaluators); a list given for a tuple setting becomes a tuple; an evaluator
  set to None is removed (e.g. the sweep's class evaluators from a pre-training entry)."""
  for key, value in settings.items():
    path = f"{where}.{key}"
    if where == "config.evals" and value is None:
      if key in c:
        with c.unlocked():
          del c[key]
      continue
    open_section = any(path.startswith(section + ".") for section in _OPEN_SECTIONS)
    if key not in c and not open_section:
      from avjax.config import MOVED_KEYS  # pylint: disable=import-outside-toplevel
      moved = MOVED_KEYS.get(path.partition(".")[2])
      raise ConfigError(
          f"sweep setting {path} moved to config.{moved}; update the sweep config (a run planned "
          "before the move: re-launch the sweep, which plans it again)." if moved else
          f"sweep setting {path} is not a config key; check its spelling against avjax/config.py.")
    current = c.get(key)
    if isinstance(value, (dict, ml_collections.ConfigDict)) and (
        current is None or isinstance(current, ml_collections.ConfigDict)):
      if current is None:
        with c.unlocked():
          c[key] = ml_collections.ConfigDict()
      apply_overrides(c[key], dict(value), path)
      continue
    if isinstance(current, tuple) and isinstance(value, list):
      value = tuple(value)
    with c.unlocked():
      c[key] = value


def nested(key: str, value: Any) -> dict:
  """{'a': {'b': value}} for key 'a.b'."""
  for part in reversed(key.split(".")):
    value = {part: value}
  return value


def build_config(run: Run, runs_dir: str) -> ml_collections.ConfigDict:
  """The experiment config of `run` (method settings resolved as `avjax.config.with_method`);
  settings it `needs` point at the other runs' workdirs under `runs_dir`."""
  from avjax.config import with_method  # pylint: disable=import-outside-toplevel
  c = load_module_config(run.experiment)
  for settings in run.overrides:
    apply_overrides(c, settings)
  for key, other in run.needs:
    apply_overrides(c, nested(key, os.path.abspath(os.path.join(runs_dir, other))))
  c = with_method(c, run.method)
  c.seed = run.seed
  c.name = run.name
  c.train.progress = False
  return c


def method_settings_from_configs(pattern: str, methods: list[str], base_dir: str = "."
                                 ) -> dict[str, dict]:
  """{method: {'method': {method: settings}}}: each method's own settings (config.method) from the
  config file `pattern.format(method=...)` where one exists (e.g. configs/{method}_cremad.py), as
  method_overrides: a sweep then runs one common recipe with each method's paper settings."""
  out = {}
  for method in methods:
    path = os.path.join(base_dir, pattern.format(method=method))
    if not os.path.isfile(path):
      continue
    config = load_module_config(path)
    if config.method.name != method:
      continue
    settings = {k: _plain(v) for k, v in config.method.items()
                if k != "name" and not isinstance(v, ml_collections.ConfigDict)}
    out[method] = {"method": {method: settings}}
  return out


def entries(sweep: ml_collections.ConfigDict) -> list[tuple[str, str]]:
  """[(entry, method)] in an order where every entry comes after the entries it `needs`."""
  from avjax.methods import METHODS  # pylint: disable=import-outside-toplevel
  variants = {k: _plain(v) for k, v in sweep.get("variants", {}).items()}
  needs = _needs(sweep)
  # --config.methods=a,b on the command line arrives as the one name 'a,b'.
  labels = [name.strip() for entry in sweep.methods for name in entry.split(",")]
  for label in labels:
    if label not in variants and label not in METHODS.names():
      known = list(METHODS.names()) + list(variants)
      raise ConfigError(f"sweep entry {label!r} is neither a method ({', '.join(METHODS.names())})"
                        f" nor a label in the sweep's `variants`.{did_you_mean(label, known)}")
  for label in labels:
    for other in needs.get(label, {}).values():
      if other not in labels:
        raise ConfigError(f"sweep entry {label!r} needs {other!r}, which is not in `methods`; "
                          "add it there.")
  ordered: list[str] = []

  def visit(label: str, path: tuple[str, ...]) -> None:
    if label in path:
      raise ConfigError(f"sweep `needs` has a cycle: {' -> '.join(path + (label,))}.")
    if label not in ordered:
      for other in needs.get(label, {}).values():
        visit(other, path + (label,))
      ordered.append(label)

  for label in labels:
    visit(label, ())
  return [(label, variants[label]["method"] if label in variants else label) for label in ordered]


def plan(sweep: ml_collections.ConfigDict, base_dir: str = ".", root: str | None = None
         ) -> tuple[list[Run], dict[str, str]]:
  """(runs, {excluded entry or run: reason}): every combination whose config validates, each run
  after the runs it needs. `root` (default runs/sweeps/<name>) places chained runs' workdirs."""
  from avjax.config import validate  # pylint: disable=import-outside-toplevel
  experiments = {k: _experiment_path(v, base_dir) for k, v in sweep.get("experiments", {}).items()}
  experiment = _experiment_path(sweep.experiment, base_dir)
  runs_dir = os.path.join(root or default_root(sweep), "runs")
  excluded = {m: str(r) for m, r in dict(sweep.get("excluded", {})).items()}
  runs: list[Run] = []
  datasets = {k: _plain(v) for k, v in sweep.datasets.items()}
  method_overrides = {k: _plain(v) for k, v in sweep.get("method_overrides", {}).items()}
  variants = {k: _plain(v) for k, v in sweep.get("variants", {}).items()}
  needs = _needs(sweep)
  ordered = entries(sweep)
  for seed in sweep.seeds:
    for dataset, dataset_settings in datasets.items():
      for fusion in sweep.fusions:
        planned: dict[str, str] = {}  # entry -> run name, for this dataset / fusion / seed.
        for label, method in ordered:
          if label in excluded:
            continue
          where = f"{dataset}/{fusion}/{label}"
          missing = [other for other in needs.get(label, {}).values() if other not in planned]
          if missing:
            excluded[where] = f"needs {missing[0]!r}, which is excluded here"
            continue
          run = Run(dataset, method, fusion, int(seed), experiments.get(label, experiment),
                    (_plain(sweep.get("overrides", {})), dataset_settings,
                     {"model": {"fusion": fusion}},
                     # A variant: its method's settings, then its own.
                     *((method_overrides.get(method, {}), variants[label].get("settings", {}))
                       if label in variants else ()),
                     method_overrides.get(label, {})),
                    label=label if label != method else "",
                    needs=tuple((key, planned[other]) for key, other in
                                needs.get(label, {}).items()))
          config = build_config(run, runs_dir)  # A misspelt setting fails here, for every run.
          try:
            validate(config)
          except ConfigError as e:
            if label == sweep.get("baseline", "baseline"):
              raise ConfigError(f"the sweep's baseline run {run.name} does not validate: "
                                f"{e}") from e
            excluded[where] = str(e).splitlines()[0]
            continue
          planned[label] = run.name
          runs.append(run)
  return runs, excluded


def _experiment_path(path_arg: str, base_dir: str) -> str:
  """'configs/x.py[:arg]' as an absolute path (under `base_dir`, else this checkout) with its arg."""
  path, sep, arg = path_arg.partition(":")
  candidates = [os.path.join(base_dir, path), os.path.join(_checkout(), path)]
  path = next((p for p in candidates if os.path.isfile(p)), candidates[0])
  return os.path.abspath(path) + sep + arg


def _needs(sweep: ml_collections.ConfigDict) -> dict[str, dict[str, str]]:
  """{entry: {dotted setting: entry}} from the sweep's nested `needs`."""
  def flatten(value: Any, prefix: str) -> dict[str, str]:
    if isinstance(value, dict):
      return {k: v for key, sub in value.items() for k, v in flatten(sub, f"{prefix}{key}.").items()}
    return {prefix[:-1]: str(value)}
  return {entry: flatten(_plain(settings), "") for entry, settings in sweep.get("needs", {}).items()}


def default_root(sweep: ml_collections.ConfigDict) -> str:
  return os.path.join("runs", "sweeps", sweep.name)


def _plain(value: Any) -> Any:
  """ConfigDicts as nested dicts."""
  return value.to_dict() if isinstance(value, ml_collections.ConfigDict) else copy.deepcopy(value)


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


def _checkout() -> str:
  """The folder holding this avjax package (a checkout's root: configs/ lives there)."""
  return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _export_pythonpath() -> None:
  """Run processes import this avjax checkout (sbatch and subprocesses inherit the environment)."""
  here = _checkout()
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
