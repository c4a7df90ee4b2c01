r"""A sweep's plan: its config's entries x datasets x fusions x seeds as runs, each with the
experiment config it trains (`plan`, `build_config`); the launcher is avjax/sweep.py.

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
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import os
from typing import Any

import ml_collections

from avjax.registry import ConfigError, did_you_mean

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
    settings = {k: plain(v) for k, v in config.method.items()
                if k != "name" and not isinstance(v, ml_collections.ConfigDict)}
    out[method] = {"method": {method: settings}}
  return out


def entries(sweep: ml_collections.ConfigDict) -> list[tuple[str, str]]:
  """[(entry, method)] in an order where every entry comes after the entries it `needs`."""
  from avjax.methods import METHODS  # pylint: disable=import-outside-toplevel
  variants = {k: plain(v) for k, v in sweep.get("variants", {}).items()}
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
  datasets = {k: plain(v) for k, v in sweep.datasets.items()}
  method_overrides = {k: plain(v) for k, v in sweep.get("method_overrides", {}).items()}
  variants = {k: plain(v) for k, v in sweep.get("variants", {}).items()}
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
                    (plain(sweep.get("overrides", {})), dataset_settings,
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
  candidates = [os.path.join(base_dir, path), os.path.join(checkout(), path)]
  path = next((p for p in candidates if os.path.isfile(p)), candidates[0])
  return os.path.abspath(path) + sep + arg


def _needs(sweep: ml_collections.ConfigDict) -> dict[str, dict[str, str]]:
  """{entry: {dotted setting: entry}} from the sweep's nested `needs`."""
  def flatten(value: Any, prefix: str) -> dict[str, str]:
    if isinstance(value, dict):
      return {k: v for key, sub in value.items() for k, v in flatten(sub, f"{prefix}{key}.").items()}
    return {prefix[:-1]: str(value)}
  return {entry: flatten(plain(settings), "") for entry, settings in sweep.get("needs", {}).items()}


def default_root(sweep: ml_collections.ConfigDict) -> str:
  return os.path.join("runs", "sweeps", sweep.name)


def plain(value: Any) -> Any:
  """ConfigDicts as nested dicts."""
  return value.to_dict() if isinstance(value, ml_collections.ConfigDict) else copy.deepcopy(value)


def checkout() -> str:
  """The folder holding this avjax package (a checkout's root: configs/ lives there)."""
  return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
