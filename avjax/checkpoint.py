"""Orbax checkpoints of everything a bit-exact resume needs.

A checkpoint holds the TrainState pytree (parameters, BatchNorm statistics, optimizer state, method
state, step, root RNG key) and a JSON `meta` item with where the data pipeline stands (epoch, batch
within the epoch) plus the validation metrics that rank it. The latest `keep` checkpoints are kept, and
the best one by the chosen validation metric is kept beside them.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp


class Checkpointer:
  """`<workdir>/checkpoints/<step>/{state,meta}` with latest-N + best-by-metric retention."""

  def __init__(self, directory: str, *, keep: int, best_metric: str, best_mode: str):
    self.directory = os.path.abspath(directory)
    self.best_metric = best_metric
    self.best_mode = best_mode
    policy = pp.AnyPreservationPolicy([
        pp.LatestN(n=keep),
        pp.BestN(get_metric_fn=lambda m: m[best_metric], reverse=best_mode == "min", n=1,
                 keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(create=True, preservation_policy=policy,
                                           cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "meta"))

  def save(self, step: int, state: Any, meta: dict, metrics: dict[str, float] | None) -> None:
    """Saves asynchronously; `metrics` (validation) rank it for best-checkpoint retention."""
    ranked = metrics if metrics and self.best_metric in metrics else None
    meta = dict(meta, metrics=metrics or {})
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     meta=ocp.args.JsonSave(meta)),
                       metrics=ranked)

  def steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    restored = self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                      meta=ocp.args.JsonRestore()))
    return restored["state"], restored["meta"]

  def restore_latest(self, abstract_state: Any) -> tuple[Any, dict] | None:
    """The newest checkpoint that restores.

    One that does not (truncated files, or written by an incompatible model) is reported, moved to
    `<workdir>/checkpoints_unreadable/<step>` (kept for inspection, never deleted, and out of the
    way of the step numbers this run will write again) and the previous one is tried.
    """
    moved = False
    for step in sorted(self.steps(), reverse=True):
      try:
        result = self.restore(step, abstract_state)
      except Exception as e:  # pylint: disable=broad-except
        target = self._set_aside(step)
        moved = True
        logging.warning("Checkpoint %s/%d cannot be restored (%s: %s). It was moved to %s and the "
                        "previous checkpoint is tried.", self.directory, step, type(e).__name__,
                        str(e).splitlines()[0][:300], target)
        continue
      if moved:
        self._manager.reload()
      return result
    if moved:
      self._manager.reload()
    return None

  def _set_aside(self, step: int) -> str:
    target_dir = self.directory + "_unreadable"
    target = os.path.join(target_dir, f"{step}")
    if jax.process_index() == 0:
      os.makedirs(target_dir, exist_ok=True)
      while os.path.exists(target):
        target += "_"
      os.rename(os.path.join(self.directory, str(step)), target)
    multihost_utils.sync_global_devices(f"avjax_set_aside_{step}")
    return target

  def best_step(self) -> int | None:
    """The step with the best ranked validation metric, or None when none was ranked."""
    best, best_value = None, None
    for step in self.steps():
      try:
        meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
      except Exception:  # pylint: disable=broad-except
        continue
      value = meta["meta"].get("metrics", {}).get(self.best_metric)
      if value is None:
        continue
      better = best_value is None or (value > best_value if self.best_mode == "max"
                                      else value < best_value)
      if better:
        best, best_value = step, value
    return best

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) that tell Orbax how to lay out a restored tree."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
