"""Evaluation over whole splits: fused and per-modality metrics from gathered predictions."""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from avjax import metrics as metrics_lib
from avjax import sharding
from avjax.data import eval_batches
from avjax.data.transforms import ExampleTransform


def gather(tree: Any) -> Any:
  """Global arrays -> full numpy arrays on every host."""
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def predict(eval_step: Callable, state: Any, source: Any, transform: ExampleTransform, *,
            batch_size: int, mesh: Mesh, num_workers: int = 0) -> dict[str, np.ndarray]:
  """Per-example eval outputs over a whole split (padding removed), concatenated on the host."""
  parts: dict[str, list[np.ndarray]] = {}
  for batch in eval_batches(source, transform, global_batch_size=batch_size,
                            num_workers=num_workers):
    out = gather(eval_step(state, sharding.to_global(batch, mesh)))
    for k, v in out.items():
      parts.setdefault(k, []).append(v)
  result = {k: np.concatenate(v) for k, v in parts.items()}
  keep = result.pop("valid") > 0
  return {k: v[keep] for k, v in result.items()}


def classification_report(predictions: dict[str, np.ndarray]) -> dict[str, float]:
  """loss (fused CE), accuracy, macro/weighted F1, and the same per modality (`_audio`, ...)."""
  labels = predictions["label"]
  logits = {"": predictions["logits"]}
  logits.update({k[len("logits_"):]: v for k, v in predictions.items() if k.startswith("logits_")})
  report = metrics_lib.classification_metrics(labels, logits)
  for name, value in logits.items():
    suffix = f"_{name}" if name else ""
    report[f"loss{suffix}"] = _cross_entropy(value, labels)
  return report


def _cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
  logits = logits.astype(np.float64)
  logits = logits - logits.max(-1, keepdims=True)
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  return float(-np.mean(log_probs[np.arange(len(labels)), labels]))
