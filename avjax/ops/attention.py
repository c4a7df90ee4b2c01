"""Scaled dot-product attention kernels for the transformer blocks, chosen per backend and size.

`attend(q, k, v, choice)` is the one entry point (q: (B, N, H, Dh), k / v: (B, M, H, Dh)):

  'xla'      jax.nn.dot_product_attention: materialises the (B, H, N, M) scores.
  'cudnn'    cuDNN's fused flash attention (GPUs, bfloat16 / float16), sequences padded to even
             lengths and masked (`padded_attention`).
  'blocked'  `blocked_attention`: exact attention a block of queries at a time with a flash-style
             backward pass; for long sequences on CPUs, where the full score matrices fall out of
             cache and XLA:CPU has no fused kernel.
  'auto'     the form forced for the 'attention' family (avjax.ops.force), else the fastest of
             these for the backend, dtype and size (`attention_implementation`).

Softmax always runs in float32.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from avjax.ops import policy

ATTENTION_IMPLEMENTATIONS = (policy.AUTO,) + policy.FORMS["attention"]
QUERY_BLOCK = 256  # 'blocked': queries per block; (256, M) float32 scores per head stay in cache.


def attention_implementation(choice: str, dtype: jnp.dtype, head_dim: int = 64,
                             num_scores: int = 0) -> str:
  """The kernel `attend` runs: 'xla' / 'cudnn' / 'blocked' force one; 'auto' is the form forced
  with avjax.ops.force(attention=...), else avjax.ops.policy's rule: cuDNN's fused (flash)
  attention on GPUs for bfloat16 / float16 and head dims it takes (multiples of 8 up to 128),
  where it never materialises the (N, M) score matrices; on CPUs, 'blocked' when a head has at
  least policy.BLOCKED_MIN_SCORES scores (N x M); else XLA's."""
  return policy.resolve("attention", choice, dtype=dtype, head_dim=head_dim,
                        num_scores=num_scores)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, choice: str = "auto") -> jax.Array:
  """Softmax(q k^T / sqrt(Dh)) v with the implementation `choice` resolves to. -> (B, N, H, Dh)."""
  n, m, dh = q.shape[1], k.shape[1], q.shape[-1]
  implementation = attention_implementation(choice, q.dtype, dh, n * m)
  if implementation == "cudnn":
    return padded_attention(q, k, v, implementation)
  if implementation == "blocked":
    return blocked_attention(q, k, v)
  return jax.nn.dot_product_attention(q, k, v, implementation=implementation)


def padded_attention(q: jax.Array, k: jax.Array, v: jax.Array, implementation: str,
                     multiple: int = 8) -> jax.Array:
  """dot_product_attention with the sequences zero-padded to a multiple of `multiple` and the
  padding masked by sequence lengths (cuDNN's fused kernels take even lengths only; [CLS] makes
  ours odd). q: (B, N, H, Dh), k / v: (B, M, H, Dh) -> (B, N, H, Dh)."""
  b, n, m = q.shape[0], q.shape[1], k.shape[1]
  up = lambda x: -(-x // multiple) * multiple
  if up(n) == n and up(m) == m:
    return jax.nn.dot_product_attention(q, k, v, implementation=implementation)
  pad = lambda t, to: jnp.pad(t, ((0, 0), (0, to - t.shape[1]), (0, 0), (0, 0)))
  out = jax.nn.dot_product_attention(
      pad(q, up(n)), pad(k, up(m)), pad(v, up(m)), query_seq_lengths=jnp.full((b,), n, jnp.int32),
      key_value_seq_lengths=jnp.full((b,), m, jnp.int32), implementation=implementation)
  return out[:, :n]


def blocked_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                      block: int = QUERY_BLOCK) -> jax.Array:
  """Exact softmax attention, `block` queries at a time against all keys. q: (B, N, H, Dh),
  k / v: (B, M, H, Dh) -> (B, N, H, Dh).

  Peak score memory is (B, H, block, M) instead of (B, H, N, M), and the backward pass is
  FlashAttention's: it keeps only the output and each query's log-sum-exp of the scores, and per
  block recomputes the probabilities from them (no second softmax, no second P V product). On this
  2-core CPU, for VAT's 1,569 frame tokens, 1.6x faster forward + backward than recomputing each
  block's forward, 2.5x faster than the materialised form (docs/benchmarks.md)."""
  if q.shape[1] <= block:
    return jax.nn.dot_product_attention(q, k, v, implementation="xla")
  return _blocked(q, k, v, block)


