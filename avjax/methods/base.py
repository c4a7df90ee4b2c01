"""The method plug-in interface: a training strategy, and nothing else of the loop.

A method declares its settings (a frozen dataclass, `Method.Settings`, parsed and checked once from
config.method) and the model capabilities it requires (`Method.requires`, checked against the
model's before compiling). Its hooks:

  init_state(params)            -> the method's own state pytree (checkpointed with the run)
  loss(output, batch, state, ctx)            -> (scalar loss, metrics)   traced
  transform_grads(grads, output, batch, state, ctx) -> (grads, state, metrics)   traced
  update(model, tx, state, batch, ctx)       -> (state, output, metrics)  traced; the default is
                                  forward, `loss`, gradients, `transform_grads`, `apply_gradients`
  on_epoch_start(ctx)           -> EpochUpdate(plan, method_state, contributions)   on the host,
                                  between epochs
  predict(output, state)        -> ModelOutput   traced, in evaluation: the inference rule

Methods train; they never evaluate or write files (evaluators do: avjax/evaluators, config.evals;
what an epoch-start hook computed for the run's files comes back as data in its EpochUpdate and the
trainer writes it).

Methods address parameters by the model's parameter groups (`ctx.model.paths('encoder/audio')`)
and read only the typed ModelOutput fields their capabilities provide; they never name a model's
attributes. Everything called inside the step is traced: it must be pure.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from avjax.data.pipeline import EpochPlan, shuffled_plan
from avjax.models.contract import ModelInfo
from avjax.models.outputs import ModelOutput
from avjax.optim import make_optimizer, make_schedule
from avjax.registry import ConfigError, Registry
from avjax.state import ModelFns, TrainState
from avjax.tasks import Task, make_task
from avjax.tasks import cross_entropy  # noqa: F401  (re-exported: methods import it from here)

Metrics = dict[str, jax.Array]
# fn(model, batch) -> per-example arrays (leading axis B), traced inside a jitted eval-mode pass.
PerExampleFn = Callable[[nnx.Module, dict[str, jax.Array]], dict[str, jax.Array]]


@flax.struct.dataclass
class StepContext:
  """Per-step values a method may read: traced (changing them never recompiles), and the model's
  static description.

  Attributes:
    step: global step (int32 scalar).
    epoch: 0-indexed epoch (int32 scalar).
    rng: a key for this step, already folded with the step number.
    learning_rate: the schedule's rate for this step (float32 scalar; `apply_gradients` applies it
      to the method's unit-rate optimizer); None: the optimizer's own (unit) rate.
    model: the model's capabilities and parameter groups (static).
    steps_per_epoch: the plain epoch's steps (static; e.g. for ramps over the first epoch).
  """

  step: jax.Array
  epoch: jax.Array
  rng: jax.Array
  learning_rate: jax.Array | None = None
  model: ModelInfo | None = flax.struct.field(pytree_node=False, default=None)
  steps_per_epoch: int = flax.struct.field(pytree_node=False, default=1)


@dataclasses.dataclass(frozen=True)
class Contributions:
  """Per-example Shapley contributions of training examples that an epoch-start hook computed
  (valuation re-sampling), for the run's files: the trainer (chief process) writes them as
  `<workdir>/valuation/train_epoch_<e>_step_<s>.csv` and a row of valuation/summary.jsonl
  (`avjax.valuation.write_artifacts`; e: completed epochs, s: the step at the epoch's start).

  Attributes:
    predictions: per-example arrays (N,): 'index' (position in the training split), 'label',
      'shapley_<modality>', and the ground-truth flags avjax.valuation knows.
    extra: more per-example columns (e.g. re-sampling copies per modality).
    summary: scalars for the summary row (e.g. totals of the copies).
  """

  predictions: dict[str, np.ndarray]
  extra: dict[str, np.ndarray] | None = None
  summary: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class EpochUpdate:
  """What `on_epoch_start` returns: the epoch's plan (None: a shuffled pass over the training
  split), the method's new state (None: unchanged) and training-set contributions to record
  (None: none). The trainer saves the plan with the run and writes the state into TrainState, so
  both are checkpointed and a resumed epoch replays them; it writes the contributions' files."""

  plan: EpochPlan | None = None
  method_state: Any = None
  contributions: Contributions | None = None


