"""Speaker verification scores and error rates, as MMCosine's VoxCeleb evaluation computes them.

A trial pairs two utterances with a label (1: same speaker, 0: different). MMCosine scores a trial
by the cosine similarity of the two utterances' class-score vectors (the fused logits over the
training speakers, s * (cos_a + cos_v) with MMCosine), not of embeddings (MMCosine main_vox2.py).
Error rates sweep the decision threshold over the sorted scores:

  sort trials by ascending score (stable); for k = 0..N reject the k lowest:
    FNR_k = targets among them / targets,  FPR_k = 1 - non-targets among them / non-targets
  EER    = where the segment between the last k with FNR_k < FPR_k and the next one crosses
           FNR = FPR (linear interpolation), in percent
  minDCF = min_k (P_t FNR_k + (1 - P_t) FPR_k) / min(P_t, 1 - P_t)   (C_miss = C_fa = 1)

MMCosine reports minDCF at P_target = 0.01; every reported value names its P_target.
"""

from __future__ import annotations

import numpy as np


def _rates(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(FNR_k, FPR_k) for k = 0..N rejected lowest-scored trials, float64 (N + 1,) each."""
  scores, labels = np.asarray(scores, np.float64).reshape(-1), np.asarray(labels).reshape(-1)
  if scores.shape != labels.shape or not np.isin(labels, (0, 1)).all():
    raise ValueError(f"need one 0/1 label per score; got {labels.shape} labels for "
                     f"{scores.shape} scores, values {np.unique(labels)[:5]}.")
  targets = labels[np.argsort(scores, kind="stable")].astype(np.float64)
  num_targets, num_others = targets.sum(), (1 - targets).sum()
  if not num_targets or not num_others:
    raise ValueError("need at least one target and one non-target trial.")
  rejected_targets = np.concatenate([[0.0], np.cumsum(targets)])
  rejected_others = np.concatenate([[0.0], np.cumsum(1 - targets)])
  return rejected_targets / num_targets, 1.0 - rejected_others / num_others


def equal_error_rate(scores: np.ndarray, labels: np.ndarray) -> float:
  """EER in percent (see the module docstring): scores (N,), labels (N,) in {0, 1}."""
  fnr, fpr = _rates(scores, labels)
  above = np.flatnonzero(fnr >= fpr)[0]  # Exists: at k = N, FNR = 1 >= FPR = 0.
  below = above - 1  # Exists: at k = 0, FNR = 0 < FPR = 1.
  d_below, d_above = fnr[below] - fpr[below], fnr[above] - fpr[above]
  t = -d_below / (d_above - d_below)
  return float(100.0 * (fpr[below] + t * (fpr[above] - fpr[below])))


def min_detection_cost(scores: np.ndarray, labels: np.ndarray, p_target: float = 0.01) -> float:
  """Normalised minimum detection cost (C_miss = C_fa = 1) at `p_target`."""
  if not 0 < p_target < 1:
    raise ValueError(f"p_target must be in (0, 1), got {p_target}.")
  fnr, fpr = _rates(scores, labels)
  cost = p_target * fnr + (1 - p_target) * fpr
  return float(cost.min() / min(p_target, 1 - p_target))


def cosine_trial_scores(vectors: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
  """Cosine similarity of rows `first` and `second` of `vectors` (U, C): one score per trial."""
  v = np.asarray(vectors, np.float64)
  v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
  return np.sum(v[np.asarray(first)] * v[np.asarray(second)], axis=-1)
