"""Linear probes of a trained run's frozen encoders (BalanceBenchmark's `linear_probe` mode).

  python -m avjax.probe --workdir runs/ogm_ge_cremad [--split test] [--checkpoint STEP]

Restores the run's checkpoint read-only (avjax.evaluate.open_run: the best ranked, else the
latest), extracts each example's pooled per-modality features (`ModelOutput.features`: av_resnet's
pooled encoder outputs, VAVL's shared representations, VAT's [CLS] tokens) in evaluation mode
(running BatchNorm statistics, no dropout, the evaluation transform) on the training split and the
evaluation split(s), and fits one softmax regression per modality and one on the fused features
(the concatenation [audio; visual]). Each probe is its own classifier, not a slice of a joint head
(BB scores modalities with slices of its joint probe; see docs/deviations.md).

The fit is deterministic: features standardised with the training split's mean and standard
deviation, weights and bias from zero, `steps` full-batch Adam steps (learning rate `lr`) on the
mean cross-entropy plus `l2` / 2 * |W|^2. Results go to <workdir>/probe.json (probe_<n>.json when
that exists: nothing is overwritten) and a table on stdout.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from avjax.models.outputs import MODALITIES

PROBES = (*MODALITIES, "fused")


def features_fn(task: Any):
  """fn(model, batch) -> per-example pooled features of each modality (B, D_m), the fused
  (B, sum D_m) and the task's class targets 'target' (B,)."""
  from avjax.state import model_inputs  # pylint: disable=import-outside-toplevel

  def fn(model: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    feats = model(model_inputs(batch)).features
    out = {m: feats[m].reshape(feats[m].shape[0], -1).astype(jnp.float32) for m in MODALITIES}
    out["fused"] = jnp.concatenate([out[m] for m in MODALITIES], axis=-1)
    return {**out, "target": task.class_targets(batch)}

  return fn


def fit_softmax_regression(x: jax.Array, y: jax.Array, num_classes: int, *, steps: int = 500,
                           lr: float = 0.01, l2: float = 1e-4) -> tuple[jax.Array, jax.Array]:
  """(W (D, C), b (C,)) minimising mean CE(x W + b, y) + l2 / 2 |W|^2 by `steps` full-batch Adam
  steps from zero. x: (N, D) float, y: (N,) int."""
  params = (jnp.zeros((x.shape[1], num_classes), jnp.float32), jnp.zeros((num_classes,)))
  tx = optax.adam(lr)

  def objective(p):
    w, b = p
    ce = optax.softmax_cross_entropy_with_integer_labels(x @ w + b, y).mean()
    return ce + 0.5 * l2 * jnp.sum(jnp.square(w))

  def body(_, carry):
    p, opt = carry
    updates, opt = tx.update(jax.grad(objective)(p), opt, p)
    return optax.apply_updates(p, updates), opt

  params, _ = jax.lax.fori_loop(0, steps, body, (params, tx.init(params)))
  return params


def standardiser(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mean, std) per feature of the training features (std 1 where constant)."""
  mean, std = train.mean(0), train.std(0)
  return mean, np.where(std > 1e-8, std, 1.0)


def probe_accuracies(features: dict[str, dict[str, np.ndarray]], labels: dict[str, np.ndarray],
                     num_classes: int, *, steps: int, lr: float, l2: float
                     ) -> dict[str, dict[str, float]]:
  """{split: {probe: accuracy}}: each probe fitted on split 'train', scored on every split."""
  fit = jax.jit(fit_softmax_regression, static_argnames=("num_classes", "steps"))
  result: dict[str, dict[str, float]] = {split: {} for split in features}
  for name in PROBES:
    mean, std = standardiser(features["train"][name])
    scale = lambda x: jnp.asarray((x - mean) / std, jnp.float32)
    w, b = fit(scale(features["train"][name]), jnp.asarray(labels["train"], jnp.int32),
               num_classes=num_classes, steps=steps, lr=lr, l2=l2)
    for split, feats in features.items():
      predicted = np.asarray(jnp.argmax(scale(feats[name]) @ w + b, -1))
      result[split][name] = float(np.mean(predicted == labels[split]))
  return result


def probe_workdir(workdir: str, *, split: str | None = None, step: int | None = None,
                  data_dir: str | None = None, steps: int = 500, lr: float = 0.01,
                  l2: float = 1e-4) -> dict[str, Any]:
  """Probes a run (see the module docstring); returns the record probe.json holds."""
  from avjax import data  # pylint: disable=import-outside-toplevel
  from avjax.evaluate import (load_workdir_config, open_run,  # pylint: disable=C0415
                              predict)
  from avjax.registry import ConfigError  # pylint: disable=import-outside-toplevel
  from avjax.steps import make_per_example_fn  # pylint: disable=import-outside-toplevel

  saved = load_workdir_config(workdir)
  train_split = saved.dataset.train_split
  scored = [split] if split else [s for s in (saved.dataset.val_split, saved.dataset.test_split)
                                  if s]
  if not train_split or not scored:
    raise ConfigError("The workdir's config names no train split or no split to score; pass "
                      "--split.")
  splits = list(dict.fromkeys([train_split, *scored]))
  run = open_run(workdir, splits, step=step, data_dir=data_dir)
  config = run.config
  if config.task.name != "classification":
    raise ConfigError(f"the probe fits classifiers; this run's task is {config.task.name!r}.")
  transform = data.make_transform(config.input, train=False, metadata=run.dataset.info.metadata)
  extract = jax.jit(make_per_example_fn(run.exp.graphs, features_fn(run.exp.method.task),
                                        config.input))
  features, labels = {}, {}
  for s in splits:
    source = run.dataset.sources[s]
    out = predict(extract, run.state, source, transform, batch_size=run.batch_size,
                  mesh=run.mesh, num_workers=config.input.num_workers)
    order = np.argsort(out["index"])
    features[s] = {name: out[name][order] for name in PROBES}
    labels[s] = np.asarray(out["target"][order])
  renamed = {("train" if s == train_split else s): f for s, f in features.items()}
  labels = {("train" if s == train_split else s): y for s, y in labels.items()}
  accuracies = probe_accuracies(renamed, labels, run.dataset.num_classes, steps=steps, lr=lr,
                                l2=l2)
  return {"workdir": os.path.abspath(workdir), "checkpoint_step": int(run.step),
          "method": config.method.name, "model": config.model.name,
          "feature_dims": {name: int(renamed["train"][name].shape[1]) for name in PROBES},
          "examples": {s: int(len(y)) for s, y in labels.items()},
          "fit": {"steps": steps, "lr": lr, "l2": l2, "optimizer": "adam, full batch",
                  "standardised": True},
          "accuracy": accuracies}


def format_table(record: dict[str, Any]) -> str:
  """Rows: the splits; columns: the probes (accuracy)."""
  lines = ["split     " + "".join(f"{p:>10}" for p in PROBES)]
  for split, row in record["accuracy"].items():
    lines.append(f"{split:<10}" + "".join(f"{row[p]:>10.4f}" for p in PROBES))
  return "\n".join(lines)


def main() -> None:
  """`python -m avjax.probe`: linear probes of a run's frozen encoders."""
  import logging  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel

  if any(a in ("--help", "-h", "--helpshort") for a in sys.argv[1:]):
    print(__doc__)  # absl's own --help exits with status 1.
    print("Flags: --workdir DIR (required), --split S, --checkpoint STEP, --data_dir D, --steps "
          "500, --lr 0.01, --l2 1e-4.")
    sys.exit(0)

  from absl import app, flags  # pylint: disable=import-outside-toplevel
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel

  from avjax import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  from avjax.cli import fail, parse_flags  # pylint: disable=import-outside-toplevel
  from avjax.data.sources import DatasetNotBuiltError  # pylint: disable=import-outside-toplevel
  from avjax.registry import ConfigError  # pylint: disable=import-outside-toplevel

  flags.DEFINE_string("workdir", None, "Workdir of a trained run (written by avjax.main).")
  flags.DEFINE_string("split", None, "Split to score the probes on besides train (default: the "
                      "config's validation and test splits).")
  flags.DEFINE_integer("checkpoint", None, "Checkpoint step (default: best ranked, else latest).")
  flags.DEFINE_string("data_dir", None, "Override config.dataset.data_dir.")
  flags.DEFINE_integer("steps", 500, "Full-batch Adam steps of each probe's fit.")
  flags.DEFINE_float("lr", 0.01, "Adam learning rate of the fit.")
  flags.DEFINE_float("l2", 1e-4, "L2 penalty on the probe weights.")
  usage = ("usage: python -m avjax.probe --workdir DIR [--split test] [--checkpoint STEP]\n"
           "example: python -m avjax.probe --workdir runs/ogm_ge_cremad --split test")

  def run(argv: list[str]) -> None:
    if len(argv) > 1:
      fail(f"unexpected arguments {argv[1:]}; {usage.splitlines()[0]}")
    f = flags.FLAGS
    if not f.workdir:
      fail(f"--workdir is required; {usage.splitlines()[1]}")
    if not os.path.isdir(f.workdir):
      fail(f"--workdir {f.workdir} does not exist; give a directory written by python -m "
           "avjax.main.")
    if f.steps < 1 or not f.lr > 0 or f.l2 < 0:
      fail("--steps must be >= 1, --lr > 0 and --l2 >= 0.")
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("avjax").setLevel(logging.INFO)
    try:
      record = probe_workdir(f.workdir, split=f.split, step=f.checkpoint, data_dir=f.data_dir,
                             steps=f.steps, lr=f.lr, l2=f.l2)
    except (ConfigError, DatasetNotBuiltError) as e:
      fail(str(e))
    path = workdir_lib.new_probe_file(f.workdir)
    with open(path, "x", encoding="utf-8") as out:  # "x": never overwrites.
      json.dump(record, out, indent=2)
    print(f"{f.workdir}: checkpoint {record['checkpoint_step']}, linear probes (accuracy; fitted "
          f"on train, {f.steps} steps)")
    print(format_table(record))
    print(f"Saved {path}.")

  app.run(run, flags_parser=parse_flags)


if __name__ == "__main__":
  main()
