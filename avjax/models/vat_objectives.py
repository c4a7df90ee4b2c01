"""VAT's objectives as pure functions (ALBEF formulation, ../shared/reference/vat.md), for the VAT
methods (avjax/methods/vat*.py); the `matching` evaluator reads the temperature range and the
matching pairs (it may not import a method module).

Everything here works on GLOBAL arrays: under jit with the batch sharded over the 'data' mesh, the
(B, E) features of the whole global batch are one array, so the in-batch negatives, the similarity
matrices, the hard-negative sampling and the queue update all see every device's examples (what a
PyTorch implementation gets from an all-gather), and the results do not depend on the device count.

Notation: a, v (B, E) online audio / video embeddings (L2-normalised), a_m, v_m the momentum ones,
Q_a, Q_v (Q, E) the queues of earlier momentum embeddings, tau the temperature.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from avjax.models.contract import top_key

TEMPERATURE_RANGE = (0.001, 0.5)  # ALBEF clamps the learnable temperature to this range.


def clamp_temperature(params: Any, paths: tuple[str, ...]) -> Any:
  """Params with the leaves under top-level `paths` (the model's 'temperature' group) clamped to
  TEMPERATURE_RANGE (ALBEF clamps the parameter itself, in place, before each forward; the clamped
  value is what the optimizer sees)."""
  lo, hi = TEMPERATURE_RANGE
  return jax.tree_util.tree_map_with_path(
      lambda path, x: jnp.clip(x, lo, hi) if top_key(path) in paths else x, params)


def ema(momentum_params: Any, params: Any, m: float) -> Any:
  """theta' <- m theta' + (1 - m) theta, leaf by leaf (same tree structure)."""
  return jax.tree.map(lambda pm, p: m * pm + (1.0 - m) * p, momentum_params, params)


def ramped_alpha(alpha: float, step: jax.Array, steps_per_epoch: int) -> jax.Array:
  """ALBEF's distillation weight: alpha * min(1, step / steps_per_epoch) (a ramp over epoch 0,
  0 at the first step; `step` is the global step, so later epochs get alpha)."""
  ratio = jnp.asarray(step, jnp.float32) / float(max(steps_per_epoch, 1))
  return alpha * jnp.minimum(1.0, ratio)


def enqueue(queue: jax.Array, feats: jax.Array, ptr: jax.Array) -> tuple[jax.Array, jax.Array]:
  """FIFO: writes feats (B, E) into queue (Q, E) at rows [ptr, ptr + B); returns (queue, new ptr).

  Q must be a multiple of B (checked by the method's validate), so a write never wraps inside a
  batch; the pointer wraps to 0 after the last slot and the oldest batch is overwritten next.
  """
  q, b = queue.shape[0], feats.shape[0]
  if q == 0:
    return queue, ptr
  if q % b:
    raise ValueError(f"Queue size {q} is not a multiple of the batch size {b}.")
  ptr = jnp.asarray(ptr, jnp.int32)
  queue = jax.lax.dynamic_update_slice(queue, feats.astype(queue.dtype), (ptr, jnp.int32(0)))
  return queue, (ptr + b) % q


def soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """-sum_j targets_ij log softmax(logits)_ij, averaged over rows. (B, K), (B, K) -> ()."""
  return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1))


def vac_loss(a: jax.Array, v: jax.Array, a_m: jax.Array, v_m: jax.Array, queue_a: jax.Array,
             queue_v: jax.Array, temp: jax.Array, alpha: float | jax.Array
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Video-audio contrastive loss with momentum-distilled soft targets (ALBEF's ITC).

    s_v2a = v [a_m; Q_a]^T / tau,   s_a2v = a [v_m; Q_v]^T / tau            (B, B + Q)
    y_v2a = alpha softmax(v_m [a_m; Q_a]^T / tau) + (1 - alpha) [I | 0]     (no gradient)
    L = 0.5 [CE(s_v2a, y_v2a) + CE(s_a2v, y_a2v)],  CE = -sum y log softmax, mean over the batch.

  With alpha = 0 this is InfoNCE with the positive on the diagonal of the first B columns.
  Returns (L, {'v2a': s_v2a, 'a2v': s_a2v}); the similarities carry gradients (callers stop them
  where needed).
  """
  a_all = jnp.concatenate([a_m, queue_a.astype(a_m.dtype)], 0)
  v_all = jnp.concatenate([v_m, queue_v.astype(v_m.dtype)], 0)
  s_v2a = v @ a_all.T / temp
  s_a2v = a @ v_all.T / temp
  b = a.shape[0]
  hard = jnp.eye(b, a_all.shape[0], dtype=s_v2a.dtype)
  soft_v2a = jax.nn.softmax(v_m @ a_all.T / temp, axis=-1)
  soft_a2v = jax.nn.softmax(a_m @ v_all.T / temp, axis=-1)
  y_v2a = jax.lax.stop_gradient(alpha * soft_v2a + (1.0 - alpha) * hard)
  y_a2v = jax.lax.stop_gradient(alpha * soft_a2v + (1.0 - alpha) * hard)
  loss = 0.5 * (soft_cross_entropy(s_v2a, y_v2a) + soft_cross_entropy(s_a2v, y_a2v))
  return loss, {"v2a": s_v2a, "a2v": s_a2v}


def negative_log_weights(sim: jax.Array) -> jax.Array:
  """log of ALBEF's sampling weights: softmax(sim) row-wise with the diagonal set to 0. (B, B).

  Computed in log space, so no off-diagonal weight underflows to an impossible choice; the
  diagonal (the positive) is -inf. No gradient flows through the weights.
  """
  logw = jax.nn.log_softmax(jax.lax.stop_gradient(sim).astype(jnp.float32), axis=-1)
  return jnp.where(jnp.eye(sim.shape[0], dtype=bool), -jnp.inf, logw)


def sample_hard_negatives(rng: jax.Array, sim_a2v: jax.Array, sim_v2a: jax.Array
                          ) -> tuple[jax.Array, jax.Array]:
  """One negative per example, drawn from the in-batch similarities (multinomial, 1 draw).

  Args:
    rng: key; the draws are a pure function of (rng, similarities), so 1 or 8 devices agree.
    sim_a2v: (B, B) audio i vs video j (s_a2v[:, :B]); sim_v2a: (B, B) video i vs audio j.
  Returns:
    (neg_video_for_audio, neg_audio_for_video): (B,) int32 indices, never the example itself.
  """
  k_video, k_audio = jax.random.split(rng)
  neg_video = jax.random.categorical(k_video, negative_log_weights(sim_a2v), axis=-1)
  neg_audio = jax.random.categorical(k_audio, negative_log_weights(sim_v2a), axis=-1)
  return neg_video.astype(jnp.int32), neg_audio.astype(jnp.int32)


def matching_pairs(audio_tokens: jax.Array, visual_tokens: jax.Array, neg_video: jax.Array,
                   neg_audio: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The 3B (audio, video) pairs of ALBEF's ITM and their labels.

  Rows 0..B-1: the true pairs (label 1); B..2B-1: (audio neg_audio[i], video i) (label 0);
  2B..3B-1: (audio i, video neg_video[i]) (label 0). Tokens: (B, N, D) -> (3B, N, D).
  """
  b = audio_tokens.shape[0]
  audio = jnp.concatenate([audio_tokens, audio_tokens[neg_audio], audio_tokens], 0)
  visual = jnp.concatenate([visual_tokens, visual_tokens, visual_tokens[neg_video]], 0)
  labels = jnp.concatenate([jnp.ones((b,), jnp.int32), jnp.zeros((2 * b,), jnp.int32)])
  return audio, visual, labels


def distillation(logits: jax.Array, momentum_logits: jax.Array) -> jax.Array:
  """-sum softmax(p_m) log softmax(p), mean over the batch (ALBEF model_ve pseudo-targets)."""
  targets = jax.nn.softmax(jax.lax.stop_gradient(momentum_logits).astype(jnp.float32), -1)
  return soft_cross_entropy(logits.astype(jnp.float32), targets)
