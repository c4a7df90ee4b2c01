"""The method plug-in interface: what a balancing method may change in the one training loop.

A method decides the loss, may rewrite the gradients before the optimizer, may keep its own state
(carried through jit and checkpoints) and may act between epochs. Everything runs inside the jitted
step, so these functions must be pure and traceable.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from avjax.models.outputs import ModelOutput
from avjax.registry import Registry

Metrics = dict[str, jax.Array]


@flax.struct.dataclass
class StepContext:
  """Per-step values a method may read: all traced, so changing them never recompiles.

  Attributes:
    step: global step (int32 scalar).
    epoch: 0-indexed epoch (int32 scalar).
    rng: a key for this step, already folded with the step number.
  """

  step: jax.Array
  epoch: jax.Array
  rng: jax.Array


class Method:
  """Joint training: cross-entropy on the fused logits, unmodified gradients.

  Subclasses override the pieces they change. `config` is the whole experiment config.
  """

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for settings this method cannot run with (checked before compiling)."""

  def model_overrides(self) -> dict[str, Any]:
    """Keyword arguments the method needs in the model constructor (e.g. a cosine head)."""
    return {}

  def init_state(self) -> Any:
    """The method's own state pytree, carried through the step and checkpointed."""
    return {}

  def loss(self, output: ModelOutput, batch: dict[str, jax.Array], state: Any,
           ctx: StepContext) -> tuple[jax.Array, Metrics]:
    """Scalar training loss and metrics to log (each a scalar mean over the global batch)."""
    loss = cross_entropy(output.logits, batch["label"])
    return loss, {"loss": loss}

  def transform_grads(self, grads: Any, output: ModelOutput, batch: dict[str, jax.Array],
                      state: Any, ctx: StepContext) -> tuple[Any, Any, Metrics]:
    """Rewrites raw loss gradients before the optimizer; returns (grads, new_state, metrics)."""
    return grads, state, {}


METHODS: Registry[type[Method]] = Registry("method")


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy over the (global) batch; logits (B, C), integer labels (B,)."""
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                                  labels))
