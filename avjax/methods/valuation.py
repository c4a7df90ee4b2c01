"""`valuation_sample` / `valuation_modality`: valuate, then re-sample (Wei et al., CVPR 2024).

Both train with plain cross-entropy on the fused logits. After `warmup_epochs` epochs of plain joint
training, each epoch's plan is built from the Shapley contributions (`avjax.valuation`, eval mode,
eval preprocessing) of the model as it stands at the start of the epoch, i.e. after the previous
epoch, as the reference rebuilds its loader after every epoch e >= warmup - 1 for epoch e + 1.

`valuation_sample` (sample level; reference dataloader.py, sample_level.py): every training example
is valuated; the plan holds all N originals plus, per example i and modality m, k(phi_im) copies that
train modality m ONLY (the others masked through the plan's modality masks, i.e. zeroed pooled
features; BatchNorm statistics still update and only their gradient is zero, as the reference):

  phi < -0.1 -> 3,  -0.1 <= phi <= 0.4 -> 2,  0.4 < phi < 1 -> 1,  phi >= 1 -> 0

(two modalities, 'size' value: phi in {-1/2, 0, 1/2, 1, 3/2} gives 3 / 2 / 1 / 0 / 0 copies).

`valuation_modality` (modality level; modality_level.py, dataloader.py): only a random subset Z of
int(N * part_ratio) examples is valuated (drawn without replacement); with gap_m = 1 - mean_Z(phi_m)
and delta = max_m gap_m - min_m gap_m (|gap_a - gap_v| for two modalities):

  d = delta * 2/3 * alpha            ('linear')
  d = tanh(delta * 2/3 * alpha)      ('tanh')
  d = (delta * 2/3)^1.5 * alpha      ('square')

and int(d * N) examples drawn uniformly with replacement are added as copies that train only the
modality with the largest gap (ties: the later one, as the reference's `else` branch).

Plans are shuffled (originals and copies together) and deterministic in (seed, epoch, model state);
the trainer saves them, so a resumed epoch replays its plan. The learning-rate schedule counts
EPOCHS, as the reference's StepLR stepped once per epoch: the trainer evaluates schedules at each
step's fractional epoch (avjax.optim.schedule_step), so a re-sampled (longer) epoch keeps the plain
epoch's rate boundaries.

Per-sample training-set contributions (with the copies made) come back in the EpochUpdate; the
trainer writes them to `<workdir>/valuation/train_epoch_<e>_step_<s>.csv` and their means to
valuation/summary.jsonl.

Config keys (config.method.*, defaults when absent): warmup_epochs (5), value_fn ('size': v(S) =
|S| 1[correct], the paper repo; 'correct': v(S) = 1[correct], BalanceBenchmark); modality level
only: part_ratio (0.2), alpha (1.0), resample_fn ('linear' | 'tanh' | 'square').
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from avjax import valuation
from avjax.data.pipeline import EpochPlan, shuffled_plan
from avjax.methods import base
from avjax.methods.base import (METHODS, Contributions, EpochContext, EpochUpdate, Method, Metrics,
                                StepContext)
from avjax.models.contract import ModelInfo
from avjax.models.outputs import MODALITIES, ModelOutput
from avjax.registry import ConfigError
from avjax.state import ModelFns, TrainState

log = logging.getLogger(__name__)

RESAMPLE_FNS = ("linear", "tanh", "square")
# Sample-level thresholds on phi (reference dataloader.py, intervals closed where it left gaps).
COPY_BOUNDS = (-0.1, 0.4, 1.0)


@dataclasses.dataclass(frozen=True)
class SampleLevelSettings(base.Settings):
  """warmup_epochs: plain epochs before re-sampling (5: the reference's --warmup_epoch default);
  value_fn: the valuation's value function, 'size' (v(S) = |S| 1[correct], the paper repo) or
  'correct' (v(S) = 1[correct], BalanceBenchmark)."""

  warmup_epochs: int = 5
  value_fn: str = "size"

  def __post_init__(self):
    super().__post_init__()
    if self.value_fn not in valuation.VALUE_FNS:
      raise ConfigError(f"config.method.value_fn={self.value_fn!r} is not one of "
                        f"{valuation.VALUE_FNS} ('size': v(S) = |S| 1[correct], the paper repo; "
                        "'correct': v(S) = 1[correct], BalanceBenchmark).")
    if not isinstance(self.warmup_epochs, int) or self.warmup_epochs < 1:
      raise ConfigError(f"config.method.warmup_epochs={self.warmup_epochs!r} must be an integer "
                        ">= 1: the first epoch always trains on the plain set (there is nothing "
                        "to valuate before it), as in the reference.")


@dataclasses.dataclass(frozen=True)
class ModalityLevelSettings(SampleLevelSettings):
  """part_ratio: share of the training set valuated each epoch (0.2), alpha: re-sampling strength
  (1.0), resample_fn: 'linear' | 'tanh' | 'square' (reference modality_level.py defaults)."""

  part_ratio: float = 0.2
  alpha: float = 1.0
  resample_fn: str = "linear"

  def __post_init__(self):
    super().__post_init__()
    if not 0 < self.part_ratio <= 1:
      raise ConfigError(f"config.method.part_ratio={self.part_ratio!r} must be in (0, 1] (the "
                        "fraction of the training set valuated each epoch; reference 0.2).")
    if not self.alpha >= 0:
      raise ConfigError(f"config.method.alpha={self.alpha!r} must be >= 0 (reference 1).")
    if self.resample_fn not in RESAMPLE_FNS:
      raise ConfigError(f"config.method.resample_fn={self.resample_fn!r} is not one of "
                        f"{RESAMPLE_FNS}.")


def copies_for(phi: np.ndarray) -> np.ndarray:
  """Copies per contribution (int64, same shape): 3 below -0.1, 2 up to 0.4, 1 below 1, else 0."""
  phi = np.asarray(phi, np.float64)
  low, mid, high = COPY_BOUNDS
  return np.select([phi < low, phi <= mid, phi < high], [3, 2, 1], 0).astype(np.int64)


def only(modality: int, num_modalities: int) -> np.ndarray:
  """(M,) float32 mask keeping one modality."""
  mask = np.zeros(num_modalities, np.float32)
  mask[modality] = 1.0
  return mask


def _shuffled(indices: np.ndarray, masks: np.ndarray, seed: int, epoch: int) -> EpochPlan:
  order = np.random.default_rng([seed, epoch]).permutation(len(indices))
  return EpochPlan(indices=np.asarray(indices, np.int64)[order],
                   modality_masks=np.asarray(masks, np.float32)[order])


def sample_level_plan(phi: np.ndarray, seed: int, epoch: int) -> tuple[EpochPlan, np.ndarray]:
  """All N originals plus `copies_for(phi[i, m])` single-modality copies of each example.

  Args:
    phi: (N, M) contributions of source examples 0..N-1.
  Returns:
    (the shuffled plan, (N, M) copies per example and modality).
  """
  n, m_count = phi.shape
  copies = copies_for(phi)
  indices = [np.arange(n)]
  masks = [np.ones((n, m_count), np.float32)]
  for m in range(m_count):
    repeated = np.repeat(np.arange(n), copies[:, m])
    indices.append(repeated)
    masks.append(np.broadcast_to(only(m, m_count), (len(repeated), m_count)))
  return _shuffled(np.concatenate(indices), np.concatenate(masks), seed, epoch), copies


def resample_fraction(mean_phi: np.ndarray, fn: str = "linear", alpha: float = 1.0
                      ) -> tuple[float, int]:
  """(d, weakest modality) from the mean contributions (M,) over the valuated subset."""
  gap = 1.0 - np.asarray(mean_phi, np.float64)
  delta = float(gap.max() - gap.min())
  x = delta * 2.0 / 3.0
  if fn == "linear":
    d = x * alpha
  elif fn == "tanh":
    d = float(np.tanh(x * alpha))
  elif fn == "square":
    d = x**1.5 * alpha
  else:
    raise ValueError(f"resample_fn must be one of {RESAMPLE_FNS}, got {fn!r}.")
  weakest = len(gap) - 1 - int(np.argmax(gap[::-1]))  # Ties: the later modality.
  return d, weakest


def modality_level_plan(num_examples: int, fraction: float, weakest: int, num_modalities: int,
                        seed: int, epoch: int) -> tuple[EpochPlan, int]:
  """All originals plus int(fraction * N) uniform draws (with replacement) training `weakest` only.
  Returns (the shuffled plan, the number of copies)."""
  count = int(fraction * num_examples)
  drawn = np.random.default_rng([seed, epoch, 2]).integers(0, num_examples, count)
  indices = np.concatenate([np.arange(num_examples), drawn])
  masks = np.concatenate([np.ones((num_examples, num_modalities), np.float32),
                          np.broadcast_to(only(weakest, num_modalities), (count, num_modalities))])
  return _shuffled(indices, masks, seed, epoch), count


def valuation_subset(num_examples: int, part_ratio: float, seed: int, epoch: int) -> np.ndarray:
  """Z: int(N * part_ratio) (at least 1) distinct examples, sorted; deterministic in (seed, epoch)."""
  size = min(max(int(num_examples * part_ratio), 1), num_examples)
  rng = np.random.default_rng([seed, epoch, 1])
  return np.sort(rng.choice(num_examples, size=size, replace=False))


class ValuationResampling(Method):
  """Shared by both levels: warm-up, valuation passes."""

  Settings = SampleLevelSettings
  requires = frozenset({"encode_fuse"})
  diagnostics = ("single_modality_frac", "shapley_audio", "shapley_visual")

  def __init__(self, config: ml_collections.ConfigDict, model: ModelInfo | None = None):
    super().__init__(config, model)
    self.warmup = int(self.settings.warmup_epochs)
    self.value_fn = str(self.settings.value_fn)
    self.valuation_fn = valuation.make_valuation_fn(self.value_fn)  # One object: one compile.

  # ------------------------------------------------------------------------------ training
  def update(self, model: ModelFns, tx: optax.GradientTransformation, state: TrainState,
             batch: dict[str, jax.Array], ctx: StepContext
             ) -> tuple[TrainState, ModelOutput, Metrics]:
    new_state, output, metrics = super().update(model, tx, state, batch, ctx)
    copies = jnp.mean(jnp.any(batch["modality_mask"] < 1, axis=-1).astype(jnp.float32)) \
        if "modality_mask" in batch else jnp.zeros((), jnp.float32)
    return new_state, output, {**metrics, "single_modality_frac": copies}

  # ------------------------------------------------------------------------------ planning
  def on_epoch_start(self, ctx: EpochContext) -> EpochUpdate:
    if ctx.epoch < self.warmup:
      return EpochUpdate(plan=shuffled_plan(ctx.num_examples, ctx.seed, ctx.epoch))
    plan, contributions = self.resampled_plan(ctx)
    return EpochUpdate(plan=plan, contributions=contributions)

  def resampled_plan(self, ctx: EpochContext) -> tuple[EpochPlan, Contributions]:
    """The epoch's plan and the training-set valuation it came from."""
    raise NotImplementedError

  def valuate(self, ctx: EpochContext, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Contributions of training examples `indices` under the epoch-start state (every host)."""
    out = ctx.run(self.valuation_fn, "train", indices)
    if out["shapley"].shape[1] != len(MODALITIES):
      raise ConfigError(f"Re-sampling plans mask the {len(MODALITIES)} modalities {MODALITIES}; the "
                        f"model valuates {out['shapley'].shape[1]}.")
    return out

  @staticmethod
  def record(out: dict[str, np.ndarray], extra: dict[str, np.ndarray] | None = None,
             summary: dict[str, Any] | None = None) -> Contributions:
    """The training-set valuation of the epoch-start state, as data for the run's files."""
    predictions = {k: v for k, v in out.items() if k not in ("shapley", "subset_correct")}
    predictions.update({f"shapley_{m}": out["shapley"][:, i] for i, m in enumerate(MODALITIES)})
    return Contributions(predictions=predictions, extra=extra, summary=summary)


@METHODS.register("valuation_sample")
class SampleLevel(ValuationResampling):
  """Sample-level re-sampling: per example and modality, 0-3 copies training that modality only."""

  def resampled_plan(self, ctx: EpochContext) -> tuple[EpochPlan, Contributions]:
    n = ctx.num_examples
    out = self.valuate(ctx, np.arange(n))
    phi = np.zeros((n, len(MODALITIES)), np.float64)
    phi[out["index"]] = out["shapley"]
    plan, copies = sample_level_plan(phi, ctx.seed, ctx.epoch)
    totals = {f"copies_{m}": int(copies[:, i].sum()) for i, m in enumerate(MODALITIES)}
    log.info("epoch %d plan: %d originals + copies %s", ctx.epoch + 1, n, totals)
    return plan, self.record(out, extra={f"copies_{m}": copies[out["index"], i]
                                         for i, m in enumerate(MODALITIES)}, summary=totals)


@METHODS.register("valuation_modality")
class ModalityLevel(ValuationResampling):
  """Modality-level re-sampling: valuate a subset, add copies training the weaker modality."""

  Settings = ModalityLevelSettings

  def resampled_plan(self, ctx: EpochContext) -> tuple[EpochPlan, Contributions]:
    n = ctx.num_examples
    subset = valuation_subset(n, float(self.settings.part_ratio), ctx.seed, ctx.epoch)
    out = self.valuate(ctx, subset)
    fraction, weakest = resample_fraction(out["shapley"].mean(0), str(self.settings.resample_fn),
                                          float(self.settings.alpha))
    plan, count = modality_level_plan(n, fraction, weakest, len(MODALITIES), ctx.seed, ctx.epoch)
    summary = {"resample_fraction": fraction, "resample_count": count,
               "resample_modality": MODALITIES[weakest]}
    log.info("epoch %d plan: %d originals + %s", ctx.epoch + 1, n, summary)
    return plan, self.record(out, summary=summary)