def _to_blocks(x: jax.Array, block: int) -> jax.Array:
  """(B, N, ...) -> (N / block, B, block, ...), the last block zero-padded."""
  b, n = x.shape[:2]
  x = jnp.pad(x, ((0, 0), (0, -n % block)) + ((0, 0),) * (x.ndim - 2))
  return jnp.moveaxis(x.reshape(b, -1, block, *x.shape[2:]), 1, 0)


def _from_blocks(x: jax.Array, n: int) -> jax.Array:
  """Inverse of _to_blocks: (N / block, B, block, ...) -> (B, N, ...)."""
  x = jnp.moveaxis(x, 0, 1)
  return x.reshape(x.shape[0], -1, *x.shape[3:])[:, :n]


def _scale(head_dim: int) -> jax.Array:
  return 1.0 / jnp.sqrt(jnp.float32(head_dim))


def _scores(qb: jax.Array, k: jax.Array) -> jax.Array:
  """Scaled float32 scores of a query block. (B, block, H, Dh), (B, M, H, Dh) -> (B, H, block, M)."""
  return jnp.einsum("bqhd,bkhd->bhqk", qb, k, preferred_element_type=jnp.float32) * _scale(
      qb.shape[-1])


def _blocked_forward(q: jax.Array, k: jax.Array, v: jax.Array,
                     block: int) -> tuple[jax.Array, jax.Array]:
  """(output (B, N, H, Dh), each query's log-sum-exp of scores, blocked: (N / block, B, H, block))."""

  def one_block(qb: jax.Array) -> tuple[jax.Array, jax.Array]:
    scores = _scores(qb, k)
    peak = jnp.max(scores, axis=-1, keepdims=True)
    weights = jnp.exp(scores - peak)
    total = jnp.sum(weights, axis=-1, keepdims=True)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v,
                     preferred_element_type=jnp.float32)
    out = out / jnp.swapaxes(total, 1, 2)  # (B, block, H, 1)
    return out.astype(q.dtype), (peak + jnp.log(total))[..., 0]

  out, lse = jax.lax.map(one_block, _to_blocks(q, block))
  return _from_blocks(out, q.shape[1]), lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _blocked(q: jax.Array, k: jax.Array, v: jax.Array, block: int) -> jax.Array:
  return _blocked_forward(q, k, v, block)[0]


def _blocked_fwd(q, k, v, block):
  out, lse = _blocked_forward(q, k, v, block)
  return out, (q, k, v, out, lse)


def _blocked_bwd(block, residuals, d_out):
  """Per query block: P = exp(S - lse), dV += P^T dO, dS = P * (dO V^T - rowsum(dO * O)) / sqrt(Dh),
  dQ = dS K, dK += dS^T Q; dK and dV accumulate in float32."""
  q, k, v, out, lse = residuals
  n = q.shape[1]
  scale = _scale(q.shape[-1])
  row_dot = jnp.einsum("bqhd,bqhd->bqh", d_out.astype(jnp.float32), out.astype(jnp.float32))

  def one_block(carry, xs):
    dk, dv = carry
    qb, d_out_b, lse_b, row_dot_b = xs  # (B, block, H, Dh) x2, (B, H, block), (B, block, H)
    probs = jnp.exp(_scores(qb, k) - lse_b[..., None])
    dv = dv + jnp.einsum("bhqk,bqhd->bkhd", probs.astype(v.dtype), d_out_b,
                         preferred_element_type=jnp.float32)
    d_probs = jnp.einsum("bqhd,bkhd->bhqk", d_out_b, v, preferred_element_type=jnp.float32)
    d_scores = probs * (d_probs - jnp.moveaxis(row_dot_b, 1, 2)[..., None]) * scale
    d_scores = d_scores.astype(q.dtype)
    dq_b = jnp.einsum("bhqk,bkhd->bqhd", d_scores, k, preferred_element_type=jnp.float32)
    dk = dk + jnp.einsum("bhqk,bqhd->bkhd", d_scores, qb, preferred_element_type=jnp.float32)
    return (dk, dv), dq_b.astype(q.dtype)

  zeros = jnp.zeros(k.shape, jnp.float32)
  (dk, dv), dq = jax.lax.scan(
      one_block, (zeros, zeros),
      (_to_blocks(q, block), _to_blocks(d_out, block), lse, _to_blocks(row_dot, block)))
  return _from_blocks(dq, n), dk.astype(k.dtype), dv.astype(v.dtype)


_blocked.defvjp(_blocked_fwd, _blocked_bwd)
