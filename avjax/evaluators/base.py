"""Evaluators: what an evaluation computes and writes, configured per run in `config.evals`.

`config.evals.<name>` holds the settings of evaluator <name> (registered in EVALUATORS); every
evaluator listed runs at each evaluation of a split, whatever the method. An evaluator adds
per-example arrays inside the jitted eval step (`outputs`), split-level metrics from the whole
split's predictions (`report`) and, on the host, files and pictures (`write`). Methods never
evaluate; the task (avjax/tasks.py) gives the targets and the report of its predictions.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar

import jax
import ml_collections
import numpy as np
from flax import nnx

from avjax.models.outputs import ModelOutput
from avjax.registry import ConfigError, Registry
from avjax.tasks import Task


@dataclasses.dataclass(frozen=True)
class EvalContext:
  """What an evaluator may use on the host after a split's evaluation (for pictures, files).

  Attributes:
    split: the evaluated split; epoch: 0-indexed epoch just finished (ctx.epoch's convention;
      files and rows a person reads count completed epochs, epoch + 1); step: global step.
    predictions: the split's per-example outputs (numpy), as given to `report`.
    sample: the first few transformed examples of the split (numpy, leading axis <= 8).
    apply: apply(fn) -> fn(model, sample) with the model in eval mode at the current state.
    workdir / is_chief: the run's directory; write only when `is_chief`. Every process calls
      `write` (arrays may span hosts).
    last_epoch: whether `epoch` is the run's last.
  """

  split: str
  epoch: int
  step: int
  predictions: dict[str, np.ndarray]
  sample: dict[str, np.ndarray]
  apply: Callable[[Callable[[nnx.Module, dict], Any]], Any]
  workdir: str
  is_chief: bool
  last_epoch: bool = False


@dataclasses.dataclass(frozen=True)
class NoSettings:
  """For evaluators without settings."""


# Evaluators that read the model's predictions of the task (class logits, regression outputs).
TASK_OUTPUTS = frozenset({"task_outputs"})


class Evaluator:
  """Base: nothing per example, no metrics, no files. `config` is the whole experiment config."""

  Settings: ClassVar[type] = NoSettings
  # Model capabilities without which the evaluator has nothing to evaluate.
  requires: ClassVar[frozenset[str]] = frozenset()

  def __init__(self, config: ml_collections.ConfigDict, task: Task, settings: Any):
    self.config, self.task, self.settings = config, task, settings

  def outputs(self, model: nnx.Module, batch: dict[str, jax.Array],
              output: ModelOutput) -> dict[str, jax.Array]:
    """Per-example arrays (leading axis B), traced inside the eval step (eval mode). Calling
    `model(inputs, modality_mask=...)` and `model.fuse(features)` give the output the method
    predicts with (its inference rule, `Method.predict`, applied); its other attributes are the
    model's own."""
    return {}

  def report(self, predictions: dict[str, np.ndarray]) -> dict[str, float]:
    """Split-level metrics (host, numpy)."""
    return {}

  def write(self, ctx: EvalContext) -> None:
    """Files and pictures after an evaluation (host)."""


EVALUATORS: Registry[type[Evaluator]] = Registry("evaluator")


def _settings(cls: type[Evaluator], name: str, section: Any) -> Any:
  given = dict(section.items()) if section is not None else {}
  known = [f.name for f in dataclasses.fields(cls.Settings)]
  unknown = sorted(set(given) - set(known))
  if unknown:
    raise ConfigError(f"config.evals.{name} has key(s) {unknown} that evaluator {name!r} does "
                      f"not take; its settings are {sorted(known)}.")
  return cls.Settings(**given)


def validate(config: ml_collections.ConfigDict, capabilities: frozenset[str]) -> None:
  """Checks every configured evaluator's name, settings and needs (before compiling)."""
  for name, section in config.evals.items():
    cls = EVALUATORS.get(name)
    _settings(cls, name, section)
    missing = sorted(cls.requires - capabilities)
    if missing:
      raise ConfigError(f"evaluator {name!r} (config.evals.{name}) needs model capabilities "
                        f"{missing}, which model {config.model.name!r} does not have; remove "
                        f"config.evals.{name} or use another model.")


def build(config: ml_collections.ConfigDict, task: Task) -> list[Evaluator]:
  """The configured evaluators, in config order."""
  return [EVALUATORS.get(name)(config, task, _settings(EVALUATORS.get(name), name, section))
          for name, section in config.evals.items()]


class Predicting:
  """`model` as evaluators see it: a call's output goes through the method's inference rule
  (`predict(output, method_state)`), so a masked-input or noisy-input pass measures what the
  method predicts with (e.g. ReconBoost's own ensemble head, DI-MML's certainty weighting), not a
  fusion head the method never trained; `fuse` (pooled features -> output, the Shapley
  coalitions' head) goes through the same rule. Other attributes are the model's."""

  def __init__(self, model: nnx.Module, predict: Callable[[Any, Any], Any], method_state: Any):
    self._model, self._predict, self._method_state = model, predict, method_state

  def __call__(self, *args, **kwargs) -> ModelOutput:
    return self._predict(self._model(*args, **kwargs), self._method_state)

  def __getattr__(self, name: str) -> Any:
    # By name, not a method: a `fuse` defined here would give every model one (supports_valuation
    # asks for it); a model without `fuse` keeps having none.
    attr = getattr(self._model, name)
    if name == "fuse":
      return lambda *args, **kwargs: self._predict(attr(*args, **kwargs), self._method_state)
    return attr


def outputs(evaluators: list[Evaluator], model: nnx.Module, batch: dict[str, jax.Array],
            output: ModelOutput) -> dict[str, jax.Array]:
  """Every evaluator's per-example arrays (traced); `model` may be a `Predicting` view."""
  out: dict[str, jax.Array] = {}
  for evaluator in evaluators:
    out.update(evaluator.outputs(model, batch, output))
  return out


def report(evaluators: list[Evaluator], predictions: dict[str, np.ndarray]) -> dict[str, float]:
  """Every evaluator's split metrics."""
  out: dict[str, float] = {}
  for evaluator in evaluators:
    out.update(evaluator.report(predictions))
  return out


def write(evaluators: list[Evaluator], ctx: EvalContext) -> None:
  for evaluator in evaluators:
    evaluator.write(ctx)
