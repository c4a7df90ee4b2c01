r"""Benchmarks one avjax config: compile times, train-step and input-pipeline throughput, memory.

  python scripts/benchmark.py --config configs/demo.py[:smoke] [--config.key=value ...] \
      [--steps 20] [--warmup 3] [--pipeline_batches 200] [--pipeline_warmup 1] [--json out.json]

Everything is built with avjax's own functions (the trainer's dataset, transforms, model, optimizer,
state, jitted steps and shardings), so the numbers are those of `python -m avjax.main` minus
evaluation, checkpointing and metric logging:

  * compile: `jax.jit(step).lower(...)` and `.compile()` of the train step (as the trainer jits it:
    donated state, replicated state shardings) and of the eval step, timed separately.
  * train step: `--warmup` steps, then `--steps` steps on one fixed global batch already placed on
    the devices; the clock stops after `jax.block_until_ready` on the last step's result, so it
    measures the step, not the input pipeline.
  * input pipeline: `train_batches` alone (numpy batches on the host, no device transfer) with the
    config's `input.num_workers`: the time of `--pipeline_batches` batches beyond
    `--pipeline_warmup` ones, as the difference of two runs read to their end, so start-up and
    grain's read-ahead cancel (see benchmark_pipeline). Per core is examples per CPU-second used
    by this process and its worker processes for those batches.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import time
from typing import Any

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (_timed, benchmark_pipeline, compiled_stats, device_memory,  # noqa: E402
                      exact_plan, json_flag, machine_facts, peak_host_rss_mb, write_json)

from avjax.cli import fail, load_config, parse_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).",
                                          lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 20, "Timed train steps (after --warmup).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed train steps before the timed ones.")
_PIPELINE_BATCHES = flags.DEFINE_integer("pipeline_batches", 200,
                                         "Timed input-pipeline batches (after --pipeline_warmup).")
_PIPELINE_WARMUP = flags.DEFINE_integer("pipeline_warmup", 1,
                                        "Untimed input-pipeline batches first (worker start-up).")
_PIPELINE = flags.DEFINE_bool("pipeline", True, "Measure the input pipeline too.")
_RUN = flags.DEFINE_bool("run", True, "Run the train step (--norun: compile, FLOPs and memory only).")
_PEAK_TFLOPS = flags.DEFINE_float("peak_tflops", 0.0, "The device's peak TFLOP/s in the step's "
                                  "precision (e.g. 989 for bf16 on an H100 SXM): adds model FLOP "
                                  "utilisation to the report.")
_JSON = json_flag(flags)


def run_benchmark(config: Any, *, steps: int, warmup: int, pipeline_batches: int,
                  pipeline_warmup: int = 1, pipeline: bool = True,
                  peak_tflops: float = 0.0, run: bool = True) -> dict[str, Any]:
  """Measures `config` (see the module docstring); returns the numbers as a flat dict."""
  import jax
  import jax.numpy as jnp
  from avjax import config as config_lib
  from avjax import data, sharding
  from avjax.registry import ConfigError
  from avjax import evaluators as evaluators_lib
  from avjax.steps import make_eval_step, make_train_step, setup
  from avjax.train import batch_plan

  if steps < 1 or warmup < 0 or pipeline_batches < 1 or pipeline_warmup < 1:
    raise ConfigError("--steps, --pipeline_batches and --pipeline_warmup must be >= 1 and "
                      "--warmup >= 0.")
  config = config_lib.validate(config)
  sharding.maybe_initialize_distributed(config.mesh)
  mesh = sharding.make_mesh(config.mesh)
  tc, dc = config.train, config.dataset
  eval_split = dc.val_split or dc.test_split or dc.train_split
  r: dict[str, Any] = {"global_batch_size": tc.batch_size, "mesh_data": mesh.shape["data"]}

  dataset, r["dataset_open_s"] = _timed(
      data.open_dataset, dc, sorted({dc.train_split, eval_split}))
  source = dataset.sources[dc.train_split]
  # A split smaller than one batch (a test fixture of a paper config) repeats its examples.
  r["train_examples"] = len(source)
  steps_per_epoch, eval_batch_size = batch_plan(config, max(len(source), tc.batch_size), mesh)

  tic = time.perf_counter()
  exp = setup(config, dataset.num_classes, steps_per_epoch)
  method, graphs, tx = exp.method, exp.graphs, exp.tx
  state = jax.block_until_ready(jax.device_put(exp.state, sharding.replicated(mesh)))
  r["init_s"] = time.perf_counter() - tic
  r["num_params"] = int(sum(x.size for x in jax.tree.leaves(state.params)))
  r["param_mib"] = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state.params)) / 2**20

  # One fixed global batch from the training pipeline, placed on the devices once.
  plan = exact_plan(len(source), config.seed, tc.batch_size)
  metadata = dataset.info.metadata
  train_transform = data.make_transform(config.input, train=True, metadata=metadata)
  host_batch = next(data.train_batches(source, plan, train_transform, seed=config.seed, epoch=0,
                                       global_batch_size=tc.batch_size))
  batch = jax.block_until_ready(sharding.to_global(host_batch, mesh))
  eval_host = next(data.eval_batches(dataset.sources[eval_split],
                                     data.make_transform(config.input, train=False,
                                                         metadata=metadata),
                                     global_batch_size=eval_batch_size))
  eval_batch = jax.block_until_ready(sharding.to_global(eval_host, mesh))
  epoch = jnp.int32(0)

  # Compile, exactly as the trainer jits the steps.
  state_sharding = jax.tree.map(lambda x: x.sharding, state)
  train_jit = jax.jit(make_train_step(graphs, tx, method, steps_per_epoch), donate_argnums=0,
                      out_shardings=(state_sharding, None))
  lowered, r["train_lower_s"] = _timed(train_jit.lower, state, batch, epoch)
  train_step, r["train_compile_s"] = _timed(lowered.compile)
  stats = compiled_stats(train_step)
  r["train_flops"], r["train_memory_mib"] = stats.get("flops"), stats.get("memory_mib")
  evaluators = evaluators_lib.build(config, method.task)
  eval_jit = jax.jit(make_eval_step(graphs, config, evaluators, method.predict))
  eval_lowered, r["eval_lower_s"] = _timed(eval_jit.lower, state, eval_batch)
  _, r["eval_compile_s"] = _timed(eval_lowered.compile)

  if run:
    # Time to first step: from model construction to the first step's result (the eval step's
    # compilation excluded: the trainer compiles it at the first evaluation).
    tic = time.perf_counter()
    state, metrics = train_step(state, batch, epoch)
    jax.block_until_ready(metrics)
    r["first_step_s"] = time.perf_counter() - tic
    r["time_to_first_step_s"] = (r["init_s"] + r["train_lower_s"] + r["train_compile_s"]
                                 + r["first_step_s"])

    # Train-step throughput on the fixed batch; block only at the end of each phase.
    for _ in range(warmup):
      state, metrics = train_step(state, batch, epoch)
    jax.block_until_ready(state)
    tic = time.perf_counter()
    for _ in range(steps):
      state, metrics = train_step(state, batch, epoch)
    jax.block_until_ready((state, metrics))
    elapsed = time.perf_counter() - tic
    r.update(train_steps=steps, train_warmup=warmup, train_seconds=elapsed,
             train_step_ms=1e3 * elapsed / steps,
             train_examples_per_s=steps * tc.batch_size / elapsed,
             final_loss=float(metrics["loss"]))
    if r["train_flops"]:
      r["train_tflops_per_s"] = r["train_flops"] * steps / elapsed / 1e12
      if peak_tflops:
        r["model_flop_utilisation"] = r["train_tflops_per_s"] / peak_tflops
    r["device_memory"] = device_memory(list(mesh.devices.flat))
  del state, batch, eval_batch

  if pipeline:
    r.update(benchmark_pipeline(source, config, pipeline_batches, pipeline_warmup,
                                metadata=metadata))
  r["peak_host_rss_mib"] = peak_host_rss_mb()
  return r


# ---------------------------------------------------------------------------------------------
# Reporting.


def _fmt(value: Any, unit: str = "") -> str:
  if value is None:
    return "n/a"
  if isinstance(value, float):
    text = f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
  elif isinstance(value, int):
    text = f"{value:,}"
  else:
    text = str(value)
  return f"{text} {unit}".rstrip()


def format_report(machine: dict[str, Any], r: dict[str, Any], config: Any,
                  num_workers: int) -> str:
  """The machine facts and a two-column table of the numbers."""
  mem = r.get("device_memory")
  rows = [
      ("config", f"{config.name} (method {config.method.name}, fusion {config.model.fusion}, "
                 f"widths {tuple(config.model.av_resnet.widths)})"),
      ("global batch / data-parallel devices", f"{r['global_batch_size']} / {r['mesh_data']}"),
      ("parameters", f"{_fmt(r['num_params'])} ({_fmt(r['param_mib'], 'MiB')})"),
      ("dataset open (incl. build if missing)", _fmt(r["dataset_open_s"], "s")),
      ("model + state init", _fmt(r["init_s"], "s")),
      ("train step lower", _fmt(r["train_lower_s"], "s")),
      ("train step compile", _fmt(r["train_compile_s"], "s")),
      ("eval step lower", _fmt(r["eval_lower_s"], "s")),
      ("eval step compile", _fmt(r["eval_compile_s"], "s")),
      (f"train step ({r.get('train_steps')} steps after {r.get('train_warmup')} warm-up)",
       _fmt(r.get("train_step_ms"), "ms/step")),
      ("first train step (execution)", _fmt(r.get("first_step_s"), "s")),
      ("time to first step (init + lower + compile + first)",
       _fmt(r.get("time_to_first_step_s"), "s")),
      ("train throughput", _fmt(r.get("train_examples_per_s"), "examples/s")),
      ("train step FLOPs (XLA cost model)", _fmt(r["train_flops"] and r["train_flops"] / 1e9,
                                                  "GFLOP")),
      ("achieved", _fmt(r.get("train_tflops_per_s"), "TFLOP/s")
       + (f" ({100 * r['model_flop_utilisation']:.1f}% of peak)"
          if "model_flop_utilisation" in r else "")),
      ("train step memory (XLA: args + outputs - donated + temps)",
       _fmt(r["train_memory_mib"] and r["train_memory_mib"]["total"], "MiB")),
      ("input pipeline warm-up (start-up)", _fmt(r.get("pipeline_first_batch_s"), "s")),
      (f"input pipeline ({r.get('pipeline_batches')} batches after {r.get('pipeline_warmup')}, "
       f"{num_workers} workers)", _fmt(r.get("pipeline_examples_per_s"), "examples/s")),
      ("input pipeline per core", _fmt(r.get("pipeline_examples_per_s_per_core"),
                                       "examples/CPU-s")),
      ("input pipeline cores busy", _fmt(r.get("pipeline_cores_busy"))),
      ("peak host RSS", _fmt(r["peak_host_rss_mib"], "MiB")),
      ("device memory peak", _fmt(mem.get("peak_mib_in_use") if mem else None, "MiB")),
  ]
  facts = (f"machine: {machine['cpu_model']}, {machine['cpu_cores']} cores "
           f"({machine['cpu_cores_usable']} usable), load average {machine['load_before']} before"
           f" / {machine['load_after']} after\n"
           f"software: python {machine['python']}, jax {machine['jax']}, jaxlib "
           f"{machine['jaxlib']}, flax {machine['flax']}, grain {machine['grain']}\n"
           f"backend: {machine['backend']} ({machine['device_kind']}), {machine['device_count']} "
           f"device(s), {machine['process_count']} process(es), persistent compilation cache "
           f"{machine['compilation_cache_dir'] or 'off'}")
  width = max(len(k) for k, _ in rows)
  line = "-" * (width + 2 + max(len(v) for _, v in rows))
  table = "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
  return f"{facts}\n{line}\n{table}\n{line}"


def _load() -> str:
  return " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    fail(f"unexpected arguments {argv[1:]}; overrides look like --config.train.batch_size=32.")
  config = load_config(_CONFIG)
  if (_STEPS.value < 1 or _WARMUP.value < 0 or _PIPELINE_BATCHES.value < 1
      or _PIPELINE_WARMUP.value < 1):
    fail("--steps, --pipeline_batches and --pipeline_warmup must be >= 1 and --warmup >= 0.")
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("avjax").setLevel(logging.INFO)
  import jax  # Heavy imports after flag parsing.
  from avjax.data.sources import DatasetNotBuiltError
  from avjax.registry import ConfigError
  load_before = _load()
  try:
    results = run_benchmark(config, steps=_STEPS.value, warmup=_WARMUP.value,
                            pipeline_batches=_PIPELINE_BATCHES.value,
                            pipeline_warmup=_PIPELINE_WARMUP.value, pipeline=_PIPELINE.value,
                            peak_tflops=_PEAK_TFLOPS.value, run=_RUN.value)
  except (ConfigError, DatasetNotBuiltError) as e:
    fail(str(e))
  except jax.errors.JaxRuntimeError as e:
    if "RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower():
      raise
    fail(f"Out of memory on the device with batch size {config.train.batch_size}; benchmark a "
         f"smaller one (--config.train.batch_size=...). XLA said: {str(e).splitlines()[0][:300]}")
  machine = dict(machine_facts(), load_before=load_before, load_after=_load())
  if machine["process_count"] > 1 and jax.process_index() != 0:
    return  # One report per run, from the first host.
  print(format_report(machine, results, config, config.input.num_workers))
  if _JSON.value:
    payload = {"command": shlex.join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
               "machine": machine, "config": json.loads(config.to_json()), "results": results}
    write_json(_JSON.value, payload, indent=2, sort_keys=True)


if __name__ == "__main__":
  from avjax import hostmem
  hostmem.reexec_with_tunables()  # The allocator settings avjax.main runs with (avjax/hostmem.py).
  app.run(main, flags_parser=parse_flags)
