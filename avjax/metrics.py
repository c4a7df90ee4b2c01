"""Host-side numpy metrics, computed once over a whole split from gathered predictions.

Nothing here is averaged per batch: callers gather labels and logits (or predictions) for the full split
(with a padding mask, `weights`, that is 1 for real examples and 0 for padding) and call these functions
once. All functions accept numpy or jax arrays and return Python floats / numpy arrays.

Conventions (chosen to match scikit-learn's defaults where one exists):

* Padding: an example with weight 0 is excluded everywhere, as if it were not in the split. Weights are
  expected in {0, 1}; other non-negative weights act as (integer) example counts.
* Empty split (no example with weight > 0): `accuracy` and the F1 scores return 0.0.
* F1: per-class F1 is 2 tp / (2 tp + fp + fn), 0.0 where that denominator is 0 (sklearn's
  `zero_division=0`). `macro_f1` averages over the classes that occur in the labels *or* the predictions
  of the (unpadded) split, like sklearn's `labels=None`; classes seen in neither are left out rather
  than counted as 0. `weighted_f1` weights by label support; `micro_f1` equals accuracy (single-label).
* CCC (Lin's concordance correlation coefficient) uses population (biased) moments. Its denominator is 0
  only when truth and prediction are the same constant; that perfect agreement is defined as 1.0.
  A constant prediction of a non-constant truth gives 0.0 (covariance 0), as the formula says.
* Pearson r is 0.0 when either input is constant (undefined correlation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

ArrayLike = np.ndarray | Sequence[float]


def _weights(weights: ArrayLike | None, n: int) -> np.ndarray:
  """Returns (n,) float64 weights (ones by default), checked for shape and sign."""
  if weights is None:
    return np.ones((n,), np.float64)
  w = np.asarray(weights, np.float64).reshape(-1)
  if w.shape[0] != n:
    raise ValueError(f"weights has {w.shape[0]} entries but there are {n} examples")
  if np.any(w < 0):
    raise ValueError("weights must be non-negative (1 = real example, 0 = padding)")
  return w


def _class_ids(x: ArrayLike, name: str) -> np.ndarray:
  """Flattens labels / predictions to int64 class ids; (N, C) scores are argmaxed."""
  a = np.asarray(x)
  if a.ndim == 2:
    a = np.argmax(a, axis=-1)
  if a.ndim != 1:
    raise ValueError(f"{name} must be (N,) class ids or (N, C) scores, got shape {a.shape}")
  return a.astype(np.int64)


def _pair(labels: ArrayLike, preds: ArrayLike, weights: ArrayLike | None):
  y = _class_ids(labels, "labels")
  p = _class_ids(preds, "preds")
  if y.shape != p.shape:
    raise ValueError(f"labels {y.shape} and preds {p.shape} differ in length")
  return y, p, _weights(weights, y.shape[0])


def accuracy(labels: ArrayLike, preds: ArrayLike, weights: ArrayLike | None = None) -> float:
  """Weighted fraction of correct predictions; `preds` may be class ids or (N, C) logits."""
  y, p, w = _pair(labels, preds, weights)
  total = w.sum()
  if total <= 0:
    return 0.0
  return float(np.sum(w * (y == p)) / total)


def confusion_matrix(
    labels: ArrayLike, preds: ArrayLike, num_classes: int, weights: ArrayLike | None = None
) -> np.ndarray:
  """(C, C) int64 counts; row = true class, column = predicted class; padding excluded."""
  y, p, w = _pair(labels, preds, weights)
  keep = w > 0
  y, p, w = y[keep], p[keep], w[keep]
  for name, ids in (("labels", y), ("preds", p)):
    if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
      raise ValueError(f"{name} contain class ids outside [0, {num_classes}): "
                       f"min {ids.min()}, max {ids.max()}")
  cm = np.zeros((num_classes, num_classes), np.float64)
  np.add.at(cm, (y, p), w)
  return np.rint(cm).astype(np.int64)


def _f1_from_confusion(cm: np.ndarray) -> dict[str, float]:
  """Macro / weighted / micro F1 from a confusion matrix (conventions in the module docstring)."""
  cm = cm.astype(np.float64)
  tp = np.diag(cm)
  support = cm.sum(axis=1)  # true count per class
  predicted = cm.sum(axis=0)
  fp, fn = predicted - tp, support - tp
  denom = 2 * tp + fp + fn
  f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
  present = (support + predicted) > 0
  total = support.sum()
  if total <= 0:
    return {"macro_f1": 0.0, "weighted_f1": 0.0, "micro_f1": 0.0}
  micro_denom = 2 * tp.sum() + fp.sum() + fn.sum()
  return {
      "macro_f1": float(f1[present].mean()),
      "weighted_f1": float(np.sum(f1 * support) / total),
      "micro_f1": float(2 * tp.sum() / micro_denom) if micro_denom > 0 else 0.0,
  }


def f1_scores(
    labels: ArrayLike, preds: ArrayLike, num_classes: int, weights: ArrayLike | None = None
) -> dict[str, float]:
  """Returns {'macro_f1', 'weighted_f1', 'micro_f1'}; macro over classes seen in labels or preds."""
  return _f1_from_confusion(confusion_matrix(labels, preds, num_classes, weights))


def per_class_accuracy(
    labels: ArrayLike, preds: ArrayLike, num_classes: int, weights: ArrayLike | None = None
) -> np.ndarray:
  """(C,) float64 recall of each class (correct / support); NaN for a class with no examples."""
  cm = confusion_matrix(labels, preds, num_classes, weights).astype(np.float64)
  support = cm.sum(axis=1)
  out = np.full((num_classes,), np.nan)
  np.divide(np.diag(cm), support, out=out, where=support > 0)
  return out


def _vectors(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
  t = np.asarray(y_true, np.float64).reshape(-1)
  p = np.asarray(y_pred, np.float64).reshape(-1)
  if t.shape != p.shape:
    raise ValueError(f"y_true ({t.size} values) and y_pred ({p.size} values) differ in length")
  return t, p


def ccc(y_true: ArrayLike, y_pred: ArrayLike) -> float:
  """Lin's concordance correlation 2 cov / (var_t + var_p + (mean_t - mean_p)^2), population moments.

  Returns 1.0 for identical constant inputs (the only 0/0 case) and 0.0 for empty input.
  """
  t, p = _vectors(y_true, y_pred)
  if t.size == 0:
    return 0.0
  mt, mp = t.mean(), p.mean()
  dt, dp = t - mt, p - mp
  cov = np.mean(dt * dp)
  denom = np.mean(dt * dt) + np.mean(dp * dp) + (mt - mp) ** 2
  if denom == 0:
    return 1.0
  return float(2.0 * cov / denom)


def pearson(y_true: ArrayLike, y_pred: ArrayLike) -> float:
  """Pearson correlation r; 0.0 when either input is constant (or empty)."""
  t, p = _vectors(y_true, y_pred)
  if t.size == 0:
    return 0.0
  dt, dp = t - t.mean(), p - p.mean()
  denom = np.sqrt(np.sum(dt * dt) * np.sum(dp * dp))
  if denom == 0:
    return 0.0
  return float(np.clip(np.sum(dt * dp) / denom, -1.0, 1.0))


def _suffix(name: str) -> str:
  """'' -> '', 'audio' -> '_audio', '_audio' -> '_audio'."""
  if not name:
    return ""
  return name if name.startswith("_") else f"_{name}"


def classification_metrics(
    labels: ArrayLike,
    logits_by_name: Mapping[str, ArrayLike],
    weights: ArrayLike | None = None,
    num_classes: int | None = None,
) -> dict[str, float]:
  """Accuracy, macro-F1 and weighted-F1 for each head.

  Args:
    labels: (N,) int class ids for the whole split.
    logits_by_name: head name -> (N, C) logits (or (N,) predicted ids). Name '' is the fused head and
      gives plain keys (`accuracy`, `macro_f1`, `weighted_f1`); any other name, e.g. 'audio', gives
      suffixed keys (`accuracy_audio`, `macro_f1_audio`, `weighted_f1_audio`).
    weights: optional (N,) padding mask, 1 = real example, 0 = padding.
    num_classes: number of classes; default: the logits' last dimension.
  """
  out: dict[str, float] = {}
  for name, logits in logits_by_name.items():
    scores = np.asarray(logits)
    c = num_classes
    if c is None:
      if scores.ndim != 2:
        raise ValueError(f"num_classes is needed when head {name!r} gives class ids, not logits")
      c = scores.shape[-1]
    y, p, w = _pair(labels, scores, weights)
    cm = confusion_matrix(y, p, c, w)
    f1 = _f1_from_confusion(cm)
    s = _suffix(name)
    out[f"accuracy{s}"] = accuracy(y, p, w)
    out[f"macro_f1{s}"] = f1["macro_f1"]
    out[f"weighted_f1{s}"] = f1["weighted_f1"]
  return out


def regression_metrics(
    targets: ArrayLike,
    preds: ArrayLike,
    names: Sequence[str] = ("arousal", "valence", "dominance"),
    suffix: str = "",
    weights: ArrayLike | None = None,
) -> dict[str, float]:
  """Per-dimension CCC and Pearson r plus their means.

  Args:
    targets: (N, R) (or (N,) for R = 1) ground truth.
    preds: predictions of the same shape.
    names: one name per output dimension; must have exactly R entries.
    suffix: appended to every key as `_<suffix>` when non-empty (e.g. 'audio' -> `ccc_arousal_audio`).
    weights: optional (N,) padding mask; rows with weight 0 are dropped.

  Returns:
    {'ccc_<name>', 'pearson_<name>' for each name, 'ccc_mean' (mean CCC), 'pearson' (mean r)},
    each key followed by the suffix.
  """
  t = np.asarray(targets, np.float64)
  p = np.asarray(preds, np.float64)
  if t.ndim == 1:
    t, p = t[:, None], p.reshape(-1, 1)
  if t.ndim != 2 or t.shape != p.shape:
    raise ValueError(f"targets {t.shape} and preds {p.shape} must both be (N, R)")
  if len(names) != t.shape[1]:
    raise ValueError(f"{len(names)} names {tuple(names)} for {t.shape[1]} regression outputs; "
                     "pass names= with one name per output")
  keep = _weights(weights, t.shape[0]) > 0
  t, p = t[keep], p[keep]
  s = _suffix(suffix)
  out: dict[str, float] = {}
  cccs, rs = [], []
  for i, name in enumerate(names):
    cccs.append(ccc(t[:, i], p[:, i]))
    rs.append(pearson(t[:, i], p[:, i]))
    out[f"ccc_{name}{s}"] = cccs[-1]
    out[f"pearson_{name}{s}"] = rs[-1]
  out[f"ccc_mean{s}"] = float(np.mean(cccs))
  out[f"pearson{s}"] = float(np.mean(rs))
  return out
