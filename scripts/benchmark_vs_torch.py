r"""Train-step throughput of avjax against a PyTorch restatement of the reference, in one run.

  python scripts/benchmark_vs_torch.py --case ogm_ge_cremad [--batch 64] [--opt frames=1] \
      [--steps 10] [--warmup 3] [--torch_compile auto|on|off] [--threads N] [--json out.json]
  python scripts/benchmark_vs_torch.py --case all --steps 3 --warmup 1   # every case
  python scripts/benchmark_vs_torch.py --case all --tiny --steps 1 --warmup 1  # does each case run?
  python scripts/benchmark_vs_torch.py --case all --compute_dtype bfloat16      # mixed precision (GPU)

Both sides train the same model on the same input shapes with the same method and optimizer, on
random inputs already in memory (this measures the step, not the input pipeline; see
scripts/benchmark.py and scripts/benchmark_input.py for that):

  * avjax: the trainer's own jitted step (`avjax.steps.setup` + `make_train_step`, donated state)
    on one device.
  * PyTorch: the restatement the parity tests check avjax against (tests/convert/torch_*.py),
    trained the way the reference trains it, in its best setup: channels_last for convolutions, and
    torch.compile where it helps (`auto` tries it and keeps it only if it is faster).

The cases are scripts/vs_torch/<case>.py (ogm_ge_cremad, cmvqvae_cremad, vavl_msp, vat_small); each
says its model, shapes and `--opt key=value` options in its docstring and OPTIONS.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vs_torch  # noqa: E402
from benchlib import json_flag, write_json  # noqa: E402

_CASE = flags.DEFINE_enum("case", "ogm_ge_cremad", ["all", *vs_torch.CASES], "What to compare.")
_BATCH = flags.DEFINE_list("batch", [], "Batch sizes (both sides); default: the case's own.")
_OPT = flags.DEFINE_multi_string("opt", [], "A case option as key=value (repeatable).")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed train steps per side.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps first (compilation included).")
_COMPILE = flags.DEFINE_enum("torch_compile", "auto", ["auto", "on", "off"],
                             "torch.compile the PyTorch step ('auto': keep it only if faster).")
_THREADS = flags.DEFINE_integer("threads", 0, "torch.set_num_threads (0: PyTorch's default).")
_SIDES = flags.DEFINE_list("sides", ["avjax", "torch"], "Which sides to run (avjax, torch).")
_DTYPE = flags.DEFINE_enum("compute_dtype", None, ["float32", "bfloat16"], "Every case's "
                           "compute_dtype (avjax mixed precision; torch.autocast on the PyTorch "
                           "side); default: the case's own (float32).")
_TINY = flags.DEFINE_bool("tiny", False, "Each case's TINY_OPTS at batch 2: checks, not numbers.")
_JSON = json_flag(flags)


def time_steps(step: Callable[[], Any], sync: Callable[[Any], Any], steps: int,
               warmup: int) -> tuple[float, float]:
  """(seconds per step, seconds of the untimed first `warmup` steps): the first include
  compilation; the timed `steps` end in one sync."""
  tic = time.perf_counter()
  out = None
  for _ in range(warmup):
    out = step()
  sync(out)
  first = time.perf_counter() - tic
  tic = time.perf_counter()
  for _ in range(steps):
    out = step()
  sync(out)
  return (time.perf_counter() - tic) / steps, first


def run_case(case: Any, batch: int, opts: dict, device: str) -> dict[str, Any]:
  """Both sides of one case at one batch size; the numbers as a dict."""
  import jax
  import torch

  r: dict[str, Any] = dict(case=case.NAME, batch=batch, opts=opts)
  steps, warmup = _STEPS.value, _WARMUP.value
  if "avjax" in _SIDES.value:
    tic = time.perf_counter()
    step = case.avjax_step(batch, opts)
    setup_s = time.perf_counter() - tic
    r["avjax_s_per_step"], first = time_steps(step, jax.block_until_ready, steps, warmup)
    r["avjax_first_step_s"] = setup_s + first  # Setup, tracing, compilation, `warmup` steps.
    r["avjax_examples_per_s"] = batch / r["avjax_s_per_step"]
    del step
  if "torch" in _SIDES.value:
    sync = lambda x: (torch.cuda.synchronize() if device == "cuda" else None, float(x))
    variants = {"off": [False], "on": [True], "auto": [False, True]}[_COMPILE.value]
    times = {}
    for compile_ in variants:
      step = case.torch_step(batch, opts, compile_, device)
      try:
        times[compile_] = time_steps(step, sync, steps, warmup)[0]
      except Exception as e:  # pylint: disable=broad-except  # torch.compile without a toolchain.
        if _COMPILE.value == "on":
          raise
        print(f"  torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
              "compared without it.")
      del step
    best = min(times, key=times.get)
    r["torch_compile"] = best
    r["torch_s_per_step"] = times[best]
    r["torch_s_per_step_all"] = {("compiled" if k else "eager"): v for k, v in times.items()}
    r["torch_examples_per_s"] = batch / r["torch_s_per_step"]
  if "avjax_examples_per_s" in r and "torch_examples_per_s" in r:
    r["ratio_avjax_over_torch"] = r["avjax_examples_per_s"] / r["torch_examples_per_s"]
  return r


def main(argv: list[str]) -> None:
  del argv
  import jax
  import torch

  if _THREADS.value:
    torch.set_num_threads(_THREADS.value)
  if _STEPS.value < 1 or _WARMUP.value < 1:
    raise app.UsageError("--steps and --warmup must be >= 1 (the first step compiles).")
  unknown = set(_SIDES.value) - {"avjax", "torch"}
  if unknown:
    raise app.UsageError(f"--sides: unknown {sorted(unknown)}; use avjax and/or torch.")
  device = "cuda" if torch.cuda.is_available() else "cpu"
  names = vs_torch.CASES if _CASE.value == "all" else (_CASE.value,)
  machine = dict(jax=jax.__version__, torch=torch.__version__,
                 jax_device=str(jax.devices()[0].device_kind), torch_device=device,
                 torch_threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
                 xla_flags=os.environ.get("XLA_FLAGS", ""),
                 glibc_tunables=os.environ.get("GLIBC_TUNABLES", ""))
  print(f"jax {machine['jax']} on {machine['jax_device']}; torch {machine['torch']} on {device} "
        f"({machine['torch_threads']} threads); {machine['cpu_count']} CPUs; "
        f"GLIBC_TUNABLES={machine['glibc_tunables'] or '(unset)'} (both sides: one process)")
  results = []
  for name in names:
    case = vs_torch.load(name)
    try:
      opts = vs_torch.parse_opts(case, _OPT.value if _CASE.value != "all" else [])
      if _TINY.value:
        opts.update(case.TINY_OPTS)
      if _DTYPE.value:
        opts["compute_dtype"] = _DTYPE.value
      batches = ([int(b) for b in _BATCH.value] or
                 ([2] if _TINY.value else list(case.DEFAULT_BATCHES)))
    except ValueError as e:
      raise app.UsageError(str(e)) from None
    for batch in batches:
      print(f"{name} (batch {batch}): {case.DESCRIPTION}", flush=True)
      r = run_case(case, batch, opts, device)
      results.append(r)
      for side, label in (("avjax", "avjax  "), ("torch", "PyTorch")):
        if f"{side}_examples_per_s" in r:
          extra = (f", first steps {r['avjax_first_step_s']:.1f} s" if side == "avjax" else
                   f", compile={r['torch_compile']}")
          print(f"  {label}: {r[f'{side}_examples_per_s']:9.1f} examples/s "
                f"({1e3 * r[f'{side}_s_per_step']:.1f} ms/step{extra})", flush=True)
      if "ratio_avjax_over_torch" in r:
        print(f"  avjax / PyTorch: {r['ratio_avjax_over_torch']:.2f}x", flush=True)
  if _JSON.value:
    write_json(_JSON.value, {"machine": machine, "results": results}, indent=2)


if __name__ == "__main__":
  from avjax import hostmem
  hostmem.reexec_with_tunables()  # The allocator settings avjax.main runs with (avjax/hostmem.py).
  app.run(main)
