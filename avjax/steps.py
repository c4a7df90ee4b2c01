"""The jitted train and eval steps, generic over models and methods.

The model is split once into graph definitions and state; the steps are pure functions of
(TrainState, batch) so they jit, shard (batch on 'data', state replicated) and donate cleanly.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from avjax import evaluators as evaluators_lib
from avjax.data import device_augment
from avjax.methods.base import METHODS, Method, StepContext
from avjax.models import build_model, info_of
from avjax.optim import schedule_step
from avjax.state import INPUT_KEYS, Graphs, ModelFns, TrainState, cast_floats, model_inputs
from avjax.tasks import make_task

__all__ = ["INPUT_KEYS", "Graphs", "ModelFns", "Setup", "TrainState", "init_state",
           "make_eval_step", "make_train_step", "setup"]


@dataclasses.dataclass(frozen=True)
class Setup:
  """An experiment's method, model graphs, optimizer and initial (host) state."""

  method: Method
  graphs: Graphs
  tx: optax.GradientTransformation
  state: TrainState
  steps_per_epoch: int = 1  # The plain epoch's steps the learning-rate schedule is built for.


def setup(config: ml_collections.ConfigDict, num_classes: int, steps_per_epoch: int = 1) -> Setup:
  """Builds the configured method and model and the initial TrainState. `steps_per_epoch` only
  shapes the learning-rate schedule (the state's structure does not depend on it). The method
  is built twice: once for the constructor arguments it needs, then with the model's ModelInfo."""
  method_cls = METHODS.get(config.method.name)
  num_classes = make_task(config).num_outputs(num_classes)  # Regression: one per target.
  overrides = method_cls(config).model_overrides()
  model = build_model(config, num_classes, overrides)
  method = method_cls(config, info_of(config, model, overrides.get("num_classes", num_classes)))
  tx = method.optimizer(steps_per_epoch)
  graphs, state = init_state(model, tx, method, config.seed)
  return Setup(method=method, graphs=graphs, tx=tx, state=state, steps_per_epoch=steps_per_epoch)


def init_state(model: nnx.Module, tx: optax.GradientTransformation, method: Method,
               seed: int) -> tuple[Graphs, TrainState]:
  """Splits the model and builds the initial TrainState (`tx` is the method's optimizer)."""
  model.train()
  train_graph, params, model_state = nnx.split(model, nnx.Param, ...)
  model.eval()
  eval_graph, _, _ = nnx.split(model, nnx.Param, ...)
  model.train()
  state = TrainState(
      step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
      opt_state=tx.init(params), method_state=method.init_state(params),
      rng=jax.random.key_data(jax.random.key(seed)), skipped_steps=jnp.zeros((), jnp.int32))
  return Graphs(train=train_graph, eval=eval_graph), state


def normalize_inputs(batch: dict[str, jax.Array], input_config: ml_collections.ConfigDict
                     ) -> dict[str, jax.Array]:
  """uint8 frames from the pipeline -> float32 (x / 255 - mean) / std (config.input.mean / std),
  inside the jitted steps; float frames (already normalised) pass unchanged. uint8 optical flow in
  the audio slot (input.audio_source='flow') -> (x - 127.5) / 127.5, the flow over its bound.
  float16 spectrograms / feature sequences (float16 storage, shipped as stored) -> float32; int16
  waveforms (16-bit PCM) -> float32 / 32768.

  A batch with 'visual_crop' (input.crop_on_device) holds whole frames: each is first cropped,
  resized to input.image_size and flipped as its row says (avjax.data.device_augment), and the
  key is dropped, so what follows sees (B, T, S, S, C) frames as from the host path.
  """
  batch = {k: v.astype(jnp.float32) if k in ("audio", "visual") and v.dtype == jnp.float16 else v
           for k, v in batch.items()}
  flow = batch.get("audio")
  if flow is not None and flow.dtype == jnp.int16:  # 16-bit PCM waveforms -> [-1, 1).
    batch = {**batch, "audio": flow.astype(jnp.float32) / 32768.0}
  if flow is not None and flow.dtype == jnp.uint8:
    batch = {**batch, "audio": (flow.astype(jnp.float32) - 127.5) / 127.5}
  visual = batch.get("visual")
  if visual is None or visual.dtype != jnp.uint8:
    return batch
  pixels = visual.astype(jnp.float32)
  if "visual_crop" in batch:
    size = input_config.image_size
    size = (size, size) if size else tuple(visual.shape[-3:-1])
    pixels = device_augment.resized_crops(visual, batch["visual_crop"], size)
    batch = {k: v for k, v in batch.items() if k != "visual_crop"}
  mean = jnp.asarray(input_config.mean, jnp.float32) * 255.0
  std = jnp.asarray(input_config.std, jnp.float32) * 255.0
  return {**batch, "visual": (pixels - mean) / std}


