r"""Runs an experiment: `python -m avjax.main --config configs/X.py[:arg] [--config.key=value ...]`.

  --workdir DIR   where checkpoints, metrics.jsonl, TensorBoard events and plots go
                  (default runs/<config.name>). Re-running with the same workdir resumes.
  --compilation_cache DIR|off
                  JAX's persistent compilation cache (default $JAX_COMPILATION_CACHE_DIR, else
                  ~/.cache/avjax/jax): resumes and re-runs load compiled steps instead of
                  compiling them again.

Bad input (unknown config keys, unknown methods/fusions, impossible combinations, datasets not
built, non-finite losses) ends with one message that says what is wrong and how to fix it.
"""

from __future__ import annotations

import logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from avjax import compile_cache, hostmem
from avjax.cli import fail, load_config, parse_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default runs/<config.name>).")
_CACHE = flags.DEFINE_string("compilation_cache", compile_cache.default_dir(),
                             "JAX's persistent compilation cache directory; 'off' to compile anew.")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    fail(f"unexpected arguments {argv[1:]}; overrides look like --config.train.batch_size=32.")
  config = load_config(_CONFIG)
  absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax/grain chatter; avjax logs at INFO.
  logging.getLogger("avjax").setLevel(logging.INFO)
  import jax  # Heavy imports after flag parsing.
  compile_cache.enable(_CACHE.value)
  from avjax.data.sources import DatasetNotBuiltError
  from avjax.registry import ConfigError
  from avjax.preemption import CTRL_C_EXIT, Preempted
  from avjax.train import NonFiniteLossError, train_and_evaluate
  workdir = _WORKDIR.value or os.path.join("runs", config.name)
  try:
    train_and_evaluate(config, workdir)
  except (ConfigError, DatasetNotBuiltError, NonFiniteLossError) as e:
    fail(str(e))
  except jax.errors.JaxRuntimeError as e:
    if "RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower():
      raise
    from avjax.models import MODELS
    bs, k = config.train.batch_size, config.train.grad_accum_steps
    remat = MODELS.get(config.model.name).remat_key if config.model.name in MODELS else None
    accumulate = config.method.name != "vavl"  # VAVL's three updates per batch do not accumulate.
    fail(f"Out of memory on the device with batch size {bs} ({jax.device_count()} devices). Try "
          f"--config.train.batch_size={max(bs // 2, 1)}"
          + (f" --config.train.grad_accum_steps={2 * k} (same effective batch), " if accumulate
             else ", ")
          + (f"recomputation in the backward pass (--config.{remat}=True), " if remat else "")
          + "--config.train.compute_dtype=bfloat16, fewer or smaller frames "
          "(--config.input.num_frames, --config.input.image_size), or a narrower model. "
          f"XLA said: {str(e).splitlines()[0][:300]}")
  except Preempted as e:  # A clean stop: exit 0 so the scheduler treats it as such; rerun resumes.
    print(f"avjax: {e}", file=sys.stderr)
    if e.by_user:  # Ctrl-C: the shell's status for an interrupted command.
      sys.exit(CTRL_C_EXIT)
  except KeyboardInterrupt:  # Ctrl-C outside the train steps (start-up, final evaluation).
    print("\navjax: interrupted by Ctrl-C outside the train steps; the same command resumes from "
          "the last checkpoint.", file=sys.stderr)
    sys.exit(CTRL_C_EXIT)


if __name__ == "__main__":
  hostmem.reexec_with_tunables()  # Before JAX allocates anything: see avjax/hostmem.py.
  app.run(main, flags_parser=parse_flags)
