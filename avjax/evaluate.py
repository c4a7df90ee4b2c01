"""Evaluation over whole splits: fused and per-modality metrics from gathered predictions.

As a command line, the metrics of a workdir's checkpoint on a split:

  python -m avjax.evaluate --workdir runs/demo                    # best checkpoint, test split
  python -m avjax.evaluate --workdir runs/demo --split validation --checkpoint 64
  python -m avjax.evaluate --workdir runs/demo --predictions /tmp/demo_test.npz
  python -m avjax.evaluate --workdir runs/demo --data_dir /data/tfds   # data moved since
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from avjax import sharding
from avjax.data import eval_batches
from avjax.data.transforms import ExampleTransform
from avjax.registry import ConfigError, did_you_mean


def gather(tree: Any) -> Any:
  """Global arrays -> full numpy arrays on every host."""
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def predict(eval_step: Callable, state: Any, source: Any, transform: ExampleTransform, *,
            batch_size: int, mesh: Mesh, num_workers: int = 0,
            ids: bool = False) -> dict[str, np.ndarray]:
  """Per-example eval outputs over a whole split (padding removed), concatenated on the host.

  `ids`: the result also holds 'id' (N,) str, each example's id in the dataset (its clip name),
  when the dataset's records have one; the ids stay on the host, beside the jitted step.
  """
  parts: dict[str, list[np.ndarray]] = {}
  for batch in eval_batches(source, transform, global_batch_size=batch_size,
                            num_workers=num_workers, ids=ids):
    batch_ids = batch.pop("id", None)
    out = gather(eval_step(state, sharding.to_global(batch, mesh)))
    if batch_ids is not None:
      out["id"] = gather_strings(batch_ids)
    for k, v in out.items():
      parts.setdefault(k, []).append(v)
  result = {k: np.concatenate(v) for k, v in parts.items()}
  keep = result.pop("valid") > 0
  return {k: v[keep] for k, v in result.items()}


def gather_strings(local: np.ndarray) -> np.ndarray:
  """Host-local (B,) str arrays -> (hosts * B,) str, in the host order of `gather`."""
  if jax.process_count() == 1:
    return local
  encoded = [s.encode("utf-8") for s in local.tolist()]
  width = int(np.max(multihost_utils.process_allgather(
      np.int32(max(map(len, encoded), default=0)))))
  codes = np.zeros((len(encoded), max(width, 1)), np.uint8)
  for i, s in enumerate(encoded):
    codes[i, :len(s)] = np.frombuffer(s, np.uint8)
  codes = np.asarray(multihost_utils.process_allgather(codes, tiled=True))
  return np.array([bytes(row).rstrip(b"\0").decode("utf-8") for row in codes], np.str_)


def metric_names(eval_step: Callable, report: Callable, state: Any, source: Any,
                 transform: ExampleTransform, *, batch_size: int, mesh: Mesh) -> list[str] | None:
  """The names `report` gives a split's predictions, known before anything compiles: the eval
  step's output shapes (jax.eval_shape: traced, not compiled) filled with zeros. None when the
  report cannot be made from such stand-ins."""
  batch = next(iter(eval_batches(source, transform, global_batch_size=batch_size)))
  shapes = jax.eval_shape(eval_step, state, sharding.to_global(batch, mesh))
  stand_in = {k: np.zeros(v.shape, v.dtype) for k, v in shapes.items()}
  stand_in.pop("valid")  # Every stand-in example counts.
  try:
    with np.errstate(all="ignore"), warnings.catch_warnings():
      warnings.simplefilter("ignore")
      return sorted(report(stand_in))
  except Exception:  # pylint: disable=broad-except
    return None


# Metric name parts that say which way is better (lower first: 'ccc_loss' is a loss).
_LOWER_BETTER = ("loss", "mse", "mae", "error")
_HIGHER_BETTER = ("accuracy", "f1", "ccc", "pearson", "score", "recall", "precision", "auc")


def check_best_metric(tc: Any, names: list[str] | None) -> None:
  """config.train.best_metric must be a validation metric of this run (`names`; None: unknown),
  and best_mode its better direction when the name says which that is."""
  if names is not None and tc.best_metric not in names:
    raise ConfigError(f"config.train.best_metric={tc.best_metric!r} is not a validation metric of "
                      f"this run.{did_you_mean(tc.best_metric, names)} Its validation metrics: "
                      f"{names}.")
  name = tc.best_metric.lower()
  better = ("min" if any(p in name for p in _LOWER_BETTER) else
            "max" if any(p in name for p in _HIGHER_BETTER) else None)
  if better and tc.best_mode != better:
    raise ConfigError(f"config.train.best_metric={tc.best_metric!r} is better when "
                      f"{'lower' if better == 'min' else 'higher'}, but config.train.best_mode="
                      f"{tc.best_mode!r} keeps the opposite; set "
                      f"--config.train.best_mode={better}.")


# ------------------------------------------------------------------------------------ command line
# python -m avjax.evaluate --workdir DIR [--split test] [--checkpoint STEP] [--data_dir D]
#                          [--predictions out.npz]


def load_workdir_config(workdir: str) -> Any:
  """The ml_collections.ConfigDict a workdir was written with (`<workdir>/config.json`)."""
  from avjax import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  return workdir_lib.read_config(workdir)


@dataclasses.dataclass(frozen=True)
class OpenedRun:
  """A finished (or running) run's checkpoint restored read-only with what built it.

  Attributes:
    config: the workdir's config (config.json, in today's keys).
    step: the restored checkpoint's step.
    dataset: the opened dataset (the splits asked for).
    exp: the method, model graphs and optimizer the config builds (avjax.steps.Setup).
    state: the restored TrainState (replicated over `mesh`).
    mesh: the device mesh.
    batch_size: the evaluation batch size.
  """

  config: Any
  step: int
  dataset: Any
  exp: Any
  state: Any
  mesh: Mesh
  batch_size: int


def open_run(workdir: str, splits: list[str], *, step: int | None = None,
             data_dir: str | None = None) -> OpenedRun:
  """Restores a workdir's checkpoint (`step`; default the best ranked one, else the latest)
  read-only and opens `splits` of its dataset; ConfigError (one line) for a workdir without
  config.json, checkpoints, or a checkpoint its config's model does not fit."""
  import os  # pylint: disable=import-outside-toplevel

  from avjax import data  # pylint: disable=import-outside-toplevel
  from avjax import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  from avjax.checkpoint import Checkpointer, abstract_like  # pylint: disable=import-outside-toplevel
  from avjax.steps import setup  # pylint: disable=import-outside-toplevel

  config = load_workdir_config(workdir)
  if data_dir:
    config.dataset.data_dir = data_dir
  ckpt_dir = workdir_lib.checkpoints(workdir)
  if not os.path.isdir(ckpt_dir):
    raise ConfigError(f"{workdir} has no checkpoints/ directory.")
  tc = config.train
  checkpointer = Checkpointer(ckpt_dir, keep=tc.keep_checkpoints, best_metric=tc.best_metric,
                              best_mode=tc.best_mode, read_only=True)  # A run may be writing.
  try:
    steps = sorted(checkpointer.steps())
    if not steps:
      raise ConfigError(f"{ckpt_dir} holds no checkpoint.")
    if step is None:
      best = checkpointer.best_step()
      step = best if best is not None else steps[-1]
    elif step not in steps:
      raise ConfigError(f"No checkpoint at step {step} in {ckpt_dir}; there are {steps}.")
    sharding.maybe_initialize_distributed(config.mesh)
    mesh = sharding.make_mesh(config.mesh)
    batch_size = tc.eval_batch_size or tc.batch_size
    sharding.local_batch_size(batch_size, mesh)
    dataset = data.open_dataset(config.dataset, list(dict.fromkeys(splits)), split_flag="--split")
    exp = setup(config, dataset.num_classes)
    state = jax.device_put(exp.state, sharding.replicated(mesh))
    try:
      state, _ = checkpointer.restore(step, abstract_like(state))
    except Exception as e:  # pylint: disable=broad-except
      first = str(e).strip().splitlines()[0] if str(e).strip() else ""
      raise ConfigError(f"Checkpoint {ckpt_dir}/{step} does not fit the model the workdir's config "
                        f"builds for {dataset.name} ({dataset.num_classes} classes): "
                        f"{type(e).__name__}: {first[:300]}") from e
  finally:
    checkpointer.close()
  return OpenedRun(config=config, step=step, dataset=dataset, exp=exp, state=state, mesh=mesh,
                   batch_size=batch_size)