@dataclasses.dataclass(frozen=True)
class EpochContext:
  """What a method may use on the host at the start of an epoch.

  Attributes:
    epoch: 0-indexed epoch about to start.
    seed: the experiment's root seed.
    num_examples: size of the training split.
    state: TrainState at the start of the epoch (`state.method_state`: the method's state).
    model: the model's capabilities and parameter groups.
    run: run(fn, split='train', indices=None) applies a PerExampleFn (eval mode, eval transform,
      jitted and sharded like evaluation) to examples of 'train', 'heldout' (see `heldout`) or
      'validation' (all of the split when `indices` is None) and returns the per-example outputs
      as numpy arrays, in `indices` order, with 'index' (positions in the training split for
      'train' / 'heldout'), on every host. run(..., variables=(params, model_state)) runs the
      model with those variables instead of the state's (e.g. a method's throw-away copies).
    heldout_fraction: the share of the training split in the seeded held-out fold.
  """

  epoch: int
  seed: int
  num_examples: int
  state: TrainState
  model: ModelInfo | None
  run: Callable[..., dict[str, np.ndarray]]
  heldout_fraction: float = 0.2

  def heldout(self) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held-out) indices of the training split (`heldout_fold`)."""
    return heldout_fold(self.seed, self.num_examples, self.heldout_fraction)


def heldout_fold(seed: int, num_examples: int, fraction: float = 0.2
                 ) -> tuple[np.ndarray, np.ndarray]:
  """(fit, held-out) indices of a split of `num_examples`: a fold fixed by the seed (not the
  epoch), held-out = `fraction` of the examples, both sorted."""
  order = np.random.default_rng([seed, 0x4E1D]).permutation(num_examples)
  cut = int(round(num_examples * fraction))
  return np.sort(order[cut:]), np.sort(order[:cut])


@dataclasses.dataclass(frozen=True)
class Settings:
  """Base of every method's settings (config.method.<field>): none in common; subclasses add
  theirs, each with its default and that default's source, and check them in __post_init__."""

  def __post_init__(self):
    pass


def parse_settings(settings_cls: type, config: ml_collections.ConfigDict) -> Any:
  """config.method (without 'name' and other methods' sections) as `settings_cls`; an unknown key
  is a ConfigError naming the known ones."""
  method = config.method
  given = {k: v for k, v in method.items()
           if k != "name" and not isinstance(v, (dict, ml_collections.ConfigDict))}
  known = [f.name for f in dataclasses.fields(settings_cls)]
  unknown = sorted(set(given) - set(known))
  if unknown:
    raise ConfigError(f"config.method has key(s) {unknown} that method {method.name!r} does not "
                      f"take; its settings are {sorted(known)} (defaults where unset).")
  return settings_cls(**given)


def true_class_scores(modality_logits: dict[str, jax.Array], labels: jax.Array
                      ) -> dict[str, jax.Array]:
  """s_m = sum_i softmax(z_m)_i[y_i] over the (global) batch, in float32 with gradients stopped:
  the confidence OGM, OPM and InfoReg compare between modalities. {m: (B, C)}, (B,) -> {m: ()}."""
  out = {}
  for m, logits in modality_logits.items():
    probs = jax.nn.softmax(jax.lax.stop_gradient(logits).astype(jnp.float32), axis=-1)
    out[m] = jnp.sum(jnp.take_along_axis(probs, labels[:, None].astype(jnp.int32), axis=-1))
  return out


def scale_updates(updates: Any, learning_rate: jax.Array | None) -> Any:
  """A unit-rate optimizer's updates times the step's learning rate (None: unchanged)."""
  if learning_rate is None:
    return updates
  return jax.tree.map(lambda u: u * learning_rate.astype(u.dtype), updates)


def apply_gradients(tx: optax.GradientTransformation, state: TrainState, grads: Any,
                    params: Any = None, learning_rate: jax.Array | None = None,
                    **fields: Any) -> TrainState:
  """One optimizer step: `state` with params updated from `grads` (taken at `params`, default
  state.params) by the unit-rate optimizer `tx` scaled by `learning_rate` (the step's
  `ctx.learning_rate`), the new optimizer state, and any other `fields` replaced."""
  params = state.params if params is None else params
  updates, opt_state = tx.update(grads, state.opt_state, params)
  updates = scale_updates(updates, learning_rate)
  return state.replace(params=optax.apply_updates(params, updates), opt_state=opt_state, **fields)


