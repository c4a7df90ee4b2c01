r"""Runs an experiment: `python -m avjax.main --config configs/X.py[:arg] [--config.key=value ...]`.

  --workdir DIR   where checkpoints, metrics.jsonl, TensorBoard events and plots go
                  (default runs/<config.name>). Re-running with the same workdir resumes.

Bad input (unknown config keys, unknown methods/fusions, impossible combinations, datasets not
built, non-finite losses) ends with one message that says what is wrong and how to fix it.
"""

from __future__ import annotations

import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default runs/<config.name>).")


def _fail(message: str) -> None:
  print(f"avjax: error: {message}", file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing that reports bad overrides in one line instead of a traceback."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    cause = e.__cause__ or e.__context__ or e
    text = str(cause).strip("'\"").replace("\\n", " ").replace("\\'", "'")
    _fail(f"{text.splitlines()[0] if text else e}\n"
          "Check the key against the config file (every key is documented there); "
          "`--config.a.b=value` only sets existing keys.")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    _fail(f"unexpected arguments {argv[1:]}; overrides look like --config.train.batch_size=32.")
  if _CONFIG.value is None:
    _fail("--config is required, e.g. --config configs/demo.py")
  logging.getLogger().setLevel(logging.INFO)
  from avjax.data.sources import DatasetNotBuiltError  # Heavy imports after flag parsing.
  from avjax.registry import ConfigError
  from avjax.train import NonFiniteLossError, train_and_evaluate
  config = _CONFIG.value
  workdir = _WORKDIR.value or os.path.join("runs", config.name)
  try:
    train_and_evaluate(config, workdir)
  except (ConfigError, DatasetNotBuiltError, NonFiniteLossError) as e:
    _fail(str(e))


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