def evaluate_workdir(workdir: str, *, split: str | None = None, step: int | None = None,
                     data_dir: str | None = None
                     ) -> tuple[int, str, dict[str, np.ndarray], dict[str, float]]:
  """Restores a workdir's checkpoint (`step`; default the best ranked one, else the latest) and
  predicts a split (default the test split, else validation). Returns (step, split, predictions,
  the method's report of them)."""
  from avjax import data  # pylint: disable=import-outside-toplevel
  from avjax import evaluators as evaluators_lib  # pylint: disable=import-outside-toplevel
  from avjax.registry import ConfigError  # pylint: disable=import-outside-toplevel
  from avjax.steps import make_eval_step  # pylint: disable=import-outside-toplevel

  saved = load_workdir_config(workdir)
  split = split or saved.dataset.test_split or saved.dataset.val_split
  if not split:
    raise ConfigError("The workdir's config names no test or validation split; pass --split.")
  from avjax import protocol  # pylint: disable=import-outside-toplevel
  protocol.warn_if_test_selected(saved, f"Evaluation of {workdir} on {split!r}")
  heldout = split == protocol.HELDOUT  # The seeded validation fold of the training split.
  run = open_run(workdir, [saved.dataset.train_split if heldout else split], step=step,
                 data_dir=data_dir)
  config, method = run.config, run.exp.method
  source = (protocol.run_sources(config, run.dataset.sources).splits[split] if heldout
            else run.dataset.sources[split])
  transform = data.make_transform(config.input, train=False, metadata=run.dataset.info.metadata)
  evaluators = evaluators_lib.build(config, method.task)
  eval_step = jax.jit(make_eval_step(run.exp.graphs, config, evaluators, method.predict))
  predictions = predict(eval_step, run.state, source, transform,
                        batch_size=run.batch_size, mesh=run.mesh,
                        num_workers=config.input.num_workers, ids=True)
  return run.step, split, predictions, evaluators_lib.report(evaluators, predictions)


