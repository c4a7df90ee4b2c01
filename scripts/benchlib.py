"""Measurement helpers shared by the benchmark scripts (no flags: importable from any script).

Machine facts, CPU-time accounting of a process and its grain workers, peak memory, and the input
pipeline measurement (see benchmark_pipeline for why it is the difference of two complete runs).
"""

from __future__ import annotations

import importlib.util
import math
import os
import platform
import resource
import sys
import time
from typing import Any, Callable, Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def json_flag(flags_module: Any,
              help_text: str = "Optional path to write the numbers as JSON.") -> Any:
  """A --json output flag that refuses an existing file when parsed (results are never
  overwritten), before anything runs."""
  holder = flags_module.DEFINE_string("json", None, help_text)
  flags_module.register_validator(
      "json", lambda path: path is None or not os.path.exists(path),
      message="that file exists; results are never overwritten: choose another path.")
  return holder


def write_json(path: str, payload: Any, **dump_kwargs: Any) -> None:
  """Writes `payload` to `path` (folders created) through a temporary file, so an interrupted write
  leaves no half file."""
  import json  # pylint: disable=import-outside-toplevel
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(payload, f, **dump_kwargs)
  os.replace(tmp, path)
  print(f"Wrote {path}")


def load_config(name: str, arg: str | None = None) -> Any:
  """configs/<name>.py's get_config(arg), without the config-file flag machinery."""
  path = os.path.join(ROOT, "configs", f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"avjax_config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


# ---------------------------------------------------------------------------------------------
# Machine facts and resource accounting.


from avjax.sweep_profile import cpu_model  # noqa: E402  # pylint: disable=wrong-import-position


def machine_facts() -> dict[str, Any]:
  """CPU, cores, library versions and the JAX backend/devices this run sees."""
  import flax
  import grain
  import jax
  import jaxlib
  devices = jax.devices()
  return {
      "cpu_model": cpu_model(),
      "cpu_cores": os.cpu_count(),
      "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                          else os.cpu_count(),
      "python": platform.python_version(),
      "jax": jax.__version__,
      "jaxlib": jaxlib.__version__,
      "flax": flax.__version__,
      "grain": getattr(grain, "__version__", "unknown"),
      "backend": jax.default_backend(),
      "device_kind": devices[0].device_kind,
      "device_count": jax.device_count(),
      "process_count": jax.process_count(),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "compilation_cache_dir": jax.config.jax_compilation_cache_dir,  # Set: compiles may hit it.
  }


def _proc_children_cpu_seconds(root: int) -> float:
  """CPU seconds of all live descendants of `root` (user + system, their reaped children too)."""
  tick = os.sysconf("SC_CLK_TCK")
  children: dict[int, list[int]] = {}
  cpu: dict[int, float] = {}
  for name in os.listdir("/proc"):
    if not name.isdigit():
      continue
    try:
      with open(f"/proc/{name}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
      continue  # The process ended while we looked.
    pid = int(name)
    children.setdefault(int(fields[1]), []).append(pid)  # fields[0] is stat field 3 (state).
    cpu[pid] = sum(int(x) for x in fields[11:15]) / tick  # utime, stime, cutime, cstime.
  total, frontier = 0.0, [root]
  while frontier:
    for child in children.get(frontier.pop(), []):
      total += cpu[child]
      frontier.append(child)
  return total


def cpu_seconds(self_last: bool = True) -> float | None:
  """CPU seconds used so far by this process (all threads) and its child processes, live (from
  /proc) or ended and reaped (getrusage).

  `self_last` reads this process's time after scanning /proc (use at the start of a window, and
  False at its end), so the scan's own cost stays outside the window.
  """
  if not os.path.isdir("/proc"):
    return None
  reaped = lambda: sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2])
  if self_last:
    children = _proc_children_cpu_seconds(os.getpid()) + reaped()
    return children + time.process_time()
  own = time.process_time()
  return own + reaped() + _proc_children_cpu_seconds(os.getpid())


