"""Orbax checkpoints of everything a bit-exact resume needs.

A checkpoint holds the TrainState pytree (parameters, BatchNorm statistics, optimizer state, method
state, step, root RNG key) and a JSON `meta` item with where the data pipeline stands (epoch, batch
within the epoch) plus the validation metrics that rank it. The latest `keep` checkpoints are kept, and
the best one by the chosen validation metric is kept beside them.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any

import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from avjax import workdir


class _QuietReadOnly(logging.Filter):
  """Drops Orbax's warning that a read-only manager's directory is read only (asked for)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Given directory is read only")


logging.getLogger("absl").addFilter(_QuietReadOnly())


def _abandoned_read(error: BaseException | None) -> bool:
  """Whether an exception reported outside any caller is the echo of a damaged checkpoint's failed
  restore: the reads of its other arrays still in flight end after the restore gave up, each
  reporting TensorStore's callback into the closed event loop, or its own read error from a
  coroutine or future nobody awaits any more."""
  if isinstance(error, RuntimeError) and "Event loop is closed" in str(error):
    return True
  return type(error) is Exception and "Encountered error while reading array" in str(error)


class _QuietAbandonedReads(logging.Filter):
  """Drops asyncio's reports of `_abandoned_read` errors ('... exception was never retrieved')."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.exc_info and _abandoned_read(record.exc_info[1]))


logging.getLogger("asyncio").addFilter(_QuietAbandonedReads())


def _drop_abandoned_reads() -> None:
  """Installs (once) a sys.unraisablehook that drops `_abandoned_read` reports: with large arrays
  a damaged checkpoint's restore leaves hundreds of such tracebacks (tens of thousands of stderr
  lines), printed outside the logging module, that bury the one line that matters. Anything
  else goes to the previous hook."""
  previous = sys.unraisablehook
  if getattr(previous, "avjax_abandoned_reads", False):
    return

  def hook(unraisable: Any) -> None:
    if not _abandoned_read(unraisable.exc_value):
      previous(unraisable)

  hook.avjax_abandoned_reads = True
  sys.unraisablehook = hook


class Checkpointer:
  """`<workdir>/checkpoints/<step>/{state,meta}` with latest-N + best-by-metric retention."""

  def __init__(self, directory: str, *, keep: int, best_metric: str, best_mode: str,
               read_only: bool = False):
    """`read_only`: for readers of another run's checkpoints (evaluation, init_from): no saves, no
    deletions, and no clean-up of unfinished `*.orbax-checkpoint-tmp-*` saves, which may belong to
    a run still writing them."""
    self.directory = os.path.abspath(directory)
    self.best_metric = best_metric
    self.best_mode = best_mode
    policy = pp.AnyPreservationPolicy([
        pp.LatestN(n=keep),
        pp.BestN(get_metric_fn=lambda m: m[best_metric], reverse=best_mode == "min", n=1,
                 keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(create=not read_only, preservation_policy=policy,
                                           cleanup_tmp_directories=not read_only,
                                           read_only=read_only,
                                           save_interval_steps=0 if read_only else 1)
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

  def meta(self, step: int) -> dict:
    """A checkpoint's `meta` item alone (epoch, batch in epoch, validation metrics)."""
    return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def restore_latest(self, abstract_state: Any) -> tuple[Any, dict] | None:
    """The newest checkpoint that restores.

    One that does not (truncated or overwritten files, or written by an incompatible model) is
    moved to `<workdir>/checkpoints_unreadable/<step>` (kept for inspection, never deleted, and out
    of the way of the step numbers this run will write again) and the previous one is tried; one
    warning line names the damaged checkpoint(s) and the one restored instead.
    """
    _drop_abandoned_reads()  # Before a restore fails: its echoes start while it fails.
    damaged: list[tuple[int, str, str]] = []  # (step, reason, where it was moved)
    for step in sorted(self.steps(), reverse=True):
      try:
        result = self.restore(step, abstract_state)
      except Exception as e:  # pylint: disable=broad-except
        damaged.append((step, _reason(e), self._set_aside(step)))
        continue
      if damaged:
        self._manager.reload()
        self._report(damaged, f"resuming from the previous checkpoint, step {step}")
      return result
    if damaged:
      self._manager.reload()
      self._report(damaged, "no earlier checkpoint restores: training starts from the beginning")
    return None

  def _report(self, damaged: list[tuple[int, str, str]], outcome: str) -> None:
    steps = ", ".join(str(step) for step, _, _ in damaged)
    moved = ", ".join(where for _, _, where in damaged)
    logging.warning("Checkpoint step %s in %s is damaged or does not fit this model (%s); moved to "
                    "%s; %s.", steps, self.directory, damaged[0][1], moved, outcome)

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


