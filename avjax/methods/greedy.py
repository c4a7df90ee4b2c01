"""`greedy`: balanced multi-modal learning (Wu, Jastrzebski, Cho, Geras, ICML 2022).

The model (`av_resnet_mmtm`, capability 'mmtm') couples the encoders with MMTM blocks. Each step
measures, from the step's own gradients, how fast each modality learns through its cross-modal
"bypass" (MMTM excitation + the shared squeeze) relative to its own "main" branch:

  r_bypass,m = sum |grad|^2 / sum |param|^2 over mmtm/<m> and mmtm/shared
  r_main,m   = the same over the branch (GRD: encoder/<m> and head/<m>; BB: encoder/<m>)
  M_b,m += r_bypass,m,  M_main,m += r_main,m   (cumulative since training began)
  d = log10(M_b,a / M_main,a) - log10(M_b,v / M_main,v)

When |d| > threshold (and the warm-up is over) the next `window` steps re-balance: the modality
that relies more on the other (caring = audio if d > 0 else visual) has its MMTM gates frozen to
their running means (detached, the same for every example), so its branch learns from its own
input. No statistic is taken during those steps. (GRD = nyukat/greedy_multimodal_learning @ a190e03:
src/callbacks.py:199-267, src/balanced_mmtm.py, configs/training_guided.gin.)

Heads. variant 'original' (GRD): each branch has its own head (av_resnet's separate heads), the
loss is CE(audio head) + CE(visual head) and the prediction their average. variant
'balancebenchmark' (BB balancemm/trainer/Greedy_trainer.py): CE on the model's fusion head
(config.model.fusion), uni-modal logits its slices, MMTM after all four stages, threshold 0.001
and no warm-up.

Conditional utilisation rate (GRD's analysis, `utilisation_every` > 0): at those epoch starts, the
mean squeeze vector of every block over the training split, then on `utilisation_split` each
branch's accuracy with the other modality's real squeeze (A) and with its training mean (A_off):
u(other | m) = (A_m - A_m,off) / A_m, the relative accuracy modality m's branch gains from the
other one. Logged each step as greedy_utilisation_<modality> = u(<modality> | other).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from avjax.methods import base
from avjax.methods.base import METHODS, EpochContext, EpochUpdate, Method, Metrics, StepContext
from avjax.models.contract import ModelInfo, select
from avjax.models.outputs import MODALITIES, ModelOutput
from avjax.registry import ConfigError
from avjax.state import ModelFns, TrainState, model_inputs

VARIANTS = ("original", "balancebenchmark")
SPLITS = ("validation", "heldout", "train")
# variant -> (threshold, warm-up epochs, MMTM positions, head).
DEFAULTS = {"original": (0.01, 1, (2, 3, 4), "branch"),  # training_guided.gin:14-16, model.py:58
            "balancebenchmark": (0.001, 0, (1, 2, 3, 4), "fusion")}  # trainer_config.yaml:57


@dataclasses.dataclass(frozen=True)
class GreedySettings(base.Settings):
  """variant: 'original' (GRD) or 'balancebenchmark' (BB); the fields left None take its values.
  threshold: epsilon on |d| (GRD 0.01; BB 0.001). window: re-balancing steps (5 in both).
  warmup_epochs: 0-indexed epochs that only fill the sums (GRD starting_epoch 2, 1-based: 1;
  BB 0). mmtm_positions: stages followed by MMTM (GRD (2, 3, 4); BB (1, 2, 3, 4)).
  mmtm_ratio: squeeze reduction (4 in both). loss_head: 'branch' (per-branch heads, summed CE,
  averaged prediction; GRD) or 'fusion' (CE on the fusion head; BB).
  utilisation_every: epochs between conditional-utilisation passes (0: never; an analysis).
  utilisation_split: where the branch accuracies are measured."""

  variant: str = "original"
  threshold: float | None = None
  window: int = 5
  warmup_epochs: int | None = None
  mmtm_positions: tuple[int, ...] | None = None
  mmtm_ratio: float = 4.0
  loss_head: str | None = None
  utilisation_every: int = 0
  utilisation_split: str = "validation"

  def __post_init__(self):
    super().__post_init__()
    if self.variant not in VARIANTS:
      raise ConfigError(f"config.method.variant={self.variant!r} must be one of {VARIANTS}.")
    if self.threshold is not None and not self.threshold >= 0:
      raise ConfigError(f"config.method.threshold={self.threshold!r} must be >= 0.")
    if self.window < 1:
      raise ConfigError(f"config.method.window={self.window!r} must be >= 1 step.")
    if self.warmup_epochs is not None and self.warmup_epochs < 0:
      raise ConfigError(f"config.method.warmup_epochs={self.warmup_epochs!r} must be >= 0.")
    if self.mmtm_positions is not None and (
        not self.mmtm_positions or not set(self.mmtm_positions) <= {1, 2, 3, 4}
        or len(set(self.mmtm_positions)) != len(self.mmtm_positions)):
      raise ConfigError(f"config.method.mmtm_positions={self.mmtm_positions!r} must be distinct "
                        "ResNet stages among 1..4, e.g. (2, 3, 4).")
    if not self.mmtm_ratio > 0:
      raise ConfigError(f"config.method.mmtm_ratio={self.mmtm_ratio!r} must be > 0.")
    if self.loss_head is not None and self.loss_head not in ("branch", "fusion"):
      raise ConfigError(f"config.method.loss_head={self.loss_head!r} must be 'branch' or "
                        "'fusion'.")
    if self.utilisation_every < 0:
      raise ConfigError("config.method.utilisation_every must be >= 0 (0: never).")
    if self.utilisation_split not in SPLITS:
      raise ConfigError(f"config.method.utilisation_split must be one of {SPLITS}.")

  def resolved(self) -> tuple[float, int, tuple[int, ...], str]:
    """(threshold, warm-up epochs, MMTM positions, head) with the variant's defaults filled in."""
    threshold, warmup, positions, head = DEFAULTS[self.variant]
    return (threshold if self.threshold is None else float(self.threshold),
            warmup if self.warmup_epochs is None else int(self.warmup_epochs),
            positions if self.mmtm_positions is None else tuple(int(p) for p in
                                                                self.mmtm_positions),
            head if self.loss_head is None else self.loss_head)


