"""Device mesh, batch placement and parameter placement.

The batch is sharded over the 'data' axis; parameters and optimizer state are replicated. Axis types
are Auto so XLA propagates shardings (jax.make_mesh defaults to Explicit).
"""

from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from avjax.registry import ConfigError

DATA_AXIS = "data"


def maybe_initialize_distributed(cfg: ml_collections.ConfigDict) -> None:
  """Joins JAX's multi-host runtime when the config or the cluster environment asks for it.

  `mesh.distributed`: 'auto' joins when a coordinator is configured (flags/env, TPU pods, SLURM);
  'on' always; 'off' never.
  """
  mode = cfg.distributed
  if mode == "off":
    return
  env_says = any(k in os.environ for k in ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS",
                                           "TPU_WORKER_HOSTNAMES", "TPU_ACCELERATOR_TYPE",
                                           "MEGASCALE_COORDINATOR_ADDRESS"))
  if mode == "on" or cfg.coordinator_address or (mode == "auto" and env_says):
    kwargs = {}
    if cfg.coordinator_address:
      kwargs = dict(coordinator_address=cfg.coordinator_address,
                    num_processes=cfg.num_processes, process_id=cfg.process_id)
    if not jax.distributed.is_initialized():
      jax.distributed.initialize(**kwargs)


def make_mesh(cfg: ml_collections.ConfigDict) -> Mesh:
  """A 1-D data-parallel mesh over `mesh.data` devices (-1: all)."""
  n = jax.device_count() if cfg.data == -1 else cfg.data
  if n < 1 or n > jax.device_count():
    raise ConfigError(f"mesh.data={cfg.data} but {jax.device_count()} devices are visible; "
                      "use -1 (all devices) or a count <= the device count.")
  return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:n])


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def local_batch_size(global_batch_size: int, mesh: Mesh) -> int:
  """This host's share of the global batch; the global batch must divide over the data axis."""
  n = mesh.shape[DATA_AXIS]
  if global_batch_size % n:
    raise ConfigError(f"Batch size {global_batch_size} does not divide over {n} data-parallel "
                      f"devices; use a multiple of {n}.")
  return global_batch_size // jax.process_count()


def to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles per-host numpy batches into global arrays sharded on 'data'."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