def _reason(error: BaseException) -> str:
  """An Orbax / TensorStore error in one short line (without bound-method reprs and the 'full
  details' dumps TensorStore appends)."""
  text = " ".join(str(error).split())
  text = re.sub(r"<bound method [^>]*>", "", text)
  text = re.split(r"\s*See full TensorStore details", text)[0]
  text = re.sub(r"(reading array) index: \(.*$", r"\1", text)  # Which slice: not telling.
  text = re.sub(r"\s*\(?\s*$", "", text)
  return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) that tell Orbax how to lay out a restored tree."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def init_params_from(source: str, params: Any, key: str = "params"
                     ) -> tuple[Any, dict[str, int]]:
  """Copies parameters from another run's checkpoint into `params` where path and shape agree
  (`key='model_state'`: the model state, e.g. BatchNorm statistics, the same way; none may match).

  `source` is a workdir (its best-ranked checkpoint, else the latest), its `checkpoints/` folder,
  or one `checkpoints/<step>` folder. Used for fine-tuning from pre-training (`config.init_from`):
  heads or projections the new model does not share keep their fresh initialisation.
  Returns the new params and counts {'copied', 'kept_fresh', 'unused'}.
  """
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from avjax.registry import ConfigError  # pylint: disable=import-outside-toplevel
  step_dir = _resolve_step_dir(source)
  try:
    saved = ocp.PyTreeCheckpointer().restore(os.path.join(step_dir, "state")).get(key) or {}
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f"config.init_from={source!r}: cannot read parameters from {step_dir} "
                      f"({type(e).__name__}: {str(e).splitlines()[0][:200]}).") from e
  # Orbax stores each nnx Variable as {'value': array}; the pure-dict target has no such level.
  flat_saved = {p.removesuffix("/value"): x for p, x in _flatten_paths(saved)}
  target = nnx.to_pure_dict(params)
  counts = {"copied": 0, "kept_fresh": 0}

  def pick(path, leaf):
    got = flat_saved.pop(path, None)
    if got is not None and tuple(got.shape) == tuple(leaf.shape):
      counts["copied"] += 1
      return jax.numpy.asarray(got, leaf.dtype)
    counts["kept_fresh"] += 1
    return leaf

  new = jax.tree_util.tree_map_with_path(lambda p, x: pick(_path_str(p), x), target)
  counts["unused"] = len(flat_saved)
  if counts["copied"] == 0 and key == "params":
    raise ConfigError(f"config.init_from={source!r}: no parameter of {step_dir} matches this "
                      "model by name and shape; is it a checkpoint of a related model?")
  nnx.replace_by_pure_dict(params, new)
  return params, counts


def _resolve_step_dir(source: str) -> str:
  from avjax.registry import ConfigError  # pylint: disable=import-outside-toplevel
  source = os.path.abspath(source)
  if os.path.isdir(os.path.join(source, "state")):
    return source
  ckpt_dir = workdir.checkpoints(source)
  ckpt_dir = ckpt_dir if os.path.isdir(ckpt_dir) else source
  steps = sorted(int(n) for n in os.listdir(ckpt_dir) if n.isdigit()) if os.path.isdir(
      ckpt_dir) else []
  if not steps:
    raise ConfigError(f"config.init_from={source!r} holds no checkpoint; give a workdir written "
                      "by `python -m avjax.main`, its checkpoints/ folder or one checkpoint step.")
  checkpointer = Checkpointer(ckpt_dir, keep=len(steps), best_metric="", best_mode="max",
                              read_only=True)
  try:
    ranked = _best_ranked(checkpointer)
  finally:
    checkpointer.close()
  return os.path.join(ckpt_dir, str(ranked if ranked is not None else steps[-1]))


def _best_ranked(checkpointer: Checkpointer) -> int | None:
  """The step the source run's own best_metric ranks best (read from its config.json)."""
  config_path = workdir.config_file(os.path.dirname(checkpointer.directory))
  if not os.path.exists(config_path):
    return None
  train = workdir.read_config_json(config_path).get("train", {})
  checkpointer.best_metric = train.get("best_metric", "")
  checkpointer.best_mode = train.get("best_mode", "max")
  return checkpointer.best_step() if checkpointer.best_metric else None


def _path_str(path: tuple) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def _flatten_paths(tree: Any) -> list[tuple[str, Any]]:
  return [(_path_str(p), x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]]
