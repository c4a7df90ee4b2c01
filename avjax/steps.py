"""The jitted train and eval steps, generic over models and methods.

The model is split once into a graph definition and state; the steps are pure functions of
(TrainState, batch) so they jit, shard (batch on 'data', state replicated) and donate cleanly.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from avjax.methods.base import Method, StepContext
from avjax.models.outputs import ModelOutput

INPUT_KEYS = ("audio", "visual")


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training; one pytree, checkpointed whole.

  Attributes:
    step: int32 global step.
    params: trainable parameters (nnx.Param).
    model_state: every other model variable (BatchNorm statistics, VQ codebook EMAs, ...).
    opt_state: optax state.
    method_state: the method's own state.
    rng: uint32 key data of the root key; step keys are fold_in(root, step).
    skipped_steps: int32 count of updates skipped for non-finite loss or gradients.
  """

  step: jax.Array
  params: nnx.State
  model_state: nnx.State
  opt_state: Any
  method_state: Any
  rng: jax.Array
  skipped_steps: jax.Array


@flax.struct.dataclass
class Graphs:
  """The model's static structure in training and in evaluation mode."""

  train: Any = flax.struct.field(pytree_node=False)
  eval: Any = flax.struct.field(pytree_node=False)


def init_state(model: nnx.Module, tx: optax.GradientTransformation, method: Method,
               seed: int) -> tuple[Graphs, TrainState]:
  """Splits the model and builds the initial TrainState."""
  model.train()
  train_graph, params, model_state = nnx.split(model, nnx.Param, ...)
  model.eval()
  eval_graph, _, _ = nnx.split(model, nnx.Param, ...)
  model.train()
  state = TrainState(
      step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
      opt_state=tx.init(params), method_state=method.init_state(),
      rng=jax.random.key_data(jax.random.key(seed)), skipped_steps=jnp.zeros((), jnp.int32))
  return Graphs(train=train_graph, eval=eval_graph), state


def _inputs(batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
  return {k: batch[k] for k in INPUT_KEYS if k in batch}


def _all_finite(tree: Any) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def make_train_step(graphs: Graphs, tx: optax.GradientTransformation,
                    method: Method) -> Callable[[TrainState, dict, jax.Array], tuple]:
  """(state, global batch, epoch) -> (state, metrics): forward, method loss, method gradient
  transform, optimizer update. A non-finite loss or gradient leaves the state unchanged (the update
  is skipped and counted); the host decides from the `nonfinite` metric whether to stop."""

  def train_step(state: TrainState, batch: dict[str, jax.Array], epoch: jax.Array):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    ctx = StepContext(step=state.step, epoch=epoch, rng=rng)

    def loss_fn(params, model_state):  # model_state is an argument: BatchNorm updates it in place.
      model = nnx.merge(graphs.train, params, model_state, copy=True)
      output = model(_inputs(batch), modality_mask=batch.get("modality_mask"))
      loss, metrics = method.loss(output, batch, state.method_state, ctx)
      _, _, model_state = nnx.split(model, nnx.Param, ...)
      return loss, (output, metrics, model_state)

    (loss, (output, metrics, model_state)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params, state.model_state)
    grads, method_state, grad_metrics = method.transform_grads(
        grads, output, batch, state.method_state, ctx)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    finite = jnp.isfinite(loss) & _all_finite(grads)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = state.replace(
        step=state.step + 1,
        params=keep(params, state.params),
        model_state=keep(model_state, state.model_state),
        opt_state=keep(opt_state, state.opt_state),
        method_state=keep(method_state, state.method_state),
        skipped_steps=state.skipped_steps + (~finite).astype(jnp.int32))
    metrics = {**metrics, **grad_metrics, **_train_accuracy(output, batch),
               "nonfinite": (~finite).astype(jnp.float32)}
    return new_state, metrics

  return train_step


def _train_accuracy(output: ModelOutput, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
  if output.logits.ndim != 2 or "label" not in batch:
    return {}
  hit = lambda logits: jnp.mean((jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32))
  metrics = {"accuracy": hit(output.logits)}
  metrics.update({f"accuracy_{m}": hit(l) for m, l in output.modality_logits.items()})
  return metrics


def make_eval_step(graphs: Graphs) -> Callable[[TrainState, dict], dict[str, jax.Array]]:
  """(state, global batch) -> per-example outputs (fused and per-modality logits, labels, valid),
  gathered on the host so split-level metrics are exact."""

  def eval_step(state: TrainState, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    model = nnx.merge(graphs.eval, state.params, state.model_state)
    output = model(_inputs(batch))
    result = {"logits": output.logits, "valid": batch["valid"], "index": batch["index"]}
    result.update({f"logits_{m}": l for m, l in output.modality_logits.items()})
    for key in ("label", "attributes"):
      if key in batch:
        result[key] = batch[key]
    return result

  return eval_step
