r"""`umt`: Uni-Modal Teacher (Du et al., ICML 2023, "On Uni-Modal Feature Learning in Supervised
Multi-Modal Learning"), as BalanceBenchmark's UMT_trainer.py implements it (no official code).

Uni-modal teachers are trained first, one `unimodal` run per modality; the multi-modal student
then trains with its cross-entropy plus a feature distillation towards the frozen teachers:

  L = CE(z, y) + scaling * sum_m MSE(h_m, sg(t_m))

h_m: the student's pooled features of modality m (`ModelOutput.features`), t_m: the teacher's,
MSE: the mean over the B x D elements (UMT_trainer.py:129-147), scaling 10
(trainer_config.yaml:62-66). The teachers run in evaluation mode (BatchNorm running statistics,
never updated: the paper's frozen teachers); variant='balancebenchmark' runs them in train mode as
BB does (batch statistics, running statistics updated under no_grad), the updated statistics
carried in the method state.

The chain (one command each; configs/umt_cremad.py):
  python -m avjax.main --config configs/unimodal_cremad.py:audio \
      --workdir runs/unimodal_cremad_audio
  python -m avjax.main --config configs/unimodal_cremad.py:visual \
      --workdir runs/unimodal_cremad_visual
  python -m avjax.main --config configs/umt_cremad.py --workdir runs/umt_cremad

Teachers: at the start of a fresh run (epoch 0) the teacher runs' checkpoints are restored
read-only (best ranked, else latest: avjax.evaluate.open_run) and their 'encoder/<m>' parameters
and BatchNorm statistics become the method state, so they are checkpointed with the student: a
resumed run needs no teacher run, every checkpoint is self-contained, and nothing is baked into the
compiled step as a constant (the cost: the two teacher encoders, about one student's parameters,
in every checkpoint). A missing or incompatible teacher run is a one-line ConfigError naming the
command that trains it. Teachers must be runs of the student's model with the same sizes.

Config keys: teacher_audio, teacher_visual (workdirs of `unimodal` runs), scaling (10),
variant ('intended' | 'balancebenchmark').
Logged: loss, loss_ce, distill_audio, distill_visual (the MSE terms, unweighted).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from avjax import workdir as workdir_lib
from avjax.methods import base
from avjax.methods.base import METHODS, EpochContext, EpochUpdate, Method, Metrics, StepContext
from avjax.models.contract import replace, select
from avjax.models.outputs import MODALITIES, ModelOutput
from avjax.registry import ConfigError
from avjax.state import ModelFns, TrainState

VARIANTS = ("intended", "balancebenchmark")
CONFIG_NAMES = {"crema_d": "cremad", "kinetics_sounds": "ks"}  # configs/unimodal_<name>.py


@dataclasses.dataclass(frozen=True)
class UMTSettings(base.Settings):
  """teacher_audio / teacher_visual: workdirs of finished `unimodal` runs of each modality.
  scaling: weight of the distillation terms (BB trainer_config.yaml:62-66: 10).
  variant: 'intended' (eval-mode teachers) or 'balancebenchmark' (train-mode teachers)."""

  teacher_audio: str = ""
  teacher_visual: str = ""
  scaling: float = 10.0
  variant: str = "intended"

  def __post_init__(self):
    super().__post_init__()
    if self.variant not in VARIANTS:
      raise ConfigError(f"config.method.variant={self.variant!r} is not one of {VARIANTS}.")
    if not self.scaling >= 0:
      raise ConfigError(f"config.method.scaling={self.scaling!r} must be >= 0.")
    for m in MODALITIES:
      if not getattr(self, f"teacher_{m}"):
        raise ConfigError(f"config.method.teacher_{m} is empty: set it to the workdir of a "
                          f"`unimodal` run of the {m} modality (see configs/umt_cremad.py).")


def distillation(features: dict[str, jax.Array], teacher: dict[str, jax.Array]
                 ) -> dict[str, jax.Array]:
  """{m: mean over (B, D) of (h_m - sg(t_m))^2} for each modality."""
  return {m: jnp.mean(jnp.square(features[m].astype(jnp.float32)
                                 - jax.lax.stop_gradient(teacher[m]).astype(jnp.float32)))
          for m in MODALITIES}


def train_command(config: Any, modality: str, workdir: str) -> str:
  name = CONFIG_NAMES.get(config.dataset.name, "cremad")
  return (f"python -m avjax.main --config configs/unimodal_{name}.py:{modality} --workdir "
          f"{workdir}")


@METHODS.register("umt")
class UMT(Method):
  """Cross-entropy plus feature distillation towards frozen uni-modal teachers."""

  Settings = UMTSettings
  diagnostics = ("distill_audio", "distill_visual")

  def _paths(self, modality: str) -> tuple[str, ...]:
    return self.model.paths(f"encoder/{modality}")

  def init_state(self, params: nnx.State) -> Any:
    """Placeholders of the teachers' shape (the student's own encoders; BatchNorm statistics of
    an abstractly built model), replaced by the teacher runs' at the start of training."""
    from avjax.models import build_model  # pylint: disable=import-outside-toplevel
    abstract = nnx.eval_shape(lambda: build_model(self.config, self.model.num_outputs,
                                                  self.model_overrides()))
    _, _, rest = nnx.split(abstract, nnx.Param, ...)
    zeros = lambda tree: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), tree)
    return {"teachers": {m: {"params": jax.tree.map(jnp.copy, select(params, self._paths(m))),
                             "model_state": zeros({p: rest[p] for p in self._paths(m)
                                                   if p in rest})}
                         for m in MODALITIES}}

  def load_teacher(self, modality: str, placeholder: dict[str, Any]) -> dict[str, Any]:
    """The teacher run's encoder parameters and statistics (host), checked against the
    placeholder's structure; ConfigError naming the command that trains a missing teacher."""
    from avjax.evaluate import open_run  # pylint: disable=import-outside-toplevel
    workdir = getattr(self.settings, f"teacher_{modality}")
    fix = f"train it first: {train_command(self.config, modality, workdir)}"
    where = f"config.method.teacher_{modality}={workdir!r}"
    path = workdir_lib.config_file(workdir)
    if not os.path.isfile(path):
      raise ConfigError(f"{where} is not a finished run (no config.json); {fix}")
    saved = workdir_lib.read_config_json(path)
    method, model = saved.get("method", {}), saved.get("model", {})
    if method.get("name") != "unimodal" or method.get("modality") != modality:
      raise ConfigError(f"{where} is a {method.get('name')!r} run (modality "
                        f"{method.get('modality')!r}), not a 'unimodal' {modality} run; {fix}")
    if model.get("name") != self.config.model.name:
      raise ConfigError(f"{where} trained model {model.get('name')!r}, the student is "
                        f"{self.config.model.name!r}; {fix}")
    try:
      run = open_run(workdir, [saved["dataset"]["train_split"]])
    except ConfigError as e:
      raise ConfigError(f"{where}: {e}; {fix}") from e
    paths = run.exp.method.model.paths(f"encoder/{modality}")
    teacher = {"params": select(run.state.params, paths),
               "model_state": {p: run.state.model_state[p] for p in paths
                               if p in run.state.model_state}}
    shapes = lambda tree: jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), tree)
    if (jax.tree.structure(teacher) != jax.tree.structure(placeholder)
        or shapes(teacher) != shapes(placeholder)):
      raise ConfigError(f"{where}: its {modality} encoder does not fit the student's (other "
                        f"model sizes?); {fix} with this run's config.model settings.")
    return jax.device_get(teacher)

  def on_epoch_start(self, ctx: EpochContext) -> EpochUpdate:
    update = super().on_epoch_start(ctx)
    if ctx.epoch != 0:  # Later epochs (and resumes) carry the loaded teachers in the state.
      return update
    held = ctx.state.method_state["teachers"]
    loaded = {m: self.load_teacher(m, jax.device_get(held[m])) for m in MODALITIES}
    return EpochUpdate(plan=update.plan, method_state={"teachers": loaded})

  def teacher_features(self, model: ModelFns, state: TrainState, batch: dict[str, jax.Array]
                       ) -> tuple[dict[str, jax.Array], Any]:
    """Both teachers in one forward of the student's model with the teachers' encoders swapped
    in: eval mode (or train mode, 'balancebenchmark'); returns ({m: t_m (B, D)}, new state)."""
    teachers = state.method_state["teachers"]
    params = replace(state.params, {p: v for m in MODALITIES
                                    for p, v in teachers[m]["params"].items()})
    stats = replace(state.model_state, {p: v for m in MODALITIES
                                        for p, v in teachers[m]["model_state"].items()})
    train = self.settings.variant == "balancebenchmark"
    out, new_stats = model.forward(params, stats, batch, train=train)
    if train:  # BB: running statistics updated (under no_grad); carried in the state.
      teachers = {m: {"params": teachers[m]["params"],
                      "model_state": {p: new_stats[p] for p in teachers[m]["model_state"]}}
                  for m in MODALITIES}
    features = {m: jax.lax.stop_gradient(out.features[m]) for m in MODALITIES}
    return features, {"teachers": teachers}

  def update(self, model: ModelFns, tx: optax.GradientTransformation, state: TrainState,
             batch: dict[str, jax.Array], ctx: StepContext
             ) -> tuple[TrainState, ModelOutput, Metrics]:
    teacher, method_state = self.teacher_features(model, state, batch)

    def loss_fn(params):
      output, model_state = model.forward(params, state.model_state, batch)
      ce, metrics = self.task.loss(output.logits, batch)
      terms = distillation(output.features, teacher)
      loss = ce + self.settings.scaling * sum(terms.values())
      metrics = {**metrics, "loss": loss, "loss_ce": ce,
                 **{f"distill_{m}": v for m, v in terms.items()}}
      return loss, (output, metrics, model_state)

    (_, (output, metrics, model_state)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    new_state = base.apply_gradients(tx, state, grads, learning_rate=ctx.learning_rate,
                                     model_state=model_state, method_state=method_state)
    return new_state, output, metrics