def speed_ratio(grads: Any, params: Any, paths: tuple[str, ...]) -> jax.Array:
  """sum |g|^2 / sum |p|^2 over the parameters at top-level `paths` (float32 scalar)."""
  sq = lambda tree: sum(jnp.sum(jnp.square(x.astype(jnp.float32)))
                        for x in jax.tree.leaves(select(tree, paths)))
  return sq(grads) / sq(params)


def init_rebalance_state() -> dict[str, jax.Array]:
  """sums: (M_b,a, M_main,a, M_b,v, M_main,v); curating / counter / caring: the window."""
  return {"sums": jnp.zeros((4,), jnp.float32), "curating": jnp.zeros((), jnp.bool_),
          "counter": jnp.zeros((), jnp.int32), "caring": jnp.zeros((), jnp.int32)}


def rebalance(state: dict[str, jax.Array], ratios: jax.Array, epoch: jax.Array, threshold: float,
              window: int, warmup_epochs: int) -> tuple[dict[str, jax.Array], jax.Array]:
  """One step of GRD's callback (src/callbacks.py:240-267) after the backward pass.

  Args:
    state: `init_rebalance_state()`'s structure, as at the start of the step.
    ratios: (4,) this step's (r_bypass,a, r_main,a, r_bypass,v, r_main,v).
  Returns:
    (state for the next step, d = BDR_a - BDR_v from the sums after this step).
  """
  measure = ~state["curating"]
  sums = jnp.where(measure, state["sums"] + ratios, state["sums"])
  d = jnp.log10(sums[0] / sums[1]) - jnp.log10(sums[2] / sums[3])
  start = measure & (jnp.abs(d) > threshold) & (epoch >= warmup_epochs)
  counter = jnp.where(state["curating"], state["counter"] + 1, 0)
  curating = start | (state["curating"] & (counter < window))
  caring = jnp.where(start, jnp.where(d > 0, 0, 1), jnp.where(measure, 0, state["caring"]))
  return {"sums": sums, "curating": curating, "counter": counter.astype(jnp.int32),
          "caring": caring.astype(jnp.int32)}, d


def utilisation_rates(correct_full: dict[str, np.ndarray], correct_off: dict[str, np.ndarray]
                      ) -> dict[str, float]:
  """u(other | m) per branch m from per-example correctness with the other modality's real
  squeeze (`correct_full`) and with its training mean (`correct_off`), keyed by the OTHER
  modality: {'audio': u(audio | visual), 'visual': u(visual | audio)}."""
  out = {}
  for m, other in (("visual", "audio"), ("audio", "visual")):
    full, off = float(np.mean(correct_full[m])), float(np.mean(correct_off[m]))
    out[other] = (full - off) / full if full > 0 else 0.0
  return out


