"""What every avjax command line shares: one-line errors instead of tracebacks."""

from __future__ import annotations

import importlib.util
import logging
import sys
from typing import Any, NoReturn

from absl import app, flags
from ml_collections import config_flags

from avjax.config import method_sections, moved_key_hint, with_method
from avjax.registry import ConfigError


class QuietFirstBuild(logging.Filter):
  """Drops TFDS's warning that a dataset folder has no dataset_info.json: it scans the data
  directory for built variants before the first build writes one (nothing is wrong)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not record.getMessage().endswith("has no dataset_info.json")


logging.getLogger("absl").addFilter(QuietFirstBuild())


def fail(message: str) -> NoReturn:
  """Prints `avjax: error: <message>` and exits with status 2 (bad input)."""
  print(f"avjax: error: {message}", file=sys.stderr)
  sys.exit(2)


HELP_FLAGS = ("-h", "-?", "--help", "--helpshort", "--helpfull")


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing (as `app.run(..., flags_parser=parse_flags)`) that reports a bad flag or
  config override in one line; ml_collections raises AttributeError / KeyError for unknown config
  keys (with a "Did you mean" hint) and embeds a config file's own exception in a traceback text.
  Help (`--help`, `-h`, `--helpfull`) prints the command's docstring and flags and exits 0 (absl's
  own help flag exits 1)."""
  asked = next((a for a in argv[1:] if a in HELP_FLAGS), None)
  if asked:
    app.usage(shorthelp=asked != "--helpfull", writeto_stdout=True, exitcode=0)
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    text = str(e).strip("'\"").replace("\\n", "\n").replace("\\'", "'")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    text = f"{lines[0]} {lines[-1]}" if "Traceback" in text and lines else " ".join(lines)
    if isinstance(e, (AttributeError, KeyError)):
      moved = moved_key_hint(argv)
      if moved:
        fail(moved)
      fail(f"Unknown config key {text}\nCheck the key against the config file (every key is "
           "documented there); `--config.a.b=value` only sets existing keys.")
    fail(text)


def load_config(config_flag: Any) -> Any:
  """The ConfigDict behind a `config_flags.DEFINE_config_file` flag, or a one-line error.

  The config file loads lazily: a missing file only fails when the value is first used. When the
  command line picks another method than the file (`--config.method.name=...`), the file's settings
  for its own method are dropped (those also given on the command line stay): the new method starts
  from its defaults instead of reading another method's values under shared names such as `alpha`.
  """
  flag = flags.FLAGS[config_flag.name]
  if not flag.present:
    fail(f"--{config_flag.name} is required, e.g. --{config_flag.name} configs/demo.py")
  try:
    config = config_flag.value
    _ = config.name
  except OSError as e:
    fail(" ".join(str(e).split()[-12:]).strip() + "\nCheck the --config path.")
  overrides = config_flags.get_override_values(flag)
  if "method.name" in overrides:
    try:
      config = method_from_command_line(config, file_method(flag.config_filename), overrides)
    except ConfigError as e:
      fail(str(e))
  return config


def file_method(filename: str) -> str:
  """config.method.name as the config file `path[:arg]` itself sets it."""
  path, _, arg = filename.partition(":")
  spec = importlib.util.spec_from_file_location("_avjax_config_file", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return (module.get_config(arg) if arg else module.get_config()).method.name


def method_from_command_line(config: Any, file_method_name: str, overrides: dict[str, Any]) -> Any:
  """`config` for the method the command line chose, without the file's settings for another one."""
  name = config.method.name
  if name == file_method_name:
    return config
  given = [k.split(".", 1)[1] for k in overrides if k.startswith("method.") and k != "method.name"]
  switched = with_method(config, name, keep=given)
  sections = method_sections(config)  # Other methods' settings: not the file's method's.
  dropped = {k: v for k, v in config.method.items()
             if k not in switched.method and k not in sections}
  if dropped:
    settings = ", ".join(f"{k}={v!r}" for k, v in sorted(dropped.items()))
    print(f"avjax: method {name!r} from the command line replaces the config file's "
          f"{file_method_name!r}; the file's settings for it ({settings}) are not used.",
          file=sys.stderr)
  return switched
