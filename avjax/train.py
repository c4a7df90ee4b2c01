"""The one training loop: epochs of jitted steps, evaluation, checkpoints, metrics, resume.

Every method and model goes through `train_and_evaluate`; methods change the loss and gradients
(avjax.methods), never this loop.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from avjax import config as config_lib
from avjax import data, sharding
from avjax import evaluators as evaluators_lib
from avjax import protocol
from avjax import workdir as workdir_lib
from avjax import writers
from avjax.checkpoint import Checkpointer, abstract_like, init_params_from
from avjax.evaluate import predict
from avjax.methods.base import EpochContext, heldout_fold
from avjax.preemption import Preempted, PreemptionWatcher
from avjax.registry import ConfigError
from avjax.steps import (make_eval_step, make_per_example_fn, make_train_step, normalize_inputs,
                         setup)


log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
  """Training produced a non-finite loss or gradient and the policy is to stop."""


def _mean_metrics(history: list[dict[str, jax.Array]]) -> dict[str, float]:
  fetched = jax.device_get(history)
  return {k: float(np.mean([h[k] for h in fetched])) for k in fetched[0]}


def batch_plan(config: ml_collections.ConfigDict, train_examples: int,
               mesh: jax.sharding.Mesh) -> tuple[int, int]:
  """(steps per epoch, eval batch size), after checking both batch sizes fit the data and mesh."""
  tc = config.train
  steps_per_epoch = data.steps_per_epoch(train_examples, tc.batch_size)
  if steps_per_epoch == 0:
    raise ConfigError(f"The training split has {train_examples} examples, fewer than one batch "
                      f"of {tc.batch_size}; lower config.train.batch_size.")
  eval_batch_size = tc.eval_batch_size or tc.batch_size
  for batch_size in (tc.batch_size, eval_batch_size):
    sharding.local_batch_size(batch_size, mesh)
  return steps_per_epoch, eval_batch_size


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains (or resumes) the configured experiment in `workdir`; returns the final test metrics
  (validation metrics when there is no test split)."""
  config = config_lib.validate(config)
  sharding.maybe_initialize_distributed(config.mesh)
  mesh = sharding.make_mesh(config.mesh)
  is_chief = jax.process_index() == 0
  tc = config.train
  dataset = data.open_dataset(config.dataset, protocol.dataset_splits(config))
  # The training split (less a held-out validation fold when val_split='heldout') and the splits
  # evaluated, by name (avjax/protocol.py).
  sources = protocol.run_sources(config, dataset.sources)
  train_source = sources.train
  steps_per_epoch, eval_batch_size = batch_plan(config, len(train_source), mesh)
  workdir_lib.check_resume(config, workdir, write=jax.process_index() == 0)

  exp = setup(config, dataset.num_classes, steps_per_epoch)
  method, graphs, state = exp.method, exp.graphs, exp.state
  if config.init_from:
    params, counts = init_params_from(config.init_from, state.params)
    state = state.replace(params=params, opt_state=exp.tx.init(params),
                          method_state=method.init_state(params))
    log.info("Initialised from %s: %s.", config.init_from, counts)
  state = jax.device_put(state, sharding.replicated(mesh))
  state_sharding = jax.tree.map(lambda x: x.sharding, state)
  train_step = jax.jit(make_train_step(graphs, exp.tx, method, steps_per_epoch), donate_argnums=0,
                       out_shardings=(state_sharding, None))
  evaluators = evaluators_lib.build(config, method.task)
  eval_step = jax.jit(make_eval_step(graphs, config, evaluators, method.predict))

  checkpointer = Checkpointer(workdir_lib.checkpoints(workdir), keep=tc.keep_checkpoints,
                              best_metric=tc.best_metric, best_mode=tc.best_mode)
  start_epoch, start_step = 0, 0
  restored = checkpointer.restore_latest(abstract_like(state))
  if restored is not None:
    state, meta = restored
    start_epoch, start_step = meta["epoch"], meta["step_in_epoch"]
    log.info("Resuming from step %d (epoch %d, batch %d).", int(state.step), start_epoch,
                 start_step)
  writer = writers.MetricWriter(workdir, enabled=is_chief)
  train_transform = data.make_transform(config.input, train=True, metadata=dataset.info.metadata)
  eval_transform = data.make_transform(config.input, train=False, metadata=dataset.info.metadata)
  def evaluate(split: str, epoch: int) -> dict[str, float]:
    protocol.warn_if_test_selected(config, f"Evaluation of {split!r} (epoch {epoch + 1})")
    predictions = predict(eval_step, state, sources.splits[split], eval_transform,
                          batch_size=eval_batch_size, mesh=mesh,
                          num_workers=config.input.num_workers)
    report = evaluators_lib.report(evaluators, predictions)
    sample = jax.device_get(normalize_inputs(_sample(sources.splits[split], eval_transform),
                                             config.input))
    evaluators_lib.write(evaluators, evaluators_lib.EvalContext(
        split=split, epoch=epoch, step=int(state.step), predictions=predictions, sample=sample,
        apply=lambda fn: fn(nnx.merge(graphs.eval, state.params, state.model_state), sample),
        workdir=workdir, is_chief=is_chief, last_epoch=epoch + 1 >= tc.num_epochs))
    return report

  per_example_fns: dict[Any, Any] = {}

  def run(fn, split: str = "train", indices: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """EpochContext.run: a per-example function over a split (or some of its examples)."""
    source = val_source() if split == "validation" else train_source
    if indices is None:
      indices = (heldout_fold(config.seed, len(source))[1] if split == "heldout"
                 else np.arange(len(source)))
    if fn not in per_example_fns:
      per_example_fns[fn] = jax.jit(make_per_example_fn(graphs, fn, config.input))
    subset = data.Subset(source, np.asarray(indices))
    out = predict(per_example_fns[fn], state, subset, eval_transform,
                  batch_size=eval_batch_size, mesh=mesh, num_workers=config.input.num_workers)
    out["index"] = np.asarray(indices)[out["index"]]
    return out

  def val_source():
    if not config.dataset.val_split:
      raise ConfigError(f"method {config.method.name!r} runs a pass over the validation split, "
                        "but config.dataset.val_split is empty; set it.")
    return sources.splits[config.dataset.val_split]

  def epoch_context(epoch: int) -> EpochContext:
    return EpochContext(epoch=epoch, seed=config.seed, num_examples=len(train_source),
                        state=state, model=method.model, run=run, workdir=workdir,
                        is_chief=is_chief)

  plans = data.PlanStore(workdir_lib.plans(workdir), enabled=is_chief)

  host_step = int(state.step)  # Counted on the host from here on: no device sync per step.
  with PreemptionWatcher() as watcher:
    for epoch in range(start_epoch, tc.num_epochs):
      plan = plans.load(epoch)  # Saved at the epoch's start: a resumed epoch replays it.
      if start_step == 0 or plan is None:
        update = method.on_epoch_start(epoch_context(epoch))
        # Mid-epoch, the restored checkpoint already holds the state this hook gave the epoch.
        if start_step == 0 and update.method_state is not None:
          state = state.replace(method_state=jax.device_put(
              update.method_state, sharding.replicated(mesh)))
        if plan is None:
          plan = update.plan or data.shuffled_plan(len(train_source), config.seed, epoch)
          plans.save(epoch, plan)
      epoch_steps = data.steps_per_epoch(len(plan.indices), tc.batch_size)
      batches = data.train_batches(train_source, plan, train_transform, seed=config.seed,
                                   epoch=epoch, global_batch_size=tc.batch_size,
                                   start_step=start_step, num_workers=config.input.num_workers)
      bar = writers.progress_bar(epoch_steps, desc=f"epoch {epoch + 1}/{tc.num_epochs}",
                                 disable=not (tc.progress and is_chief), initial=start_step)
      history, window, tic = [], [], time.perf_counter()
      # (epoch, global step at the epoch's start, its steps): the schedule's fractional epoch.
      position = jnp.asarray([epoch, host_step - start_step, epoch_steps], jnp.int32)
      step_in_epoch, preempted = start_step, False
      for batch in batches:
        state, step_metrics = train_step(state, sharding.to_global(batch, mesh), position)
        window.append(step_metrics)
        host_step += 1
        step_in_epoch += 1
        bar.update(1)
        at_log = len(window) == tc.log_every_steps
        if at_log:
          history.extend(_check_finite(window, config, epoch, checkpointer))
          bar.set_postfix(loss=f"{_mean_metrics(window)['loss']:.4f}")
          window = []
        # Processes agree on stopping (a collective) at log intervals and epoch ends; alone: always.
        agreed = at_log or step_in_epoch == epoch_steps or jax.process_count() == 1
        preempted = agreed and watcher.requested()
        if preempted and step_in_epoch == epoch_steps:
          break  # The epoch end below evaluates and checkpoints; the stop comes after it.
        periodic = (tc.checkpoint_every_steps and host_step % tc.checkpoint_every_steps == 0
                    and step_in_epoch < epoch_steps)  # The epoch end saves its own.
        if preempted or periodic:
          history.extend(_check_finite(window, config, epoch, checkpointer))  # Save only good state.
          window = []
          checkpointer.save(host_step, state, {"epoch": epoch, "step_in_epoch": step_in_epoch}, None)
        if preempted:
          checkpointer.wait()
          bar.close()
          raise Preempted(f"Stopped by a preemption signal at step {host_step} (epoch {epoch + 1}, "
                          f"batch {step_in_epoch}); checkpoint saved in {checkpointer.directory}. "
                          "Run the same command again to resume.")
      history.extend(_check_finite(window, config, epoch, checkpointer))
      bar.close()
      elapsed = time.perf_counter() - tic
      step = host_step
      train_metrics = _mean_metrics(history) if history else {}
      train_metrics["examples_per_sec"] = len(history) * tc.batch_size / elapsed
      train_metrics["skipped_steps"] = int(state.skipped_steps)
      writer.write(step, epoch, "train", train_metrics)
      val_metrics = None
      last = epoch + 1 == tc.num_epochs
      select_split = protocol.selection_split(config)
      if select_split and ((epoch + 1) % tc.eval_every_epochs == 0 or last):
        val_metrics = evaluate(select_split, epoch)
        writer.write(step, epoch, protocol.selection_label(config), val_metrics)
        log.info("epoch %d %s: %s", epoch + 1, protocol.selection_label(config),
                 _brief(val_metrics, method.task.columns()))
      # A best_metric no validation metric has would never rank a checkpoint: stop at the first.
      misnamed = val_metrics is not None and tc.best_metric not in val_metrics
      if (((epoch + 1) % tc.checkpoint_every_epochs == 0 or last or preempted or misnamed)
          and step not in checkpointer.steps()):
        checkpointer.save(step, state, {"epoch": epoch + 1, "step_in_epoch": 0}, val_metrics)
      if misnamed:
        checkpointer.wait()
        raise ConfigError(f"config.train.best_metric={tc.best_metric!r} is not a validation metric "
                          f"of this run; use one of {sorted(val_metrics)} (the run resumes from "
                          f"epoch {epoch + 2} with the corrected name).")
      if preempted:
        checkpointer.wait()
        raise Preempted(f"Stopped by a preemption signal at the end of epoch {epoch + 1} (step "
                        f"{step}); checkpoint saved in {checkpointer.directory}. Run the same "
                        "command again to resume.")
      start_step = 0
  checkpointer.wait()

  final = {}
  final_split = config.dataset.test_split or protocol.selection_split(config)
  if final_split:
    best = checkpointer.best_step()
    if best is not None and best != int(state.step):
      state, _ = checkpointer.restore(best, abstract_like(state))
    final = evaluate(final_split, tc.num_epochs - 1)
    split_name = "test" if config.dataset.test_split else "val"
    writer.write(int(state.step), tc.num_epochs - 1, split_name, dict(
        final, checkpoint_step=int(state.step), selected_on=protocol.selected_on(config)))
  checkpointer.close()
  writer.close()
  if is_chief:
    rows = writers.read_metrics(workdir)
    present = lambda names: [k for k in names if any(k in r for r in rows)]
    keys = present(method.task.columns())  # The task's headline metrics.
    print(writers.summary_table(rows, keys=keys))
    plotted = keys + present(method.diagnostics)  # And the method's own, e.g. OGM's coefficients.
    print(f"Plot: {writers.plot_metrics(workdir, keys=plotted or None)}")
  return final


def _check_finite(window: list[dict], config: ml_collections.ConfigDict, epoch: int,
                  checkpointer: Checkpointer) -> list[dict]:
  """Fetches a window of step metrics; under the 'stop' policy, a non-finite step ends the run."""
  if not window:
    return []
  fetched = jax.device_get(window)
  bad = sum(float(m["nonfinite"]) for m in fetched)
  if bad and config.train.nonfinite == "stop":
    checkpointer.wait()
    kept = max(checkpointer.steps(), default=None)
    where = (f"the last good checkpoint (step {kept}) is kept in {checkpointer.directory}"
             if kept is not None else "no checkpoint had been written yet")
    raise NonFiniteLossError(
        f"Non-finite loss or gradients in epoch {epoch + 1} ({int(bad)} step(s) in the last "
        f"window); training stopped and {where}; the bad update was not applied. Lower "
        "config.optimizer.learning_rate, set config.optimizer.grad_clip_norm, check the data, or "
        "set config.train.nonfinite='skip' to skip such steps.")
  return [m for m in fetched if not m["nonfinite"]]


def _sample(source: Any, transform: Any, count: int = 8) -> dict[str, np.ndarray]:
  """The first `count` examples of a split, transformed and stacked (for pictures)."""
  examples = [transform(source[i]) for i in range(min(count, len(source)))]
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def _brief(metrics: dict[str, float], columns: tuple[str, ...]) -> str:
  """The task's headline metrics (the rest are in metrics.jsonl)."""
  return ", ".join(f"{k}={metrics[k]:.4f}" for k in columns if k in metrics)
