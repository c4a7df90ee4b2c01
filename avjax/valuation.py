"""Sample-level modality valuation: exact Shapley contributions of each modality to each example.

Wei et al., CVPR 2024 (GeWu-Lab/Valuate-and-Enhance-Multimodal-Cooperation). The players are the M
modalities; a coalition S keeps the encoder outputs of its modalities (pooled features for
'av_resnet') and zeroes the others before the fusion head (the model's `fuse`), so one `encode` pass
per example serves every coalition and each coalition costs one head evaluation. With correct(S) = 1[argmax fuse(features * 1_S) = y]:

  v(S) = |S| * correct(S)   ('size', the paper repo's default; v({a, v}) = 2 * 1[fused correct])
  v(S) = correct(S)         ('correct', BalanceBenchmark)
  v(empty) = 0 for both (the empty coalition is never evaluated)

  phi_m = sum_{S not containing m} |S|! (M - |S| - 1)! / M! * (v(S + m) - v(S))

Shapley values are linear in v, so phi = v @ A with a constant (2^M, M) matrix A: the same product runs
inside jit (per-example valuation in the eval step and in training-set passes) and on the host. They
are efficient: sum_m phi_m = v(all) - v(empty). Two modalities, 'size' form:
phi_a = (v_a + v_av - v_v) / 2, phi_v = (v_v + v_av - v_a) / 2, values in {-1/2, 0, 1/2, 1, 3/2}.

Coalitions are numbered by bit masks: coalition s holds modality m when bit m of s is set (modality
order: `players`), so column 0 is the empty coalition and column 2^M - 1 the full one.

This module also holds the per-split diagnostics of the `contributions` evaluator
(avjax/evaluators/standard.py calls `eval_contributions`, `contribution_report`, `write_artifacts`):
per-example contributions in the predictions, their means as `shapley_<modality>` metrics, and
`<workdir>/valuation/` files (per-sample CSVs, summary.jsonl, contributions.png).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from avjax import workdir as workdir_lib
from avjax.models.outputs import MODALITIES
from avjax.state import model_inputs

VALUE_FNS = ("size", "correct")
SUMMARY_FILE = "summary.jsonl"
PLOT_FILE = "contributions.png"
# The diagnostics redraw contributions.png every this many epochs and at the last one.
PLOT_EVERY_EPOCHS = 5
# Ground-truth flags some datasets carry (synthetic_av); copied into the per-sample files.
FLAG_KEYS = tuple(f"{m}_informative" for m in MODALITIES)


def players(features: Mapping[str, Any]) -> list[str]:
  """The modalities valuated: the keys of `encode`'s output that are modalities, in `MODALITIES`
  order (the order of model modality masks). Other entries (e.g. sequence masks) are never
  zeroed."""
  return [m for m in MODALITIES if m in features]


def modality_order(names: Sequence[str]) -> list[str]:
  """`MODALITIES` first (in that order), then any other names sorted (host-side tables)."""
  names = list(names)
  return [m for m in MODALITIES if m in names] + sorted(m for m in names if m not in MODALITIES)


def coalitions(num_modalities: int) -> np.ndarray:
  """(2^M, M) bool: row s holds modality m iff bit m of s is set."""
  s = np.arange(2**num_modalities)[:, None]
  return ((s >> np.arange(num_modalities)[None, :]) & 1).astype(bool)


def shapley_weights(num_modalities: int) -> np.ndarray:
  """(2^M, M) float64 W with phi = v @ W for coalition values v (..., 2^M), v[..., 0] = v(empty).

  v(T) enters phi_m with +|T-1|! (M-|T|)! / M! when m is in T (as S + m, S = T - m) and with
  -|T|! (M-|T|-1)! / M! when it is not (as S).
  """
  m_count = num_modalities
  members = coalitions(m_count)
  size = members.sum(1)
  fact = math.factorial
  w = np.zeros(members.shape, np.float64)
  for s, row in enumerate(members):
    k = int(size[s])
    for m in range(m_count):
      if row[m]:
        w[s, m] = fact(k - 1) * fact(m_count - k) / fact(m_count)
      else:
        w[s, m] = -fact(k) * fact(m_count - k - 1) / fact(m_count)
  return w


def value_scale(num_modalities: int, value_fn: str) -> np.ndarray:
  """(2^M,) factor turning correct(S) into v(S): |S| ('size') or 1 ('correct'); 0 for the empty S."""
  check_value_fn(value_fn)
  size = coalitions(num_modalities).sum(1).astype(np.float64)
  return size if value_fn == "size" else (size > 0).astype(np.float64)


def contribution_matrix(num_modalities: int, value_fn: str) -> np.ndarray:
  """(2^M, M) float64 A with phi = correct @ A (correct: (..., 2^M) 0/1 per coalition)."""
  return value_scale(num_modalities, value_fn)[:, None] * shapley_weights(num_modalities)


def shapley_values(values: np.ndarray) -> np.ndarray:
  """Exact Shapley values (host, float64) from coalition values (..., 2^M) -> (..., M)."""
  values = np.asarray(values, np.float64)
  m_count = int(round(math.log2(values.shape[-1])))
  if 2**m_count != values.shape[-1]:
    raise ValueError(f"Coalition values need 2^M entries on the last axis, got {values.shape}.")
  return values @ shapley_weights(m_count)


def check_value_fn(value_fn: str) -> None:
  if value_fn not in VALUE_FNS:
    raise ValueError(f"value_fn must be one of {VALUE_FNS}, got {value_fn!r}.")


# ----------------------------------------------------------------------------- traced valuation
def subset_correct(model: Any, features: Mapping[str, jax.Array], labels: jax.Array,
                   order: Sequence[str]) -> jax.Array:
  """(B, 2^M) float32: whether `model.fuse` on the features of coalition s predicts the label.

  features: `model.encode`'s output; the modalities `order` outside the coalition are zeroed (the
  reference zeroes pooled features; sequences and maps are zeroed whole, as a zero modality mask
  does), everything else passes unchanged. Column 0 (empty coalition) is 0 and never evaluated, so
  this costs 2^M - 1 head evaluations (3 for audio-visual).
  """
  batch = labels.shape[0]
  columns = [jnp.zeros((batch,), jnp.float32)]
  for row in coalitions(len(order))[1:]:
    masked = dict(features)
    masked.update({m: jnp.zeros_like(features[m]) for i, m in enumerate(order) if not row[i]})
    logits = model.fuse(masked).logits
    columns.append((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
  return jnp.stack(columns, axis=-1)


def contributions(model: Any, features: Mapping[str, jax.Array], labels: jax.Array,
                  value_fn: str = "size", order: Sequence[str] | None = None
                  ) -> dict[str, jax.Array]:
  """{'subset_correct': (B, 2^M) float32, 'shapley': (B, M) float32}, modalities in `order`
  (default `players(features)`)."""
  order = players(features) if order is None else list(order)
  correct = subset_correct(model, features, labels, order)
  matrix = jnp.asarray(contribution_matrix(len(order), value_fn), jnp.float32)
  # Highest precision: the products are exact small fractions, identical on any device count.
  shapley = jnp.matmul(correct, matrix, precision=jax.lax.Precision.HIGHEST)
  return {"subset_correct": correct, "shapley": shapley}


def make_valuation_fn(value_fn: str = "size") -> Callable[[Any, dict], dict[str, jax.Array]]:
  """A PerExampleFn (model, batch) -> `contributions` from one `model.encode` pass, plus 'label'
  and any ground-truth `<modality>_informative` flags; for `EpochContext.run`. Make it once and
  reuse it: the trainer caches its compiled pass by the function object."""
  check_value_fn(value_fn)

  def valuation_fn(model: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    features = model.encode(model_inputs(batch))
    out = contributions(model, features, batch["label"], value_fn)
    out["label"] = batch["label"]
    out.update({k: batch[k].astype(jnp.float32) for k in FLAG_KEYS if k in batch})
    return out

  return valuation_fn


def supports_valuation(model: Any) -> bool:
  """Whether the model exposes the encode / fuse split valuation needs."""
  return callable(getattr(model, "encode", None)) and callable(getattr(model, "fuse", None))


def eval_contributions(model: Any, output: Any, batch: Mapping[str, jax.Array],
                       value_fn: str = "size") -> dict[str, jax.Array]:
  """Per-example `shapley_<modality>` (B,) for the eval predictions, inside the eval step.

  `encode` runs on the batch's inputs in the forward's compute dtype (identical to the forward's
  own encoder pass, which XLA's common-subexpression elimination shares), then one head evaluation
  per coalition. {} for models without encode / fuse, outputs that are not (B, C) logits, batches
  without labels, or fewer than two modalities. The ground-truth `<modality>_informative` flags
  pass through when the batch has them.
  """
  logits = getattr(output, "logits", None)
  if (not supports_valuation(model) or "label" not in batch or logits is None
      or logits.ndim != 2):
    return {}
  inputs = model_inputs(batch)
  if jnp.issubdtype(logits.dtype, jnp.floating) and logits.dtype != jnp.float32:
    inputs = jax.tree.map(
        lambda x: x.astype(logits.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, inputs)
  features = model.encode(inputs)
  order = players(features)
  if len(order) < 2:
    return {}
  shapley = contributions(model, features, batch["label"], value_fn, order)["shapley"]
  out = {f"shapley_{m}": shapley[:, i] for i, m in enumerate(order)}
  out.update({k: batch[k].astype(jnp.float32) for k in FLAG_KEYS if k in batch})
  return out


# ------------------------------------------------------------------------------- host reports
def per_sample(predictions: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """{modality: (N,) contributions} found in predictions (`shapley_<modality>` keys)."""
  names = [k[len("shapley_"):] for k in predictions if k.startswith("shapley_")]
  return {m: np.asarray(predictions[f"shapley_{m}"], np.float64) for m in modality_order(names)}


def contribution_report(predictions: Mapping[str, np.ndarray]) -> dict[str, float]:
  """Split-level `shapley_<modality>`: the mean contribution over the evaluated examples."""
  return {f"shapley_{m}": float(np.mean(v)) for m, v in per_sample(predictions).items() if len(v)}


def write_table(path: str, columns: Mapping[str, np.ndarray]) -> None:
  """A CSV with a header row; integer columns as integers, the rest with 6 decimals."""
  names = list(columns)
  arrays = [np.asarray(columns[n]).reshape(-1) for n in names]
  fmt = ["%d" if np.issubdtype(a.dtype, np.integer) else "%.6g" for a in arrays]
  data = np.stack([a.astype(np.float64) for a in arrays], 1) if arrays else np.zeros((0, 0))
  tmp = path + ".tmp"
  np.savetxt(tmp, data, fmt=fmt, delimiter=",", header=",".join(names), comments="")
  os.replace(tmp, path)


def append_summary(workdir: str, row: Mapping[str, Any]) -> None:
  """Appends one JSON row (split, epoch, step, num_examples, shapley_<m>) to summary.jsonl."""
  with open(os.path.join(workdir_lib.folder(workdir_lib.valuation(workdir)), SUMMARY_FILE),
            "a") as f:
    f.write(json.dumps(dict(row)) + "\n")


def read_summary(workdir: str) -> list[dict[str, Any]]:
  """summary.jsonl rows, keeping per (split, epoch) the row of the latest step (a final evaluation of
  the best checkpoint never hides the last epoch's own row), sorted by split and epoch."""
  path = workdir_lib.valuation(workdir, SUMMARY_FILE)
  if not os.path.exists(path):
    return []
  latest: dict[tuple[str, int], dict[str, Any]] = {}
  with open(path) as f:
    for line in f:
      if line.strip():
        row = json.loads(line)
        key = (row["split"], int(row["epoch"]))
        if key not in latest or row["step"] >= latest[key]["step"]:
          latest[key] = row
  return [latest[k] for k in sorted(latest)]


def plot_summary(workdir: str) -> str:
  """contributions.png: mean contribution per modality over epochs, one line per (split, modality)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  from matplotlib.ticker import MaxNLocator  # pylint: disable=import-outside-toplevel

  rows = read_summary(workdir)
  fig = Figure(figsize=(6, 3.6), layout="constrained")
  FigureCanvasAgg(fig)
  ax = fig.subplots()
  order = {"train": 0, "validation": 1, "val": 1, "test": 2}
  splits = sorted({r["split"] for r in rows}, key=lambda s: (order.get(s, 3), s))
  names = modality_order({k[len("shapley_"):] for r in rows for k in r if k.startswith("shapley_")})
  styles = ("-", "--", ":", "-.")
  for si, split in enumerate(splits):
    for mi, m in enumerate(names):
      pts = [(r["epoch"], r[f"shapley_{m}"]) for r in rows
             if r["split"] == split and f"shapley_{m}" in r]
      if pts:
        xs, ys = zip(*pts)
        ax.plot(xs, ys, styles[si % len(styles)], color=f"C{mi}", marker="o", markersize=3,
                label=f"{split} {m}")
  ax.set_xlabel("epoch")
  ax.set_ylabel("mean Shapley contribution")
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.grid(True, alpha=0.3)
  if ax.get_lines():
    ax.legend(fontsize="small")
  path = workdir_lib.valuation(workdir, PLOT_FILE)
  fig.savefig(path, dpi=100)
  return path


def write_artifacts(workdir: str, split: str, epoch: int, step: int,
                    predictions: Mapping[str, np.ndarray],
                    extra: Mapping[str, np.ndarray] | None = None,
                    summary: Mapping[str, Any] | None = None, plot: bool = True) -> str | None:
  """Writes `<split>_epoch_<epoch>_step_<step>.csv` (index, label, contribution per modality,
  ground-truth flags, `extra` columns), appends the split means (and `summary`) to summary.jsonl
  and, if `plot`, redraws contributions.png. Returns the CSV path (None: no contributions)."""
  values = per_sample(predictions)
  if not values:
    return None
  directory = workdir_lib.folder(workdir_lib.valuation(workdir))
  columns: dict[str, np.ndarray] = {}
  for key in ("index", "label"):
    if key in predictions:
      columns[key] = np.asarray(predictions[key]).astype(np.int64)
  columns.update({f"shapley_{m}": v for m, v in values.items()})
  columns.update({k: np.asarray(predictions[k]).astype(np.int64)
                  for k in FLAG_KEYS if k in predictions})
  columns.update(extra or {})
  # The final evaluation of the best checkpoint may revisit an epoch: the step keeps files apart.
  path = os.path.join(directory, f"{split}_epoch_{epoch:04d}_step_{step:07d}.csv")
  write_table(path, columns)
  append_summary(workdir, {"split": split, "epoch": int(epoch), "step": int(step),
                           "num_examples": int(len(next(iter(values.values())))),
                           **contribution_report(predictions), **(summary or {})})
  if plot:
    plot_summary(workdir)
  return path
