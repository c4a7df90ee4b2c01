r"""Where a train step's time goes: XLA's per-operation times for one case of benchmark_vs_torch.

  python scripts/profile_step.py --case ogm_ge_cremad --batch 16 [--opt frames=1] [--top 25]
  python scripts/profile_step.py --case vat_small --steps 2 --json profile.json

Runs the case's avjax step (the trainer's jitted step, scripts/vs_torch/<case>.py) under
`jax.profiler.trace`, reads the trace back with `jax.profiler.ProfileData` and prints the compiled
program's operations (XLA thunks: convolutions, fusions, dots, select-and-scatter, ...) by total
time, grouped by kind and one by one. Use it before rewriting anything: on CPU the slow part of a
step is rarely the one the FLOP count suggests.
"""

from __future__ import annotations

import collections
import glob
import os
import re
import sys
import tempfile

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vs_torch  # noqa: E402
from benchlib import json_flag, write_json  # noqa: E402

_CASE = flags.DEFINE_enum("case", "ogm_ge_cremad", list(vs_torch.CASES), "Which step to profile.")
_BATCH = flags.DEFINE_integer("batch", None, "Batch size; default: the case's first.")
_OPT = flags.DEFINE_multi_string("opt", [], "A case option as key=value (repeatable).")
_STEPS = flags.DEFINE_integer("steps", 1, "Profiled steps (after one untimed warm-up step).")
_TOP = flags.DEFINE_integer("top", 25, "How many single operations to list.")
_TINY = flags.DEFINE_bool("tiny", False, "The case's TINY_OPTS (a seconds-long check).")
_JSON = json_flag(flags, "Optional path to write the per-operation times.")

# Trace events that are the runtime's own bookkeeping, not operations of the program.
_RUNTIME = re.compile(r"^(end: |ThreadpoolListener|ThunkExecutor|SlinkyThreadPool|"
                      r"PjitFunction|ParseArguments|PythonRefManager|\$)")


def op_kind(name: str) -> str:
  """'convolution.12' -> 'convolution'; 'loop_add_fusion.3' -> 'loop_add_fusion'."""
  return re.sub(r"(\.\d+)+$", "", name)


def op_times(trace_dir: str) -> dict[str, float]:
  """Total milliseconds per XLA operation in the trace under `trace_dir` (all threads)."""
  from jax.profiler import ProfileData

  times: dict[str, float] = collections.defaultdict(float)
  for path in glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True):
    for plane in ProfileData.from_file(path).planes:
      for line in plane.lines:
        if line.name == "python":
          continue
        for event in line.events:
          if not _RUNTIME.match(event.name) and event.duration_ns:
            times[event.name] += event.duration_ns / 1e6
  return dict(times)


def report(times: dict[str, float], steps: int, top: int) -> str:
  """The per-step table: kinds by total time, then the `top` single operations."""
  total = sum(times.values())
  kinds: dict[str, list[float]] = collections.defaultdict(list)
  for name, ms in times.items():
    kinds[op_kind(name)].append(ms)
  lines = [f"operations' time per step: {total / steps:,.1f} ms (summed over threads)", "",
           f"{'kind':<44} {'count':>5} {'ms/step':>10} {'share':>6}"]
  for kind, mss in sorted(kinds.items(), key=lambda kv: -sum(kv[1])):
    lines.append(f"{kind[:44]:<44} {len(mss):>5} {sum(mss) / steps:>10,.1f} "
                 f"{sum(mss) / total:>6.1%}")
  lines += ["", f"{'operation':<44} {'ms/step':>10} {'share':>6}"]
  for name, ms in sorted(times.items(), key=lambda kv: -kv[1])[:top]:
    lines.append(f"{name[:44]:<44} {ms / steps:>10,.1f} {ms / total:>6.1%}")
  return "\n".join(lines)


def main(argv):
  del argv
  import jax

  case = vs_torch.load(_CASE.value)
  opts = vs_torch.parse_opts(case, _OPT.value)
  if _TINY.value:
    opts.update(case.TINY_OPTS)
  batch = _BATCH.value or (2 if _TINY.value else case.DEFAULT_BATCHES[0])
  step = case.avjax_step(batch, opts)
  jax.block_until_ready(step())  # compilation and the first step stay out of the trace
  trace_dir = tempfile.mkdtemp(prefix="avjax_profile_")
  with jax.profiler.trace(trace_dir):
    for _ in range(_STEPS.value):
      out = step()
    jax.block_until_ready(out)
  times = op_times(trace_dir)
  if not times:
    raise SystemExit(f"the trace in {trace_dir} holds no XLA operations (is this JAX's CPU or GPU "
                     "runtime? other backends name their events differently)")
  print(f"{case.NAME}, batch {batch}, {opts}")
  print(report(times, _STEPS.value, _TOP.value))
  if _JSON.value:
    write_json(_JSON.value, dict(case=case.NAME, batch=batch, opts=opts, steps=_STEPS.value,
                                 ms_per_step={k: v / _STEPS.value for k, v in times.items()}),
               indent=1)


if __name__ == "__main__":
  from avjax import hostmem
  hostmem.reexec_with_tunables()  # The allocator settings avjax.main runs with (avjax/hostmem.py).
  app.run(main)