def format_report(report: dict[str, float]) -> str:
  """Rows fused / audio / visual; columns accuracy, macro_f1, weighted_f1, loss (classification),
  or one `name = value` line per metric for other reports (regression, pre-training)."""
  if "accuracy" not in report:
    return "\n".join(f"{k:<24}{v:>13.4f}" for k, v in sorted(report.items())
                     if isinstance(v, (int, float)))
  columns = [c for c in ("accuracy", "macro_f1", "weighted_f1", "loss") if c in report]
  lines = ["          " + "".join(f"{c:>13}" for c in columns)]
  for row, suffix in (("fused", ""), ("audio", "_audio"), ("visual", "_visual")):
    if f"accuracy{suffix}" in report:
      cells = "".join(f"{report.get(c + suffix, float('nan')):>13.4f}" for c in columns)
      lines.append(f"{row:<10}{cells}")
  return "\n".join(lines)


def main() -> None:
  """`python -m avjax.evaluate`: prints fused, audio-only and visual-only metrics of a workdir."""
  import logging  # pylint: disable=import-outside-toplevel
  import os  # pylint: disable=import-outside-toplevel

  from absl import app, flags  # pylint: disable=import-outside-toplevel
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel

  from avjax.cli import fail, parse_flags  # pylint: disable=import-outside-toplevel

  from avjax.data.sources import DatasetNotBuiltError  # pylint: disable=import-outside-toplevel
  from avjax.registry import ConfigError  # pylint: disable=import-outside-toplevel

  flags.DEFINE_string("workdir", None, "Workdir written by avjax.main or avjax.convert.")
  flags.DEFINE_string("split", None, "Split to evaluate (default: the config's test split).")
  flags.DEFINE_integer("checkpoint", None, "Checkpoint step: a folder name under <workdir>/"
                       "checkpoints/ (default: best ranked, else latest).")
  flags.DEFINE_string("data_dir", None, "Override config.dataset.data_dir.")
  flags.DEFINE_string("predictions", None, "Also save per-example logits, labels, indices and "
                      "example ids (.npz).")

  def run(argv: list[str]) -> None:
    if len(argv) > 1:
      fail(f"unexpected arguments {argv[1:]}; usage: python -m avjax.evaluate --workdir DIR "
           "[--split S] [--checkpoint STEP]")
    f = flags.FLAGS
    if not f.workdir:
      fail("--workdir is required: python -m avjax.evaluate --workdir DIR")
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("avjax").setLevel(logging.INFO)
    out = f.predictions and (f.predictions if f.predictions.endswith(".npz")
                             else f.predictions + ".npz")  # np.savez's own naming.
    if out and os.path.exists(out):
      fail(f"--predictions {out} exists; choose another file (nothing is overwritten).")
    if out and not os.path.isdir(os.path.dirname(os.path.abspath(out))):
      fail(f"--predictions {out}: the folder {os.path.dirname(os.path.abspath(out))} does not "
           "exist; create it first.")
    try:
      step, split, predictions, report = evaluate_workdir(
          f.workdir, split=f.split, step=f.checkpoint, data_dir=f.data_dir)
    except (ConfigError, DatasetNotBuiltError) as e:
      fail(str(e))
    print(f"{f.workdir}: checkpoint {step}, split {split!r}, {len(predictions['index'])} examples")
    print(format_report(report))
    if out:
      np.savez(out, **predictions)
      print(f"Predictions saved in {out}.")

  app.run(run, flags_parser=parse_flags)


if __name__ == "__main__":
  main()
