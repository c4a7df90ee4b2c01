"""What every avjax command line shares: one-line errors instead of tracebacks."""

from __future__ import annotations

import sys
from typing import NoReturn

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
