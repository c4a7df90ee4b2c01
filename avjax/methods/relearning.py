"""`relearning`: Diagnosing & Re-learning (Wei, Li, Feng, Hu, ECCV 2024).

Training is plain cross-entropy on the fused logits. Every `reinit_epoch` epochs (after epochs
R, 2R, ... of 0-indexed epochs, at most `reinit_num` times) each encoder's learning state is
diagnosed and the encoder is softly re-initialised (GeWu-Lab/Diagnosing_Relearning_ECCV2024
code/ours.py @ 025085e, lines 63-166 and 418-425):

  per modality m, on pooled eval-mode features of the training examples and of a held-out set:
    MinMax-scale each set to [-1, 1] per dimension, k-means with k = classes (n_init 10, seeded),
    purity P = (1/N) sum_clusters max_label count(cluster, label)
  g_m = |P_train^m - P_heldout^m|,   w_m = tanh(move_lambda * g_m)
  theta_m <- w_m * theta_m^init + (1 - w_m) * theta_m      (every parameter of 'encoder/<m>')

theta^init is the run's initial parameters (`init_state`). BatchNorm statistics (model state),
the fusion head and the optimizer state (SGD momentum) are left as they are, as in the original.

The held-out set is the seeded held-out fold of the TRAINING split (`EpochContext.heldout`), and
the model trains on the rest of it (the original trains on my_train and diagnoses on val, the two
halves of train.csv); the test split is never read. The diagnosis runs at the start of the epoch
after the one it follows (the original runs it after that epoch's evaluation: the same order); it
records the weights in the method state and the first training step of the epoch applies them,
inside the traced update (so a run stopped mid-epoch resumes with the re-initialised weights it
checkpointed). k-means is a seeded numpy implementation of scikit-learn's (greedy k-means++,
Lloyd, best inertia of n_init): deterministic, so a resumed epoch start repeats it exactly.

Config keys (config.method.*): move_lambda (3), reinit_epoch (20), reinit_num (3), kmeans_init
(10), kmeans_seed (0).

Logged metrics (the latest diagnosis; 0 before the first): relearning_purity_{train,heldout}_<m>,
relearning_gap_<m>, relearning_weight_<m>, relearning_reinits (re-initialisations so far).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from avjax.data.pipeline import EpochPlan
from avjax.methods import base
from avjax.methods.base import METHODS, EpochContext, EpochUpdate, Method, Metrics, StepContext
from avjax.models.contract import ModelInfo, replace, select
from avjax.models.outputs import MODALITIES
from avjax.registry import ConfigError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RelearningSettings(base.Settings):
  """move_lambda: the strength lambda in w = tanh(lambda * gap) (ours.py:53 and script/ours.sh: 3).
  reinit_epoch: re-initialise after every reinit_epoch-th 0-indexed epoch (ours.py:55: 20).
  reinit_num: at most this many re-initialisations (ours.py:56: 3).
  kmeans_init: k-means restarts, the best inertia kept (scikit-learn's default before 1.4: 10).
  kmeans_seed: k-means seed (KMeans(random_state=0) in ours.py:108)."""

  move_lambda: float = 3.0
  reinit_epoch: int = 20
  reinit_num: int = 3
  kmeans_init: int = 10
  kmeans_seed: int = 0

  def __post_init__(self):
    super().__post_init__()
    if not self.move_lambda >= 0:
      raise ConfigError(f"config.method.move_lambda={self.move_lambda!r} must be >= 0 (the "
                        "original uses 3; 0 never re-initialises).")
    if self.reinit_epoch < 1 or self.reinit_num < 0:
      raise ConfigError(f"config.method.reinit_epoch={self.reinit_epoch!r} must be >= 1 and "
                        f"reinit_num={self.reinit_num!r} >= 0 (the original uses 20 and 3).")
    if self.kmeans_init < 1:
      raise ConfigError(f"config.method.kmeans_init={self.kmeans_init!r} must be >= 1.")


# ----------------------------------------------------------------------------- diagnosis (host)
def purity(labels: np.ndarray, clusters: np.ndarray) -> float:
  """Cluster purity: the share of examples whose label is their cluster's majority label.
  labels, clusters: (N,) ints."""
  labels, clusters = np.asarray(labels), np.asarray(clusters)
  total = 0
  for c in np.unique(clusters):
    total += np.bincount(labels[clusters == c]).max()
  return float(total) / len(labels)


def minmax_scale(x: np.ndarray) -> np.ndarray:
  """Per-dimension affine map of (N, D) features onto [-1, 1] (scikit-learn's MinMaxScaler
  with feature_range (-1, 1); a constant dimension maps to -1)."""
  x = np.asarray(x, np.float64)
  low, high = x.min(0), x.max(0)
  span = np.where(high - low == 0, 1.0, high - low)
  return (x - low) * (2.0 / span) - 1.0


def _sq_distances(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
  """(N, K) squared Euclidean distances, clipped at 0."""
  d = (np.sum(x * x, 1)[:, None] - 2.0 * x @ centers.T + np.sum(centers * centers, 1)[None])
  return np.maximum(d, 0.0)


def _kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
  """Greedy k-means++ seeding (2 + log k candidates per centre, the best potential kept)."""
  n = len(x)
  trials = 2 + int(math.log(k))
  centers = [x[rng.integers(n)]]
  closest = _sq_distances(x, centers[0][None])[:, 0]
  for _ in range(1, k):
    total = closest.sum()
    if total <= 0:  # Fewer distinct points than centres: any point will do.
      centers.append(x[rng.integers(n)])
      continue
    cumulative = np.cumsum(closest)
    candidates = np.minimum(np.searchsorted(cumulative, rng.random(trials) * total), n - 1)
    trial = np.minimum(closest[None], _sq_distances(x, x[candidates]).T)  # (trials, N)
    best = int(np.argmin(trial.sum(1)))
    centers.append(x[candidates[best]])
    closest = trial[best]
  return np.stack(centers)


def kmeans(x: np.ndarray, k: int, *, n_init: int = 10, seed: int = 0, max_iter: int = 300,
           tol: float = 1e-4) -> np.ndarray:
  """Cluster indices (N,) of (N, D) points: Lloyd's k-means from greedy k-means++ seeds, the
  lowest-inertia of `n_init` runs (scikit-learn's algorithm; tolerance relative to the mean
  per-dimension variance; an empty cluster moves to the point farthest from its centre).
  Deterministic in `seed`."""
  x = np.asarray(x, np.float64)
  rng = np.random.default_rng(seed)
  tol = tol * float(np.mean(np.var(x, axis=0)))
  best_inertia, best_labels = np.inf, None
  for _ in range(n_init):
    centers = _kmeans_plus_plus(x, k, rng)
    for _ in range(max_iter):
      dist = _sq_distances(x, centers)
      labels = np.argmin(dist, 1)
      counts = np.bincount(labels, minlength=k)
      sums = np.zeros_like(centers)
      np.add.at(sums, labels, x)
      new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centers)
      for j in np.flatnonzero(counts == 0):  # Relocate empty clusters.
        new[j] = x[np.argmax(dist[np.arange(len(x)), labels])]
      shift = float(np.sum((new - centers) ** 2))
      centers = new
      if shift <= tol:
        break
    dist = _sq_distances(x, centers)
    labels = np.argmin(dist, 1)
    inertia = float(dist[np.arange(len(x)), labels].sum())
    if inertia < best_inertia:
      best_inertia, best_labels = inertia, labels
  return best_labels


def reinit_weight(purity_train: float, purity_heldout: float, move_lambda: float) -> float:
  """w = tanh(lambda * |P_train - P_heldout|)."""
  return math.tanh(move_lambda * abs(purity_train - purity_heldout))


def reinit_due(finished_epoch: int, reinit_epoch: int, reinit_num: int) -> bool:
  """Whether the original re-initialises after 0-indexed `finished_epoch` (ours.py:418-420)."""
  index = finished_epoch // reinit_epoch  # 1-based count of the re-initialisation it would be.
  return finished_epoch > 0 and finished_epoch % reinit_epoch == 0 and index <= reinit_num


def interpolate(initial: Any, current: Any, weight: jax.Array, keep: jax.Array) -> Any:
  """weight * theta_init + keep * theta, leaf by leaf (keep = 1 - weight, rounded once)."""
  return jax.tree.map(lambda i, c: weight * i + keep * c, initial, current)


def features_and_labels(model: nnx.Module, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Per-example pooled encoder features {m: (B, D)} and labels (B,): an eval-mode pass."""
  return {**model.encode(batch), "label": batch["label"]}


class Relearning(Method):
  """Cross-entropy; purity-diagnosed soft re-initialisation of the encoders (see module)."""

  Settings = RelearningSettings
  requires = frozenset({"encode_fuse", "modality_encoders"})
  diagnostics = tuple(f"relearning_{k}_{m}" for k in ("purity_train", "purity_heldout", "gap",
                                                      "weight") for m in MODALITIES
                      ) + ("relearning_reinits",)

  def __init__(self, config: ml_collections.ConfigDict, model: ModelInfo | None = None):
    super().__init__(config, model)
    self.modalities = MODALITIES

  def _paths(self, modality: str) -> tuple[str, ...]:
    return self.model.paths(f"encoder/{modality}")

  def init_state(self, params: nnx.State) -> dict[str, Any]:
    zero = lambda: {m: jnp.zeros((), jnp.float32) for m in self.modalities}
    # Own buffers (the state is donated to the step): theta^init of every encoder.
    initial = {m: jax.tree.map(jnp.copy, select(params, self._paths(m))) for m in self.modalities}
    return {"initial": initial, "pending": jnp.zeros((), jnp.bool_), "weight": zero(),
            "keep": {m: jnp.ones((), jnp.float32) for m in self.modalities},
            "purity_train": zero(), "purity_heldout": zero(), "gap": zero(),
            "reinits": jnp.zeros((), jnp.int32)}

  def on_epoch_start(self, ctx: EpochContext) -> EpochUpdate:
    fit, _ = ctx.heldout()  # Train on the fit fold; the held-out fold is only diagnosed.
    plan = EpochPlan(fit[np.random.default_rng([ctx.seed, ctx.epoch]).permutation(len(fit))])
    s = self.settings
    if not reinit_due(ctx.epoch - 1, s.reinit_epoch, s.reinit_num):
      return EpochUpdate(plan=plan)
    train, held = ctx.run(features_and_labels, "train", fit), ctx.run(features_and_labels,
                                                                      "heldout")
    classes = self.model.num_outputs
    if min(len(train["label"]), len(held["label"])) < classes:
      raise ConfigError(f"method 'relearning' clusters into {classes} classes but the held-out "
                        f"fold has {len(held['label'])} examples; use a larger training split.")
    new = {k: {} for k in ("weight", "keep", "purity_train", "purity_heldout", "gap")}
    for m in self.modalities:
      p_train, p_held = (purity(d["label"], kmeans(minmax_scale(d[m]), classes,
                                                   n_init=s.kmeans_init, seed=s.kmeans_seed))
                         for d in (train, held))
      w = reinit_weight(p_train, p_held, s.move_lambda)  # float64, as DR's; rounded once below.
      for key, value in (("purity_train", p_train), ("purity_heldout", p_held),
                         ("gap", abs(p_train - p_held)), ("weight", w), ("keep", 1.0 - w)):
        new[key][m] = jnp.float32(value)
      log.info("relearning: epoch %d, %s purity train %.4f held-out %.4f -> weight %.4f",
               ctx.epoch, m, p_train, p_held, w)
    method_state = {**ctx.state.method_state, **new,
                    "pending": jnp.ones((), jnp.bool_),
                    "reinits": ctx.state.method_state["reinits"] + 1}
    return EpochUpdate(plan=plan, method_state=method_state)

  def relearn(self, params: nnx.State, state: dict[str, Any]) -> nnx.State:
    """Params with every encoder interpolated toward its initial weights (the state's w_m)."""
    new = {}
    for m in self.modalities:
      current = select(params, self._paths(m))
      new.update(interpolate(state["initial"][m], current, state["weight"][m], state["keep"][m]))
    return replace(params, new)

  def update(self, model, tx, state, batch, ctx: StepContext):
    ms = state.method_state
    params = jax.lax.cond(ms["pending"], lambda p: self.relearn(p, ms), lambda p: p, state.params)
    state = state.replace(params=params, method_state={**ms, "pending": jnp.zeros_like(
        ms["pending"])})
    new_state, output, metrics = super().update(model, tx, state, batch, ctx)
    return new_state, output, {**metrics, **self.state_metrics(ms)}

  def state_metrics(self, state: dict[str, Any]) -> Metrics:
    """The latest diagnosis and the re-initialisation count as scalar metrics."""
    out = {f"relearning_{k}_{m}": state[k][m] for k in ("purity_train", "purity_heldout", "gap",
                                                        "weight") for m in self.modalities}
    out["relearning_reinits"] = state["reinits"].astype(jnp.float32)
    return out


METHODS.register("relearning")(Relearning)
