"""Robustness to imperfect modalities, MultiBench-style (Liang et al., NeurIPS 2021 Datasets and
Benchmarks): accuracy with test-time Gaussian noise on one modality at several levels, and with one
modality missing.

  robust_accuracy_noise_<m>_<level>  noise of `level` x the example's own standard deviation of
                                     modality <m>'s (normalised) input added to it; the noise is a
                                     function of the example's index, so every evaluation and
                                     every method sees the same noise.
  robust_accuracy_missing_<m>        modality <m> masked out (the model's modality_mask).
  relative_robustness_<m>            the mean of the noisy accuracies over the levels (the area
                                     under MultiBench's accuracy-vs-imperfection curve, levels
                                     equally weighted); relative_robustness: its mean over
                                     modalities.

Effective robustness (relative robustness beyond what the clean accuracy predicts) compares
models: the leaderboard fits relative robustness against clean accuracy over the methods of a
dataset and reports each method's residual (avjax/leaderboard.py). Like `ablation`, its passes go
through the method's inference rule (Method.predict): they measure what the method predicts with.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from avjax.evaluators.base import EVALUATORS, TASK_OUTPUTS, Evaluator
from avjax.models.outputs import MODALITIES
from avjax.registry import ConfigError
from avjax.state import model_inputs

_NOISE_SEED = 0x0B5E


@dataclasses.dataclass(frozen=True)
class RobustnessSettings:
  """levels: noise standard deviations, in units of each example's own input standard deviation;
  missing: also evaluate with each modality missing."""

  levels: tuple = (0.5, 1.0, 2.0)
  missing: bool = True

  def __post_init__(self):
    if not self.levels or any(float(l) <= 0 for l in self.levels):
      raise ConfigError(f"config.evals.robustness.levels={tuple(self.levels)} must be positive "
                        "noise levels (e.g. (0.5, 1.0, 2.0)).")


def level_name(level: float) -> str:
  """0.5 -> '0.5', 2.0 -> '2' (metric-name friendly)."""
  return f"{float(level):g}"


def add_noise(x: jax.Array, index: jax.Array, level: float, salt: int) -> jax.Array:
  """`x` (B, ...) plus Gaussian noise of `level` x each example's standard deviation; example i's
  noise depends only on its split index and `salt` (the modality)."""
  key = jax.random.fold_in(jax.random.key(_NOISE_SEED), salt)
  noise = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), x.shape[1:]))(index)
  axes = tuple(range(1, x.ndim))
  scale = jnp.std(x.astype(jnp.float32), axis=axes, keepdims=True)
  return (x + level * scale * noise).astype(x.dtype)


@EVALUATORS.register("robustness")
class Robustness(Evaluator):
  """Predicted classes under noise on each modality and with each modality missing."""

  Settings = RobustnessSettings
  requires = TASK_OUTPUTS

  def outputs(self, model, batch, output):
    if self.config.task.name == "regression":
      return {}
    inputs = model_inputs(batch)
    b = output.logits.shape[0]
    mask = batch.get("modality_mask")
    mask = jnp.ones((b, len(MODALITIES)), jnp.float32) if mask is None else mask
    predict = lambda x, m: jnp.argmax(model(x, modality_mask=m).logits, -1)
    out = {}
    for salt, m in enumerate(MODALITIES):
      if m not in inputs:
        continue
      for level in self.settings.levels:
        noisy = dict(inputs, **{m: add_noise(inputs[m], batch["index"], float(level), salt)})
        out[f"robust_pred_noise_{m}_{level_name(level)}"] = predict(noisy, mask)
      if self.settings.missing:
        out[f"robust_pred_missing_{m}"] = predict(inputs, mask.at[:, salt].set(0.0))
    return out

  def report(self, predictions):
    if "target" not in predictions and "label" not in predictions:
      return {}
    targets = np.asarray(predictions.get("target", predictions.get("label"))).astype(np.int64)
    keep = targets >= 0
    out = {}
    for key, pred in predictions.items():
      if key.startswith("robust_pred_"):
        hit = np.asarray(pred).astype(np.int64)[keep] == targets[keep]
        out["robust_accuracy_" + key[len("robust_pred_"):]] = float(hit.mean()) if hit.size else 0.
    relative = {}
    for m in MODALITIES:
      noisy = [out[f"robust_accuracy_noise_{m}_{level_name(l)}"] for l in self.settings.levels
               if f"robust_accuracy_noise_{m}_{level_name(l)}" in out]
      if noisy:
        relative[m] = float(np.mean(noisy))
        out[f"relative_robustness_{m}"] = relative[m]
    if relative:
      out["relative_robustness"] = float(np.mean(list(relative.values())))
    return out