class Method:
  """Joint training: cross-entropy on the fused logits, the configured optimizer, shuffled epochs.

  Subclasses override the pieces they change. `config` is the whole experiment config; `model`
  the built model's description (None before a model exists, e.g. in unit tests of the loss).
  """

  Settings: ClassVar[type] = Settings
  # Model capabilities (avjax.models.contract.CAPABILITIES) the method cannot run without.
  requires: ClassVar[frozenset[str]] = frozenset()
  # The tasks (avjax/tasks.py, config.task.name) the method can train.
  tasks: ClassVar[frozenset[str]] = frozenset({"classification"})
  # The method's own logged metrics worth a plot next to the task's (e.g. its coefficients).
  diagnostics: ClassVar[tuple[str, ...]] = ()

  def __init__(self, config: ml_collections.ConfigDict, model: ModelInfo | None = None):
    self.config = config
    self.settings = parse_settings(self.Settings, config)
    self.model = model
    self.task: Task = make_task(config)

  @classmethod
  def settings_keys(cls) -> tuple[str, ...]:
    """The config.method keys the method takes (besides 'name')."""
    return tuple(f.name for f in dataclasses.fields(cls.Settings))

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for settings this method cannot run with (checked before compiling).
    The default parses (and so checks) the method's settings and checks the task."""
    parse_settings(cls.Settings, config)
    if config.task.name not in cls.tasks:
      raise ConfigError(f"method {config.method.name!r} trains the task(s) {sorted(cls.tasks)}, "
                        f"not config.task.name={config.task.name!r}.")

  def model_overrides(self) -> dict[str, Any]:
    """Keyword arguments the method needs in the model constructor (e.g. a cosine head);
    'num_classes' overrides the dataset's class count (e.g. regression targets)."""
    return {}

  # ------------------------------------------------------------------------------ training
  def optimizer(self, steps_per_epoch: int) -> optax.GradientTransformation:
    """The optimizer over all params (`config.optimizer`, gradient accumulation) at unit rate:
    `apply_gradients` scales its updates by the step's rate from `schedule`."""
    tc = self.config.train
    return make_optimizer(self.config.optimizer, steps_per_epoch, tc.num_epochs,
                          tc.grad_accum_steps, unit_rate=True)

  def schedule(self, updates_per_epoch: int) -> optax.Schedule:
    """The learning rate per update (default: config.optimizer's schedule)."""
    return make_schedule(self.config.optimizer, updates_per_epoch, self.config.train.num_epochs)

  def learning_rate(self, schedule_step: Any, steps_per_epoch: int) -> Any:
    """The rate at a schedule step (`avjax.optim.schedule_step`: the global step when epochs have
    their plain length), counted in updates under gradient accumulation; traced or on the host."""
    k = self.config.train.grad_accum_steps
    updates_per_epoch = max(steps_per_epoch // k, 1) if k > 1 else steps_per_epoch
    return self.schedule(updates_per_epoch)(schedule_step // k)

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
    `transform_grads`, `apply_gradients`."""

    def loss_fn(params):
      output, model_state = model.forward(params, state.model_state, batch)
      loss, metrics = self.loss(output, batch, state.method_state, ctx)
      return loss, (output, metrics, model_state)

    (_, (output, metrics, model_state)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    grads, method_state, grad_metrics = self.transform_grads(
        grads, output, batch, state.method_state, ctx)
    new_state = apply_gradients(tx, state, grads, learning_rate=ctx.learning_rate,
                                model_state=model_state, method_state=method_state)
    return new_state, output, {**metrics, **grad_metrics}

  def loss(self, output: ModelOutput, batch: dict[str, jax.Array], state: Any,
           ctx: StepContext) -> tuple[jax.Array, Metrics]:
    """Scalar training loss and metrics to log (each a scalar mean over the global batch). The
    default: the task's loss on the fused logits."""
    loss, metrics = self.task.loss(output.logits, batch)
    return loss, {"loss": loss, **metrics}

  def transform_grads(self, grads: Any, output: ModelOutput, batch: dict[str, jax.Array],
                      state: Any, ctx: StepContext) -> tuple[Any, Any, Metrics]:
    """Rewrites raw loss gradients before the optimizer; returns (grads, new_state, metrics)."""
    return grads, state, {}

  def train_metrics(self, output: ModelOutput, batch: dict[str, jax.Array]) -> Metrics:
    """Extra training metrics from the step's forward output (the task's: fused and per-modality
    accuracy for classification)."""
    return self.task.step_metrics(output, batch)

  def predict(self, output: ModelOutput, state: Any) -> ModelOutput:
    """The method's inference rule, traced inside the eval step (eval mode): `output` with
    `logits` (B, C) replaced by what the method predicts with, e.g. MLA's entropy-weighted
    uni-modal logits; `state` is the method's state. Evaluation and every evaluator see the
    result, including the Shapley coalitions' `model.fuse(features)` outputs (a modality's pooled
    features zeroed), so it may read only fields `fuse` fills (logits, modality_logits, features,
    head_inputs), not extras of the full call. Default: the model's fused logits, unchanged."""
    del state
    return output

  def on_epoch_start(self, ctx: EpochContext) -> EpochUpdate:
    """Between epochs, on the host: the epoch's plan (which training examples, in order, with
    optional per-visit modality masks) and / or new method state, e.g. from a pass over data
    (`ctx.run`). Default: a shuffled pass, state unchanged. Must be deterministic in (seed,
    epoch, ctx.state): a resumed run replays the saved plan and restores the saved state."""
    return EpochUpdate(plan=shuffled_plan(ctx.num_examples, ctx.seed, ctx.epoch))


METHODS: Registry[type[Method]] = Registry("method")
