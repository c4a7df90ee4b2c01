r"""Runs several balancing methods under one config and prints their fused / audio / visual accuracy.

  python scripts/compare_balancing.py --root runs/compare_balancing
  python scripts/compare_balancing.py --config configs/compare_balancing.py:smoke --root /tmp/cmp \
      --methods baseline,ogm_ge --config.train.num_epochs=3

Each method trains through `avjax.train.train_and_evaluate` in its own workdir `<root>/<method>`, with
everything but the method equal (seed, model, data order, number of steps): the config carries every
method's settings and each run keeps only its own (`avjax.config.with_method`). Re-running
resumes / reuses finished runs. The table shows the final test metrics each run wrote to its
metrics.jsonl.
"""

from __future__ import annotations

import os
from typing import Sequence

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from avjax import writers
from avjax.cli import fail, parse_flags
from avjax.config import with_method

DEFAULT_METHODS = ("baseline", "ogm", "ogm_ge", "mmcosine")
COLUMNS = ("accuracy", "accuracy_audio", "accuracy_visual", "macro_f1")


def final_metrics(workdir: str) -> dict[str, float]:
  """The last test (else val) row a run wrote, without the row keys."""
  rows = writers.read_metrics(workdir)
  for split in ("test", "val"):
    picked = [r for r in rows if r.get("split") == split]
    if picked:
      return {k: v for k, v in picked[-1].items() if k not in ("step", "epoch", "split")}
  return {}


def compare(config, root: str, methods: Sequence[str] = DEFAULT_METHODS) -> dict[str, dict]:
  """Trains every method with `config` (the method and its own settings changed) in
  `<root>/<method>`.

  Returns {method: final metrics} (see `final_metrics`).
  """
  from avjax.train import train_and_evaluate
  results = {}
  for method in methods:
    run = with_method(config, method)
    run.name = f"{config.name}_{method}"
    workdir = os.path.join(root, method)
    train_and_evaluate(run, workdir)
    results[method] = final_metrics(workdir)
  return results


def format_table(results: dict[str, dict], columns: Sequence[str] = COLUMNS) -> str:
  """Aligned text table, one line per method."""
  header = ["method", *columns]
  body = [[m, *("-" if r.get(c) is None else f"{r[c]:.4f}" for c in columns)]
          for m, r in results.items()]
  widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
  fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                for i, (c, w) in enumerate(zip(cells, widths)))
  return "\n".join([fmt(header), "  ".join("-" * w for w in widths), *map(fmt, body)])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    fail(f"unexpected arguments {argv[1:]}")
  absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax / grain chatter, as avjax.main.
  from avjax.data.sources import DatasetNotBuiltError  # After flag parsing: heavy imports.
  from avjax.methods import METHODS
  from avjax.registry import ConfigError
  from avjax.train import NonFiniteLossError
  unknown = [m for m in flags.FLAGS.methods if m not in METHODS]
  if unknown:
    fail(f"unknown method(s) {unknown}; known: {METHODS.names()}")
  config = flags.FLAGS.config
  try:
    results = compare(config, flags.FLAGS.root, flags.FLAGS.methods)
  except (ConfigError, DatasetNotBuiltError, NonFiniteLossError) as e:
    fail(str(e))
  print(f"\n{config.dataset.name}/{config.dataset.config}, seed {config.seed}, "
        f"{config.train.num_epochs} epochs; final test metrics:")
  print(format_table(results))


def define_flags() -> None:
  """Command-line flags; defined only when run as a script, so importing `compare` is harmless."""
  config_flags.DEFINE_config_file(
      "config", os.path.join(os.path.dirname(__file__), "..", "configs", "compare_balancing.py"),
      "Shared experiment config (configs/compare_balancing.py).", lock_config=True)
  flags.DEFINE_string("root", "runs/compare_balancing", "One workdir per method under here.")
  flags.DEFINE_list("methods", list(DEFAULT_METHODS), "Methods to run, in table order.")


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=parse_flags)