def _all_finite(tree: Any) -> jax.Array:
  """Whether every float in `tree` is finite: one reduction over the concatenated leaves (a
  reduction per leaf makes compilation of many-tensor models several times slower on CPU)."""
  leaves = [x.reshape(-1).astype(jnp.float32) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.isfinite(jnp.concatenate(leaves))) if leaves else jnp.bool_(True)


def make_train_step(graphs: Graphs, tx: optax.GradientTransformation, method: Method,
                    steps_per_epoch: int) -> Callable[[TrainState, dict, jax.Array], tuple]:
  """(state, global batch, position) -> (state, metrics): the method's update of one batch.

  `position` is int32 (epoch, global step at the epoch's start, steps in this epoch): the learning
  rate follows the schedule at the step's fractional epoch (`avjax.optim.schedule_step`, with
  `steps_per_epoch` the plain epoch's steps). A scalar epoch instead means plain epochs: the
  schedule step is the global step.

  A non-finite loss or a non-finite updated parameter / optimizer state leaves the state unchanged
  (the update is skipped and counted); the host decides from the `nonfinite` metric whether to stop.
  """
  model = ModelFns(graphs, method.config.train.compute_dtype)

  def train_step(state: TrainState, batch: dict[str, jax.Array], position: jax.Array):
    batch = normalize_inputs(batch, method.config.input)
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    if position.ndim == 0:
      epoch, count = position, state.step
    else:
      epoch = position[0]
      count = schedule_step(epoch, state.step - position[1], position[2], steps_per_epoch)
    learning_rate = jnp.asarray(method.learning_rate(count, steps_per_epoch), jnp.float32)
    ctx = StepContext(step=state.step, epoch=epoch, rng=rng, learning_rate=learning_rate,
                      model=method.model, steps_per_epoch=steps_per_epoch)
    updated, output, metrics = method.update(model, tx, state, batch, ctx)
    finite = (jnp.isfinite(metrics["loss"]) & _all_finite(updated.params)
              & _all_finite(updated.opt_state))
    # One select of the whole state (a per-leaf where compiles in time quadratic in the leaf count
    # on CPU: minutes for a transformer's few hundred leaves).
    new_state = jax.lax.cond(finite, lambda: updated, lambda: state).replace(
        step=state.step + 1, rng=state.rng,
        skipped_steps=state.skipped_steps + (~finite).astype(jnp.int32))
    metrics = {**metrics, **method.train_metrics(output, batch),
               "nonfinite": (~finite).astype(jnp.float32), "learning_rate": learning_rate}
    return new_state, metrics

  return train_step


def make_eval_step(graphs: Graphs, config: ml_collections.ConfigDict,
                   evaluators: list[evaluators_lib.Evaluator],
                   predict: Callable[[Any, Any], Any] | None = None
                   ) -> Callable[[TrainState, dict], dict]:
  """(state, global batch) -> per-example outputs (fused and per-modality logits, regression
  outputs, labels, valid, the evaluators' `outputs`), gathered on the host so split-level metrics
  are exact. `predict(output, method_state)` is the method's inference rule (`Method.predict`),
  applied before the evaluators see the output (None: the model's output as it is)."""

  model_fns = ModelFns(graphs, config.train.compute_dtype)

  def eval_step(state: TrainState, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    batch = normalize_inputs(batch, config.input)
    inputs = model_inputs(batch)
    if model_fns.compute_dtype != "float32":
      inputs = cast_floats(inputs, model_fns.compute_dtype)

    def run(model):
      if predict is not None:
        model = evaluators_lib.Predicting(model, predict, state.method_state)
      output = model(inputs, modality_mask=batch.get("modality_mask"))
      return output, evaluators_lib.outputs(evaluators, model, batch, output)

    (output, extra), _ = model_fns.apply(state.params, state.model_state, run, train=False)
    output = cast_floats(output, jnp.float32)
    result = {"logits": output.logits, "valid": batch["valid"], "index": batch["index"]}
    result.update({f"logits_{m}": l for m, l in output.modality_logits.items()})
    if output.regression is not None:
      result["regression"] = output.regression
      result.update({f"regression_{m}": r for m, r in output.modality_regression.items()})
    for key in ("label", "attributes", "modality_mask"):
      if key in batch:
        result[key] = batch[key]
    result.update(cast_floats(extra, jnp.float32))
    return result

  return eval_step


def make_per_example_fn(graphs: Graphs, fn: Callable, input_config: ml_collections.ConfigDict
                        ) -> Callable[[TrainState, dict], dict]:
  """(state, global batch) -> fn(model in eval mode, batch) plus `valid` / `index`: the jittable
  pass behind `EpochContext.run`."""

  def per_example(state: TrainState, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    batch = normalize_inputs(batch, input_config)
    model = nnx.merge(graphs.eval, state.params, state.model_state)
    return {**fn(model, batch), "valid": batch["valid"], "index": batch["index"]}

  return per_example