class Greedy(Method):
  """MMTM-coupled encoders; re-balancing windows chosen from the conditional learning speed."""

  Settings = GreedySettings
  requires = frozenset({"mmtm", "modality_logits"})
  diagnostics = ("greedy_bdr_diff", "greedy_curating", "greedy_caring",
                 "greedy_utilisation_audio", "greedy_utilisation_visual")

  def __init__(self, config: ml_collections.ConfigDict, model: ModelInfo | None = None):
    super().__init__(config, model)
    self.threshold, self.warmup, self.positions, self.head_kind = self.settings.resolved()

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    super().validate(config)
    settings = base.parse_settings(cls.Settings, config)
    if settings.utilisation_every and settings.utilisation_split == "validation" and not (
        config.dataset.val_split):
      raise ConfigError("config.method.utilisation_split='validation' needs "
                        "config.dataset.val_split; set it, or utilisation_split='heldout'.")

  def model_overrides(self) -> dict[str, Any]:
    overrides = {"mmtm_positions": self.positions, "mmtm_ratio": self.settings.mmtm_ratio}
    if self.head_kind == "branch":
      overrides["modality_heads"] = "separate"
    return overrides

  def init_state(self, params):
    del params
    return {**init_rebalance_state(), "utilisation": jnp.zeros((2,), jnp.float32)}

  def branch_paths(self, modality: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(bypass, main) top-level parameter paths of a modality's statistic."""
    main = (f"encoder/{modality}",)
    if self.head_kind == "branch":
      main += (f"head/{modality}",)
    return self.model.paths(f"mmtm/{modality}", "mmtm/shared"), self.model.paths(*main)

  def loss(self, output: ModelOutput, batch: dict[str, jax.Array], state: Any,
           ctx: StepContext) -> tuple[jax.Array, Metrics]:
    if self.head_kind == "fusion":
      return super().loss(output, batch, state, ctx)
    ce = {m: self.task.loss(output.modality_logits[m], batch)[0] for m in MODALITIES}
    loss = ce["audio"] + ce["visual"]
    return loss, {"loss": loss, "loss_audio": ce["audio"], "loss_visual": ce["visual"]}

  def predict(self, output: ModelOutput, state: Any) -> ModelOutput:
    if self.head_kind == "fusion":
      return output
    return output.replace(logits=(output.modality_logits["audio"]
                                  + output.modality_logits["visual"]) / 2)

  def update(self, model: ModelFns, tx, state: TrainState, batch: dict[str, jax.Array],
             ctx: StepContext) -> tuple[TrainState, ModelOutput, Metrics]:
    ms = state.method_state
    curation = jnp.where(ms["curating"], ms["caring"], -1).astype(jnp.int32)
    inputs, mask = model_inputs(batch), batch.get("modality_mask")

    def loss_fn(params):
      output, model_state = model.apply(
          params, state.model_state, lambda m: m(inputs, modality_mask=mask, curation=curation))
      loss, metrics = self.loss(output, batch, ms, ctx)
      return loss, (output, metrics, model_state)

    (_, (output, metrics, model_state)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    ratios = []
    for m in MODALITIES:
      bypass, main = self.branch_paths(m)
      ratios += [speed_ratio(grads, state.params, bypass), speed_ratio(grads, state.params, main)]
    rebal = {k: ms[k] for k in init_rebalance_state()}
    new_rebal, d = rebalance(rebal, jnp.stack(ratios), ctx.epoch, self.threshold,
                             self.settings.window, self.warmup)
    new_state = base.apply_gradients(tx, state, grads, learning_rate=ctx.learning_rate,
                                     model_state=model_state,
                                     method_state={**ms, **new_rebal})
    metrics = {**metrics, "greedy_bdr_diff": d,
               "greedy_curating": ms["curating"].astype(jnp.float32),
               "greedy_caring": jnp.where(ms["curating"], ms["caring"], -1).astype(jnp.float32),
               "greedy_utilisation_audio": ms["utilisation"][0],
               "greedy_utilisation_visual": ms["utilisation"][1]}
    return new_state, self.predict(output, ms), metrics

  def on_epoch_start(self, ctx: EpochContext) -> EpochUpdate:
    plan = super().on_epoch_start(ctx).plan
    every = self.settings.utilisation_every
    if not every or ctx.epoch == 0 or ctx.epoch % every:
      return EpochUpdate(plan=plan)
    rates = self.measure_utilisation(ctx)
    state = dict(ctx.state.method_state)
    state["utilisation"] = jnp.asarray([rates["audio"], rates["visual"]], jnp.float32)
    return EpochUpdate(plan=plan, method_state=state)

  def measure_utilisation(self, ctx: EpochContext) -> dict[str, float]:
    """GRD's recording pass (mean squeezes over the training split) and the two evaluations."""
    squeezes = ctx.run(lambda m, b: m.mmtm_squeezes(model_inputs(b)), "train")
    means = [(np.mean(squeezes[f"audio_{k}"], 0), np.mean(squeezes[f"visual_{k}"], 0))
             for k in range(len(self.positions))]
    split = self.settings.utilisation_split

    def branches(m, b):
      inputs = model_inputs(b)
      full, off = m(inputs), m(inputs, squeeze_means=[tuple(map(jnp.asarray, p)) for p in means])
      out = {f"full_{k}": full.modality_logits[k] for k in MODALITIES}
      return {**out, **{f"off_{k}": off.modality_logits[k] for k in MODALITIES},
              "label": b["label"]}

    out = ctx.run(branches, split)
    correct = lambda kind: {k: np.argmax(out[f"{kind}_{k}"], -1) == out["label"]
                            for k in MODALITIES}
    return utilisation_rates(correct("full"), correct("off"))


METHODS.register("greedy")(Greedy)