def peak_host_rss_mb() -> float:
  """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def device_memory(devices: list[Any]) -> dict[str, float] | None:
  """Peak and current bytes in use (max over devices) in MiB, or None where the backend has no
  memory stats (CPU)."""
  stats = [d.memory_stats() for d in devices]
  if not stats or any(s is None for s in stats):
    return None
  out = {}
  for key in ("peak_bytes_in_use", "bytes_in_use", "bytes_limit"):
    values = [s[key] for s in stats if key in s]
    if values:
      out[key.replace("bytes", "mib")] = max(values) / 2**20
  return out or None


def compiled_stats(compiled: Any) -> dict[str, Any]:
  """XLA's own accounting of a compiled step: FLOPs per call (its cost model, summed over the
  program) and the buffer sizes the program needs on one device, in MiB. `memory_total_mib` =
  arguments + outputs - donated (aliased) + temporaries: what one step needs resident at its peak,
  known before running it (and on CPU, where devices report no memory stats)."""
  out: dict[str, Any] = {}
  try:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    out["flops"] = float(cost["flops"]) if cost and "flops" in cost else None
  except Exception:  # pylint: disable=broad-except  # Backends without a cost model.
    out["flops"] = None
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    m = None
  if m is not None:
    mib = lambda b: b / 2**20
    out["memory_mib"] = {
        "arguments": mib(m.argument_size_in_bytes), "outputs": mib(m.output_size_in_bytes),
        "aliased": mib(m.alias_size_in_bytes), "temporaries": mib(m.temp_size_in_bytes),
        "total": mib(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
                     + m.temp_size_in_bytes)}
  return out


# ---------------------------------------------------------------------------------------------
# The measurements.


def exact_plan(num_examples: int, seed: int, length: int) -> Any:
  """The first `length` visits of consecutive epochs' shuffled plans: one iterator (one set of
  workers) for a run of any length, which ends exactly at its last batch."""
  import numpy as np
  from avjax import data
  epochs = max(1, math.ceil(length / num_examples))
  return data.EpochPlan(np.concatenate(
      [data.shuffled_plan(num_examples, seed, e).indices for e in range(epochs)])[:length])


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
  tic = time.perf_counter()
  out = fn(*args)
  return out, time.perf_counter() - tic


def _pipeline_run(source: Any, config: Any, num_batches: int,
                  metadata: Any = None) -> dict[str, float]:
  """One `train_batches` iterator over a plan of exactly `num_batches` batches, read to its last
  batch: wall seconds to the first and the last batch, and CPU seconds used by then."""
  from avjax import data
  tc = config.train
  plan = exact_plan(len(source), config.seed, num_batches * tc.batch_size)
  transform = data.make_transform(config.input, train=True, metadata=metadata)
  cpu0, tic = cpu_seconds(), time.perf_counter()
  batches: Iterator = data.train_batches(source, plan, transform, seed=config.seed, epoch=0,
                                         global_batch_size=tc.batch_size,
                                         num_workers=config.input.num_workers)
  local = len(next(iter(next(batches).values())))
  first = time.perf_counter() - tic
  for _ in range(num_batches - 1):
    next(batches)
  wall = time.perf_counter() - tic
  cpu1 = cpu_seconds(self_last=False)  # Before the workers exit.
  del batches
  cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
  return {"first": first, "wall": wall, "cpu": cpu, "local": local}


def benchmark_pipeline(source: Any, config: Any, num_batches: int, warmup: int = 1,
                       metadata: Any = None) -> dict[str, float]:
  """Examples/s of `train_batches` alone for `num_batches` batches beyond `warmup` ones, and
  examples per CPU-second (this process and its workers).

  grain reads ahead (16 threads per process, deep buffers), so a window opened after a warm-up
  batch would count batches finished before it, and one closed early would count work not done
  yet. Instead each run reads a plan of exactly its length to the end, and the timed batches are
  the difference of two runs: (warmup + num_batches) batches minus `warmup` batches; start-up
  (worker processes, first reads) cancels. A first untimed run pays one-off costs (file opening,
  page cache).
  """
  _pipeline_run(source, config, warmup, metadata)
  long = _pipeline_run(source, config, warmup + num_batches, metadata)
  short = _pipeline_run(source, config, warmup, metadata)
  seconds = long["wall"] - short["wall"]
  examples = num_batches * long["local"]
  result = {"pipeline_batches": num_batches, "pipeline_warmup": warmup,
            "pipeline_local_batch_size": long["local"], "pipeline_first_batch_s": short["first"],
            "pipeline_seconds": seconds,
            "pipeline_examples_per_s": examples / seconds if seconds > 0 else None}
  if long["cpu"] is not None and short["cpu"] is not None and long["cpu"] > short["cpu"]:
    used = long["cpu"] - short["cpu"]
    result.update(pipeline_cpu_seconds=used,
                  pipeline_cores_busy=used / seconds if seconds > 0 else None,
                  pipeline_examples_per_s_per_core=examples / used)
  return result
