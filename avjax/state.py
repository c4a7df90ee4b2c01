"""The training state pytree and the model as pure functions of (params, model_state).

Methods and the trainer see the model only through `ModelFns`: the NNX module is split once into
static graphs (train / eval mode) and state, so every step is a pure, jittable function of arrays.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, TypeVar

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from avjax.models.outputs import ModelOutput

# Batch keys a model may read; everything else (labels, masks of the plan, ...) stays out of it.
INPUT_KEYS = ("audio", "visual", "audio_mask", "visual_mask")

R = TypeVar("R")


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training; one pytree, checkpointed whole.

  Attributes:
    step: int32 global step.
    params: trainable parameters (nnx.Param).
    model_state: every other model variable (BatchNorm statistics, VQ codebook EMAs, ...).
    opt_state: optax state (of the method's optimizer).
    method_state: the method's own state (momentum encoders, queues, modulation history, ...).
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


def model_inputs(batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """The part of a batch a model reads (`INPUT_KEYS`)."""
  return {k: batch[k] for k in INPUT_KEYS if k in batch}


def cast_floats(tree: Any, dtype: Any) -> Any:
  """Every floating-point leaf of `tree` as `dtype` (integers, keys and bools untouched)."""
  return jax.tree.map(
      lambda x: x.astype(dtype) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x, tree)


@dataclasses.dataclass(frozen=True)
class ModelFns:
  """The model as pure functions; hashable and static, so it can be closed over inside jit.

  `compute_dtype` 'bfloat16' is mixed precision the way Flax layers define it: every layer with a
  `dtype` attribute (Conv, Linear, normalisation, attention) computes in bfloat16 on its float32
  parameters (cast inside the layer), normalisation statistics are reduced and stored in float32, and
  the float32 parameters stay the master copy (gradients flow back through the casts in float32;
  bfloat16 has float32's exponent range, so no loss scaling is needed).
  """

  graphs: Graphs
  compute_dtype: str = "float32"

  def apply(self, params: nnx.State, model_state: nnx.State, fn: Callable[[nnx.Module], R], *,
            train: bool = True) -> tuple[R, nnx.State]:
    """Runs `fn(model)` on the model rebuilt from (params, model_state); returns fn's result and
    the model state after it (BatchNorm statistics and VQ EMAs update in train mode).

    `fn` may call any method of the model (e.g. `encode` then `fuse`), not only `__call__`.
    """
    model = nnx.merge(self.graphs.train if train else self.graphs.eval, params, model_state,
                      copy=True)
    if self.compute_dtype != "float32":
      for _, module in nnx.iter_modules(model):
        if hasattr(module, "dtype") and hasattr(module, "param_dtype"):
          module.dtype = jnp.dtype(self.compute_dtype)
    result = fn(model)
    _, _, new_model_state = nnx.split(model, nnx.Param, ...)
    return result, new_model_state

  def forward(self, params: nnx.State, model_state: nnx.State, batch: dict[str, jax.Array], *,
              train: bool = True, modality_mask: jax.Array | None = None
              ) -> tuple[ModelOutput, nnx.State]:
    """model(inputs, modality_mask) -> (ModelOutput, new model_state). In training the batch's own
    `modality_mask` (B, M) (from the epoch plan / modality dropout) applies unless one is given."""
    if modality_mask is None and train:
      modality_mask = batch.get("modality_mask")
    inputs = model_inputs(batch)
    if self.compute_dtype != "float32":
      inputs = cast_floats(inputs, self.compute_dtype)
    return self.apply(params, model_state, lambda m: m(inputs, modality_mask=modality_mask),
                      train=train)
