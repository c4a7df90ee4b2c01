"""A run's cost, for the leaderboard: parameters, train-step FLOPs (XLA's cost analysis), the
compiled step's memory (XLA's memory analysis; the device's peak where it reports one) and the
time of a train step on one fixed batch (data loading excluded)."""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from avjax import config as config_lib
from avjax import data, protocol, sharding
from avjax.steps import make_train_step, setup


def cpu_model() -> str:
  """The CPU model name from /proc/cpuinfo (or platform's answer elsewhere)."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.lower().startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown CPU"


def machine() -> str:
  """One line naming where a run ran: CPU, cores, accelerator and JAX version."""
  devices, backend = jax.devices(), jax.default_backend()
  kind = devices[0].device_kind  # 'cpu' on a CPU: named once.
  accelerator = backend if kind.lower() == backend else f"{backend} {kind}"
  return (f"{cpu_model()} ({os.cpu_count()} cores), {len(devices)} x {accelerator}, "
          f"jax {jax.__version__}")


def profile(config: ml_collections.ConfigDict, steps: int = 5) -> dict[str, Any]:
  """{'params', 'train_flops', 'step_ms', 'memory_mib', 'peak_memory_mib' (device stats, None on
  a CPU)} of `config`'s train step on its first training batch."""
  config = config_lib.validate(config)
  mesh = sharding.make_mesh(config.mesh)
  dataset = data.open_dataset(config.dataset, [config.dataset.train_split])
  source = protocol.run_sources(config, dataset.sources).train
  steps_per_epoch = data.steps_per_epoch(len(source), config.train.batch_size)
  exp = setup(config, dataset.num_classes, steps_per_epoch)
  state = jax.device_put(exp.state, sharding.replicated(mesh))
  transform = data.make_transform(config.input, train=True, metadata=dataset.info.metadata)
  plan = data.shuffled_plan(len(source), config.seed, 0)
  batch = sharding.to_global(next(iter(data.train_batches(
      source, plan, transform, seed=config.seed, epoch=0,
      global_batch_size=config.train.batch_size))), mesh)
  position = jnp.asarray([0, 0, steps_per_epoch], jnp.int32)
  step_fn = jax.jit(make_train_step(exp.graphs, exp.tx, exp.method, steps_per_epoch),
                    donate_argnums=0)
  compiled = step_fn.lower(state, batch, position).compile()
  out: dict[str, Any] = {"params": int(sum(np.size(x) for x in jax.tree.leaves(state.params))),
                         "batch_size": config.train.batch_size}
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  out["train_flops"] = float(cost["flops"]) if cost and "flops" in cost else None
  memory = compiled.memory_analysis()
  out["memory_mib"] = None if memory is None else (
      memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
      + memory.temp_size_in_bytes) / 2**20
  state, metrics = compiled(state, batch, position)  # Warm-up.
  jax.block_until_ready(metrics)
  tic = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, batch, position)
  jax.block_until_ready((state, metrics))
  out["step_ms"] = 1e3 * (time.perf_counter() - tic) / steps
  stats = jax.local_devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  out["peak_memory_mib"] = peak / 2**20 if peak else None
  return out
