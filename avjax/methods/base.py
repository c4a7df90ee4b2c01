"""The method plug-in interface: what a method may change in the one training loop.

A method owns the optimizer and the update of one batch. Most methods only change pieces of the
default update (`loss`, `transform_grads`); methods with their own schedule (VAVL's three steps per
batch, VAT's momentum encoders) override `update`. Between epochs a method may choose the epoch's
plan (which examples, with which modalities); at evaluation it may add per-example outputs, split
metrics and pictures. Everything called inside the step is traced: it must be pure.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from avjax import valuation
from avjax.data.pipeline import EpochPlan, shuffled_plan
from avjax.models.outputs import ModelOutput
from avjax.optim import make_optimizer, make_schedule
from avjax.registry import Registry
from avjax.state import ModelFns, TrainState

Metrics = dict[str, jax.Array]
# fn(model, batch) -> per-example arrays (leading axis B), traced inside a jitted eval-mode pass.
PerExampleFn = Callable[[nnx.Module, dict[str, jax.Array]], dict[str, jax.Array]]


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


@dataclasses.dataclass(frozen=True)
class EpochContext:
  """What a method may use on the host to plan an epoch.

  Attributes:
    epoch: 0-indexed epoch about to start.
    seed: the experiment's root seed.
    num_examples: size of the training split.
    state: TrainState at the start of the epoch.
    run_over_train: run_over_train(fn, indices) applies a PerExampleFn to the training examples
      `indices` (eval mode, eval transform, jitted and sharded like evaluation) and returns the
      per-example outputs as numpy arrays, in `indices` order, on every host.
    workdir: the run's directory (write only when `is_chief`).
    is_chief: whether this process writes files.
  """

  epoch: int
  seed: int
  num_examples: int
  state: TrainState
  run_over_train: Callable[[PerExampleFn, np.ndarray], dict[str, np.ndarray]]
  workdir: str
  is_chief: bool


@dataclasses.dataclass(frozen=True)
class EvalContext:
  """What a method may use on the host after evaluating a split (for pictures, files).

  Attributes:
    split: the evaluated split; epoch: 0-indexed epoch just finished; step: global step.
    predictions: the split's per-example outputs (numpy), as given to `eval_report`.
    sample: the first few transformed examples of the split (numpy, leading axis <= 8).
    apply: apply(fn) -> fn(model, sample) with the model in eval mode at the current state.
    workdir / is_chief: as in EpochContext. Every process calls the hook (arrays may span hosts).
  """

  split: str
  epoch: int
  step: int
  predictions: dict[str, np.ndarray]
  sample: dict[str, np.ndarray]
  apply: Callable[[Callable[[nnx.Module, dict], Any]], Any]
  workdir: str
  is_chief: bool


class Method:
  """Joint training: cross-entropy on the fused logits, the configured optimizer, shuffled epochs.

  Subclasses override the pieces they change. `config` is the whole experiment config.
  """

  # The config.method keys the method reads (besides 'name'), with the values it uses when a config
  # leaves them out; `avjax.config.validate` rejects any other key. Subclasses extend it.
  defaults: dict[str, Any] = {"value_fn": "size"}

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  def setting(self, key: str) -> Any:
    """config.method.<key>, or the method's default when the config leaves it out."""
    return self.config.method.get(key, self.defaults[key])

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for settings this method cannot run with (checked before compiling)."""

  def model_overrides(self) -> dict[str, Any]:
    """Keyword arguments the method needs in the model constructor (e.g. a cosine head);
    'num_classes' overrides the dataset's class count (e.g. regression targets)."""
    return {}

  # ------------------------------------------------------------------------------ training
  def optimizer(self, steps_per_epoch: int) -> optax.GradientTransformation:
    """The optimizer over all params (`config.optimizer`, schedule and gradient accumulation)."""
    tc = self.config.train
    return make_optimizer(self.config.optimizer, steps_per_epoch, tc.num_epochs,
                          tc.grad_accum_steps)

  def init_state(self, params: nnx.State) -> Any:
    """The method's own state pytree, carried through the step and checkpointed."""
    del params
    return {}

  def update(self, model: ModelFns, tx: optax.GradientTransformation, state: TrainState,
             batch: dict[str, jax.Array], ctx: StepContext
             ) -> tuple[TrainState, ModelOutput, Metrics]:
    """One optimisation step on a global batch: returns the new state (params, model_state,
    opt_state, method_state; the trainer advances `step`), the training forward's output and
    metrics (scalars; must contain 'loss'). The default: forward, `loss`, gradients,
    `transform_grads`, optimizer."""

    def loss_fn(params):
      output, model_state = model.forward(params, state.model_state, batch)
      loss, metrics = self.loss(output, batch, state.method_state, ctx)
      return loss, (output, metrics, model_state)

    (_, (output, metrics, model_state)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    grads, method_state, grad_metrics = self.transform_grads(
        grads, output, batch, state.method_state, ctx)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(params=optax.apply_updates(state.params, updates),
                              model_state=model_state, opt_state=opt_state,
                              method_state=method_state)
    return new_state, output, {**metrics, **grad_metrics}

  def learning_rate(self, step: int, epoch: int, steps_per_epoch: int) -> float:
    """The learning rate of the update after `step` train steps, in `epoch` (what the trainer
    logs). Default: config.optimizer's schedule, counted in updates under gradient accumulation.
    Methods whose optimizer() follows another schedule override this with theirs."""
    k = self.config.train.grad_accum_steps
    updates_per_epoch = max(steps_per_epoch // k, 1) if k > 1 else steps_per_epoch
    schedule = make_schedule(self.config.optimizer, updates_per_epoch,
                             self.config.train.num_epochs)
    return float(schedule(step // k))

  def loss(self, output: ModelOutput, batch: dict[str, jax.Array], state: Any,
           ctx: StepContext) -> tuple[jax.Array, Metrics]:
    """Scalar training loss and metrics to log (each a scalar mean over the global batch)."""
    loss = cross_entropy(output.logits, batch["label"])
    return loss, {"loss": loss}

  def transform_grads(self, grads: Any, output: ModelOutput, batch: dict[str, jax.Array],
                      state: Any, ctx: StepContext) -> tuple[Any, Any, Metrics]:
    """Rewrites raw loss gradients before the optimizer; returns (grads, new_state, metrics)."""
    return grads, state, {}

  def train_metrics(self, output: ModelOutput, batch: dict[str, jax.Array]) -> Metrics:
    """Extra training metrics from the step's forward output: fused and per-modality accuracy."""
    if output.logits.ndim != 2 or "label" not in batch:
      return {}
    hit = lambda logits: jnp.mean((jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32))
    metrics = {"accuracy": hit(output.logits)}
    metrics.update({f"accuracy_{m}": hit(l) for m, l in output.modality_logits.items()})
    return metrics

  def epoch_plan(self, ctx: EpochContext) -> EpochPlan:
    """Which training examples the epoch visits, in order, with optional per-visit modality
    masks. Plans are saved with the run, so a resumed epoch replays its plan exactly."""
    return shuffled_plan(ctx.num_examples, ctx.seed, ctx.epoch)

  # ---------------------------------------------------------------------------- evaluation
  def eval_outputs(self, model: nnx.Module, batch: dict[str, jax.Array],
                   output: ModelOutput) -> dict[str, jax.Array]:
    """Per-example arrays (leading axis B) added to the eval predictions; traced, eval mode.

    Default (every method): each modality's Shapley contribution per example, `shapley_<modality>`
    (B,), from the forward's pooled features and one head evaluation per modality subset
    (`avjax.valuation.eval_contributions`; value function `config.method.value_fn`, default
    'size'). Skipped for models without encode / fuse and for methods whose output is not the
    dataset's classes (a `num_classes` override). Subclasses that add outputs should merge these.
    """
    if "num_classes" in self.model_overrides():
      return {}
    return valuation.eval_contributions(model, output, batch,
                                        self.setting("value_fn"))

  def eval_report(self, predictions: dict[str, np.ndarray]) -> dict[str, float]:
    """Split-level metrics from the whole split's per-example predictions (host, numpy): the
    classification report plus the mean contribution per modality (`shapley_audio`, ...)."""
    from avjax.evaluate import classification_report  # pylint: disable=import-outside-toplevel
    return {**classification_report(predictions), **valuation.contribution_report(predictions)}

  def eval_artifacts(self, ctx: EvalContext) -> None:
    """Pictures / files after an evaluation (e.g. masks, reconstructions). Default: per-sample
    contributions `<workdir>/valuation/<split>_epoch_<e>_step_<s>.csv`, their means appended to
    `valuation/summary.jsonl` and the plot `valuation/contributions.png` (redrawn every
    `valuation.PLOT_EVERY_EPOCHS` epochs and at the last; chief only)."""
    if ctx.is_chief:
      epochs = ctx.epoch + 1
      plot = epochs % valuation.PLOT_EVERY_EPOCHS == 0 or epochs >= self.config.train.num_epochs
      valuation.write_artifacts(ctx.workdir, ctx.split, ctx.epoch, ctx.step, ctx.predictions,
                                plot=plot)


METHODS: Registry[type[Method]] = Registry("method")


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy over the (global) batch; logits (B, C), integer labels (B,)."""
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                                  labels))
