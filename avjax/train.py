"""The one training loop: epochs of jitted steps, evaluation, checkpoints, metrics, resume.

Every method and model goes through `train_and_evaluate`; methods change the loss and gradients
(avjax.methods), never this loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from avjax import config as config_lib
from avjax import data, sharding
from avjax import evaluators as evaluators_lib
from avjax import protocol, valuation
from avjax import workdir as workdir_lib
from avjax import writers
from avjax.checkpoint import Checkpointer, abstract_like, init_params_from
from avjax.evaluate import check_best_metric, metric_names, predict
from avjax.methods.base import Contributions, EpochContext, heldout_fold
from avjax.preemption import Preempted, PreemptionWatcher
from avjax.registry import ConfigError
from avjax.steps import (make_eval_step, make_per_example_fn, make_train_step, normalize_inputs,
                         setup)


log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
  """Training produced a non-finite loss or gradient and the policy is to stop."""


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
  (validation metrics when there is no test split). One run at a time holds the workdir."""
  config = config_lib.validate(config)
  sharding.maybe_initialize_distributed(config.mesh)
  with _workdir_lock(workdir):
    return _train_and_evaluate(config, workdir)


@contextlib.contextmanager
def _workdir_lock(workdir: str) -> Iterator[None]:
  """The workdir's lock, taken by process 0 for every process (which agree on the outcome)."""
  if jax.process_count() == 1:
    with workdir_lib.lock(workdir):
      yield
    return
  with contextlib.ExitStack() as stack:
    error = None
    if jax.process_index() == 0:
      try:
        stack.enter_context(workdir_lib.lock(workdir))
      except ConfigError as e:
        error = e
    locked = bool(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
    if error is not None:
      raise error
    if not locked:
      raise workdir_lib.WorkdirBusyError(f"process 0 could not lock {workdir}; its log names the "
                                         "run that holds it.")
    yield


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
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
    # BatchNorm statistics (and any model state) belong with the parameters they were made by.
    model_state, _ = init_params_from(config.init_from, state.model_state, key="model_state")
    state = state.replace(params=params, model_state=model_state, opt_state=exp.tx.init(params),
                          method_state=method.init_state(params))
    log.info("Initialised from %s: %s.", config.init_from, counts)
  state = jax.device_put(state, sharding.replicated(mesh))
  state_sharding = jax.tree.map(lambda x: x.sharding, state)
  train_step = jax.jit(make_train_step(graphs, exp.tx, method, steps_per_epoch), donate_argnums=0,
                       out_shardings=(state_sharding, None))
  evaluators = evaluators_lib.build(config, method.task)
  eval_step = jax.jit(make_eval_step(graphs, config, evaluators, method.predict))

  select_split = protocol.selection_split(config)
  if select_split:  # A misnamed or misdirected best_metric, before anything compiles.
    check_best_metric(tc, metric_names(
        eval_step, lambda p: evaluators_lib.report(evaluators, p), state,
        sources.splits[select_split], data.make_transform(
            config.input, train=False, metadata=dataset.info.metadata),
        batch_size=eval_batch_size, mesh=mesh))
  checkpointer = Checkpointer(workdir_lib.checkpoints(workdir), keep=tc.keep_checkpoints,
                              best_metric=tc.best_metric, best_mode=tc.best_mode)
  start_epoch, start_step, sums = 0, 0, {}
  restored = checkpointer.restore_latest(abstract_like(state))
  if restored is not None:
    state, meta = restored
    start_epoch, start_step = meta["epoch"], meta["step_in_epoch"]
    sums = meta.get("train_sums", {})  # The resumed epoch's train means cover all its steps.
    log.info("Resuming from step %d (%s).", int(state.step),
             _position(start_epoch, start_step, tc.num_epochs))
  writer = writers.MetricWriter(workdir, enabled=is_chief, resume_step=int(
      state.step) if start_epoch < tc.num_epochs else None)
  picture_folders = [workdir_lib.pictures(workdir), workdir_lib.valuation(workdir)]
  writer.pictures(picture_folders, int(state.step), record=False)  # Those already shown.
  if start_epoch < tc.num_epochs:
    writer.text("config", config.to_json(indent=2), int(state.step))
  train_transform = data.make_transform(config.input, train=True, metadata=dataset.info.metadata)
  eval_transform = data.make_transform(config.input, train=False, metadata=dataset.info.metadata)
  def evaluate(split: str, epoch: int, at: Any = None, final: bool = False) -> dict[str, float]:
    """The evaluators over a split at `at` (default: the training state); `epoch`: 0-indexed,
    the epoch just finished (EvalContext.epoch); `final`: the run's final evaluation."""
    at = state if at is None else at
    protocol.warn_if_test_selected(config, f"Evaluation of {split!r} (epoch {epoch + 1})")
    predictions = predict(eval_step, at, sources.splits[split], eval_transform,
                          batch_size=eval_batch_size, mesh=mesh,
                          num_workers=config.input.num_workers, ids=True)
    report = evaluators_lib.report(evaluators, predictions)
    sample = jax.device_get(normalize_inputs(_sample(sources.splits[split], eval_transform),
                                             config.input))
    evaluators_lib.write(evaluators, evaluators_lib.EvalContext(
        split=split, epoch=epoch, step=int(at.step), predictions=predictions, sample=sample,
        apply=lambda fn: fn(nnx.merge(graphs.eval, at.params, at.model_state), sample),
        workdir=workdir, is_chief=is_chief, last_epoch=final or epoch + 1 >= tc.num_epochs))
    writer.pictures(picture_folders, int(at.step))
    return report

  per_example_fns: dict[Any, Any] = {}

  def run(fn, split: str = "train", indices: np.ndarray | None = None,
          variables: tuple[Any, Any] | None = None) -> dict[str, np.ndarray]:
    """EpochContext.run: a per-example function over a split (or some of its examples), on the
    state's model or on `variables` = (params, model_state) of the same structure."""
    source = val_source() if split == "validation" else train_source
    if indices is None:
      indices = (heldout_fold(config.seed, len(source))[1] if split == "heldout"
                 else np.arange(len(source)))
    if fn not in per_example_fns:
      per_example_fns[fn] = jax.jit(make_per_example_fn(graphs, fn, config.input))
    subset = data.Subset(source, np.asarray(indices))
    evaluated = state if variables is None else state.replace(params=variables[0],
                                                               model_state=variables[1])
    out = predict(per_example_fns[fn], evaluated, subset, eval_transform,
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
                        state=state, model=method.model, run=run)

  plans = data.PlanStore(workdir_lib.plans(workdir), enabled=is_chief)

  host_step = int(state.step)  # Counted on the host from here on: no device sync per step.
  compiled = False
  with PreemptionWatcher() as watcher:
    for epoch in range(start_epoch, tc.num_epochs):
      plan = plans.load(epoch)  # Saved at the epoch's start: a resumed epoch replays it.
      if start_step == 0 or plan is None:
        update = method.on_epoch_start(epoch_context(epoch))
        if update.contributions is not None and is_chief:  # Methods return data; files are ours.
          record_contributions(workdir, epoch, int(state.step), update.contributions)
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
      desc = f"epoch {epoch + 1}/{tc.num_epochs}"
      show = tc.progress and is_chief
      if not compiled:  # The first step's time is compilation: the bar's rate starts after it.
        log.info("%s: compiling the train step...", desc)
      bar = None if not compiled else writers.progress_bar(epoch_steps, desc=desc,
                                                           disable=not show, initial=start_step)
      window, ran, timed_from, tic = [], 0, 0, time.perf_counter()
      # (epoch, global step at the epoch's start, its steps): the schedule's fractional epoch.
      position = jnp.asarray([epoch, host_step - start_step, epoch_steps], jnp.int32)
      step_in_epoch, preempted = start_step, False
      for batch in batches:
        state, step_metrics = train_step(state, sharding.to_global(batch, mesh), position)
        window.append(step_metrics)
        host_step += 1
        step_in_epoch += 1
        ran += 1
        if bar is None:  # Compiled now (the call returns once the step is dispatched).
          compiled, timed_from, tic = True, ran, time.perf_counter()
          bar = writers.progress_bar(epoch_steps, desc=desc, disable=not show,
                                     initial=step_in_epoch)
        else:
          bar.update(1)
        at_log = len(window) == tc.log_every_steps
        if at_log:
          logged = _accumulate(sums, _check_finite(window, config, epoch, checkpointer))
          if logged:
            writer.write(host_step, epoch + 1, writers.STEP_SPLIT, logged)
            bar.set_postfix(loss=f"{logged['loss']:.4f}")
          window = []
        # Processes agree on stopping (a collective) at log intervals and epoch ends; alone: always.
        agreed = at_log or step_in_epoch == epoch_steps or jax.process_count() == 1
        preempted = agreed and watcher.requested()
        if preempted and step_in_epoch == epoch_steps:
          break  # The epoch end below evaluates and checkpoints; the stop comes after it.
        periodic = (tc.checkpoint_every_steps and host_step % tc.checkpoint_every_steps == 0
                    and step_in_epoch < epoch_steps)  # The epoch end saves its own.
        if preempted or periodic:
          # Save only good state.
          _accumulate(sums, _check_finite(window, config, epoch, checkpointer))
          window = []
          checkpointer.save(host_step, state, {"epoch": epoch, "step_in_epoch": step_in_epoch,
                                               "train_sums": sums}, None)
        if preempted:
          checkpointer.wait()
          bar.close()
          raise Preempted(f"Stopped by {watcher.reason()} at step {host_step} (epoch {epoch + 1}, "
                          f"batch {step_in_epoch} of {epoch_steps}); checkpoint saved in "
                          f"{checkpointer.directory}. Run the same command again to resume.",
                          by_user=watcher.by_user)
      _accumulate(sums, _check_finite(window, config, epoch, checkpointer))
      if bar is not None:
        bar.close()
      elapsed = time.perf_counter() - tic
      step = host_step
      count = sums.pop("_count", 0)
      train_metrics = {k: v / count for k, v in sums.items()} if count else {}
      sums = {}
      train_metrics["examples_per_sec"] = (ran - timed_from) * tc.batch_size / max(elapsed, 1e-9)
      train_metrics["skipped_steps"] = int(state.skipped_steps)
      writer.write(step, epoch + 1, "train", train_metrics)
      val_metrics = None
      last = epoch + 1 == tc.num_epochs
      if select_split and ((epoch + 1) % tc.eval_every_epochs == 0 or last):
        val_metrics = evaluate(select_split, epoch)
        writer.write(step, epoch + 1, protocol.selection_label(config), val_metrics)
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
        raise Preempted(f"Stopped by {watcher.reason()} at the end of epoch {epoch + 1} (step "
                        f"{step}); checkpoint saved in {checkpointer.directory}. Run the same "
                        "command again to resume.", by_user=watcher.by_user)
      start_step = 0
  checkpointer.wait()

  final = _final_evaluation(config, workdir, checkpointer, writer, evaluate, state,
                            done_before=start_epoch >= tc.num_epochs)
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


def record_contributions(workdir: str, epoch: int, step: int, contributions: Contributions) -> None:
  """Writes the training-set contributions an epoch-start hook returned (methods write no files):
  valuation/train_epoch_<epoch>_step_<step>.csv (epoch: completed epochs) and a summary.jsonl
  row."""
  valuation.write_artifacts(workdir, "train", epoch, step, contributions.predictions,
                            extra=contributions.extra, summary=contributions.summary, plot=False)


def _final_evaluation(config, workdir, checkpointer, writer, evaluate, state, *,
                      done_before: bool) -> dict[str, float]:
  """Evaluates the best checkpoint (else the latest) on the test split (else validation), once:
  a finished run started again has nothing to do unless config.evals changed."""
  tc = config.train
  final_split = config.dataset.test_split or protocol.selection_split(config)
  best = checkpointer.best_step()
  step = best if best is not None else int(state.step)
  epochs_done = f"{min(tc.num_epochs, _epochs_done(checkpointer, int(state.step)))}"
  record = workdir_lib.read_final(workdir)
  evals = json.loads(config.evals.to_json())
  if done_before and (not final_split or (record and record.get("split") == final_split and
                                          record.get("checkpoint_step") == step and
                                          record.get("evals") == evals)):
    log.info("Run complete (%s/%d epochs, best checkpoint %d); nothing to do.", epochs_done,
             tc.num_epochs, step)
    return dict(record["metrics"]) if record else {}
  if not final_split:
    return {}
  if done_before:
    log.info("Training is complete (%s/%d epochs); evaluating checkpoint %d on %r%s.",
             epochs_done, tc.num_epochs, step, final_split,
             " again: config.evals changed" if record and record.get("evals") != evals else "")
  meta_epoch = _epochs_done(checkpointer, step)
  if step != int(state.step):
    state, _ = checkpointer.restore(step, abstract_like(state))
  final = evaluate(final_split, meta_epoch - 1, state, final=True)
  split_name = "test" if config.dataset.test_split else "val"
  writer.write(step, meta_epoch, split_name, dict(
      final, checkpoint_step=step, selected_on=protocol.selected_on(config)))
  if jax.process_index() == 0:
    workdir_lib.write_final(workdir, {"split": final_split, "checkpoint_step": step,
                                      "epoch": meta_epoch, "evals": evals,
                                      "metrics": {k: float(v) for k, v in final.items()}})
  return final


def _epochs_done(checkpointer: Checkpointer, step: int) -> int:
  """The completed epochs a checkpoint records (its `meta['epoch']` at an epoch's end)."""
  return int(checkpointer.meta(step)["epoch"])


def _position(epoch: int, step_in_epoch: int, num_epochs: int) -> str:
  """Where a checkpoint stands, 1-based as the console counts: 'epoch 2/4, batch 5 done' or
  '2/4 epochs done'."""
  if step_in_epoch == 0:
    return f"{epoch}/{num_epochs} epochs done"
  return f"epoch {epoch + 1}/{num_epochs}, batch {step_in_epoch} done"


def _accumulate(sums: dict[str, float], fetched: list[dict]) -> dict[str, float]:
  """Adds fetched step metrics to the epoch's running sums (`_count`: the steps); returns the
  means of `fetched` (what the step-level rows log)."""
  if not fetched:
    return {}
  keys = list(fetched[0])
  for m in fetched:
    for k in keys:
      sums[k] = sums.get(k, 0.0) + float(m[k])
  sums["_count"] = sums.get("_count", 0) + len(fetched)
  return {k: float(np.mean([float(m[k]) for m in fetched])) for k in keys}


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
