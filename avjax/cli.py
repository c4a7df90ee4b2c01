"""What every avjax command line shares: one-line errors instead of tracebacks."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

from absl import flags


def fail(message: str) -> NoReturn:
  """Prints `avjax: error: <message>` and exits with status 2 (bad input)."""
  print(f"avjax: error: {message}", file=sys.stderr)
  sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing (as `app.run(..., flags_parser=parse_flags)`) that reports a bad flag or
  config override in one line; ml_collections raises AttributeError / KeyError for unknown config
  keys (with a "Did you mean" hint) and embeds a config file's own exception in a traceback text."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    text = str(e).strip("'\"").replace("\\n", "\n").replace("\\'", "'")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    text = f"{lines[0]} {lines[-1]}" if "Traceback" in text and lines else " ".join(lines)
    if isinstance(e, (AttributeError, KeyError)):
      fail(f"Unknown config key {text}\nCheck the key against the config file (every key is "
           "documented there); `--config.a.b=value` only sets existing keys.")
    fail(text)


def load_config(config_flag: Any) -> Any:
  """The ConfigDict behind a `config_flags.DEFINE_config_file` flag, or a one-line error.

  The config file loads lazily: a missing file only fails when the value is first used.
  """
  if not flags.FLAGS[config_flag.name].present:
    fail(f"--{config_flag.name} is required, e.g. --{config_flag.name} configs/demo.py")
  try:
    config = config_flag.value
    _ = config.name
  except OSError as e:
    fail(" ".join(str(e).split()[-12:]).strip() + "\nCheck the --config path.")
  return config
