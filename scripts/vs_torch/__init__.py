"""Cases of scripts/benchmark_vs_torch.py: one module per model, each with the same two builders.

A case module defines

  NAME: str                   the --case value;
  DESCRIPTION: str            one line: model, input shapes, method, optimizer;
  DEFAULT_BATCHES: tuple      batch sizes measured when --batch is not given;
  avjax_step(batch, opts)     -> zero-argument callable running one avjax train step (the trainer's
                                 jitted step on random inputs already on the device) and returning
                                 something to block on;
  torch_step(batch, opts, compile_, device)
                              -> the same for the PyTorch restatement of the reference, trained the
                                 way the reference trains it (torch.compile applied when compile_).

TINY_OPTS: dict              options for --tiny (batch 2): a short run that checks the case works.

`opts` is a dict of the case's own options (--opt key=value on the command line; each case lists its
keys and defaults in OPTIONS). Framework imports stay inside the builders, so listing the cases is
cheap.
"""

from __future__ import annotations

import importlib
from types import ModuleType

CASES = ("ogm_ge_cremad", "cmvqvae_cremad", "vavl_msp", "vat_small")


def load(name: str) -> ModuleType:
  """The case module `name` (one of CASES)."""
  if name not in CASES:
    raise ValueError(f"Unknown case {name!r}; choose from {', '.join(CASES)}.")
  return importlib.import_module(f"vs_torch.{name}")


def parse_opts(case: ModuleType, pairs: list[str]) -> dict:
  """--opt key=value pairs over the case's OPTIONS defaults, typed like the defaults."""
  opts = dict(case.OPTIONS)
  for pair in pairs:
    key, sep, value = pair.partition("=")
    if not sep or key not in opts:
      raise ValueError(f"--opt {pair!r}: {case.NAME} takes key=value with key in "
                       f"{sorted(opts)}.")
    default = opts[key]
    if isinstance(default, bool):
      opts[key] = value.lower() in ("1", "true", "yes", "on")
    elif isinstance(default, (tuple, list)):
      opts[key] = tuple(type(default[0])(v) for v in value.split(","))
    else:
      opts[key] = type(default)(value)
  return opts
