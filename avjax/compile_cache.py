"""JAX's persistent compilation cache for avjax runs.

A resumed run (after preemption, a crash or a finished earlier stage), a re-run of the same config
and the second process of a sweep compile the same train and eval steps again: a minute for the
paper models on CPU. With the cache on, each compiled step is written once to a directory and
loaded from it afterwards (same program, same XLA flags and versions: same executable, so results
stay bit-identical). Entries past `DEFAULT_MAX_BYTES` are evicted least-recently-used first.
"""

from __future__ import annotations

import logging
import os
from typing import Mapping

ENV_DIR = "JAX_COMPILATION_CACHE_DIR"  # JAX's own variable; where set, avjax's default follows it.
DEFAULT_MAX_BYTES = 4 << 30
OFF = ("", "off", "none")

log = logging.getLogger(__name__)


def default_dir(environ: Mapping[str, str] = os.environ) -> str:
  """$JAX_COMPILATION_CACHE_DIR if set, else $XDG_CACHE_HOME/avjax/jax (~/.cache/avjax/jax)."""
  if environ.get(ENV_DIR):
    return environ[ENV_DIR]
  cache_home = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(cache_home, "avjax", "jax")


def enable(path: str, max_bytes: int = DEFAULT_MAX_BYTES) -> str | None:
  """Points JAX's persistent compilation cache at `path` ('off' or '' turns it off).

  Call before the first compilation. Returns the directory in use, or None when off, including
  when the directory cannot be created (a warning then; the run compiles as usual).
  """
  import jax

  if path.lower() in OFF:
    jax.config.update("jax_compilation_cache_dir", None)
    return None
  path = os.path.abspath(os.path.expanduser(path))
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    log.warning("compilation cache off: cannot create %s (%s); pass --compilation_cache=DIR "
                "or --compilation_cache=off", path, e)
    jax.config.update("jax_compilation_cache_dir", None)
    return None
  jax.config.update("jax_compilation_cache_dir", path)
  # A size limit turns on eviction, and with it the file lock that makes concurrent processes safe.
  jax.config.update("jax_compilation_cache_max_size", max_bytes)
  return path
