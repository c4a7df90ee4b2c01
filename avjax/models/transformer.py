"""Transformer building blocks (NNX): multi-head attention, pre-LN encoder and cross-attention blocks.

Used by VAT (avjax/models/vat.py). All blocks are pre-LayerNorm (ViT / timm style):

  EncoderBlock:   x <- x + SA(LN(x));  x <- x + MLP(LN(x))
  CrossBlock:     x <- x + SA(LN(x));  x <- x + CA(LN(x), context);  x <- x + MLP(LN(x))

Initialisation follows timm's ViT `_init_weights`, which ALBEF's vision encoder uses: Linear weights
N(0, 0.02) (timm's trunc_normal_(std=.02) truncates at +-2 absolute, i.e. ~100 std: a plain normal),
biases 0, LayerNorm scale 1 / bias 0 (eps 1e-6, timm ViT). The MLP's GELU is the exact (erf) form,
PyTorch's nn.GELU default. No dropout (see docs/deviations.md, VAT). Attention softmax runs in
float32 whatever the compute dtype (train.compute_dtype 'bfloat16' sets the layers' `dtype`); on
GPUs in bfloat16 it is cuDNN's fused attention, on CPUs for long sequences a query-blocked exact
attention that keeps one block's scores at a time (`attention_implementation`).

Layers are stacked (`stack_blocks`: parameters with a leading depth axis) and run with lax.scan, so
the number of parameter arrays and the compiled program do not grow with depth.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

LN_EPSILON = 1e-6
weight_init = nnx.initializers.normal(stddev=0.02)


def linear(in_features: int, out_features: int, *, rngs: nnx.Rngs) -> nnx.Linear:
  """nn.Linear with timm ViT's init: weight N(0, 0.02), bias 0."""
  return nnx.Linear(in_features, out_features, kernel_init=weight_init,
                    bias_init=nnx.initializers.zeros, rngs=rngs)


def layer_norm(width: int, *, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(width, epsilon=LN_EPSILON, rngs=rngs)


ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "cudnn", "blocked")
QUERY_BLOCK = 256  # 'blocked': queries per block; (256, M) float32 scores per head stay in cache.
BLOCKED_MIN_SCORES = 512 * 512  # 'auto' on CPU: blocked from this many scores (N x M) per head.


def attention_implementation(choice: str, dtype: jnp.dtype, head_dim: int = 64,
                             num_scores: int = 0) -> str:
  """'auto': cuDNN's fused (flash) attention on GPUs for bfloat16 / float16 and head dims it takes
  (multiples of 8 up to 128), where it never materialises the (N, M) score matrices; on CPUs,
  'blocked' when a head has at least BLOCKED_MIN_SCORES scores (N x M); else XLA's. 'xla' /
  'cudnn' / 'blocked' force one."""
  if choice not in ATTENTION_IMPLEMENTATIONS:
    raise ValueError(f"attention={choice!r} is not one of {ATTENTION_IMPLEMENTATIONS}.")
  if choice != "auto":
    return choice
  backend = jax.default_backend()
  half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
  fits = head_dim % 8 == 0 and head_dim <= 128
  if half and fits and backend == "gpu":
    return "cudnn"
  return "blocked" if backend == "cpu" and num_scores >= BLOCKED_MIN_SCORES else "xla"


def blocked_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                      block: int = QUERY_BLOCK) -> jax.Array:
  """Exact softmax attention, QUERY_BLOCK queries at a time against all keys, each block
  recomputed in the backward pass: peak score memory (B, H, block, M) instead of (B, H, N, M).
  On CPUs this is about twice as fast as the materialised form for ~1,500 tokens (the scores stay
  in cache; docs/benchmarks.md). Softmax in float32. q: (B, N, H, Dh), k / v: (B, M, H, Dh)."""
  b, n, h, dh = q.shape
  if n <= block:
    return jax.nn.dot_product_attention(q, k, v, implementation="xla")
  pad = -n % block
  blocks = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0))).reshape(b, -1, block, h, dh)
  scale = 1.0 / jnp.sqrt(jnp.float32(dh))

  @jax.checkpoint
  def attend(qb: jax.Array) -> jax.Array:
    scores = jnp.einsum("bqhd,bkhd->bhqk", qb, k, preferred_element_type=jnp.float32) * scale
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)

  out = jax.lax.map(attend, jnp.moveaxis(blocks, 1, 0))  # (N / block, B, block, H, Dh)
  return jnp.moveaxis(out, 0, 1).reshape(b, -1, h, dh)[:, :n]


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


class Attention(nnx.Module):
  """Multi-head scaled dot-product attention; self-attention unless a `context` is given.

  x: (B, N, D) queries; context: (B, M, D) keys / values (default x) -> (B, N, D). The product
  runs in `jax.nn.dot_product_attention` (softmax in float32; see `attention_implementation`).
  """

  def __init__(self, width: int, heads: int, *, attention: str = "auto", rngs: nnx.Rngs):
    if width % heads:
      raise ValueError(f"Attention width {width} is not divisible by {heads} heads.")
    attention_implementation(attention, jnp.float32)  # Checks the name.
    self.heads, self.attention = heads, attention
    self.q_proj = linear(width, width, rngs=rngs)
    self.k_proj = linear(width, width, rngs=rngs)
    self.v_proj = linear(width, width, rngs=rngs)
    self.out_proj = linear(width, width, rngs=rngs)

  def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
    context = x if context is None else context
    b, n, d = x.shape
    split = lambda t: t.reshape(t.shape[0], t.shape[1], self.heads, d // self.heads)
    q, k, v = split(self.q_proj(x)), split(self.k_proj(context)), split(self.v_proj(context))
    implementation = attention_implementation(self.attention, q.dtype, d // self.heads,
                                              n * k.shape[1])
    if implementation == "cudnn":
      attended = padded_attention(q, k, v, implementation)
    elif implementation == "blocked":
      attended = blocked_attention(q, k, v)
    else:
      attended = jax.nn.dot_product_attention(q, k, v, implementation=implementation)
    return self.out_proj(attended.reshape(b, n, d))


class Mlp(nnx.Module):
  """Linear -> GELU (exact) -> Linear. (B, N, D) -> (B, N, D)."""

  def __init__(self, width: int, hidden: int, *, rngs: nnx.Rngs):
    self.fc1 = linear(width, hidden, rngs=rngs)
    self.fc2 = linear(hidden, width, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class EncoderBlock(nnx.Module):
  """Pre-LN self-attention block. (B, N, D) -> (B, N, D)."""

  def __init__(self, width: int, heads: int, mlp_dim: int, *, attention: str = "auto",
               rngs: nnx.Rngs):
    self.norm1 = layer_norm(width, rngs=rngs)
    self.attn = Attention(width, heads, attention=attention, rngs=rngs)
    self.norm2 = layer_norm(width, rngs=rngs)
    self.mlp = Mlp(width, mlp_dim, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


class CrossBlock(nnx.Module):
  """Pre-LN self-attention, cross-attention to `context` (queries from x), MLP.

  x: (B, N, D) query stream; context: (B, M, D) -> (B, N, D). The context enters the keys / values
  as it is (it is the other encoder's final, already normalised output), as in BERT's cross-attention.
  """

  def __init__(self, width: int, heads: int, mlp_dim: int, *, attention: str = "auto",
               rngs: nnx.Rngs):
    self.norm1 = layer_norm(width, rngs=rngs)
    self.self_attn = Attention(width, heads, attention=attention, rngs=rngs)
    self.norm2 = layer_norm(width, rngs=rngs)
    self.cross_attn = Attention(width, heads, attention=attention, rngs=rngs)
    self.norm3 = layer_norm(width, rngs=rngs)
    self.mlp = Mlp(width, mlp_dim, rngs=rngs)

  def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
    x = x + self.self_attn(self.norm1(x))
    x = x + self.cross_attn(self.norm2(x), context)
    return x + self.mlp(self.norm3(x))


def stack_blocks(make: Callable[[nnx.Rngs], nnx.Module], depth: int, rngs: nnx.Rngs) -> nnx.Module:
  """`depth` blocks with their parameters stacked on a leading axis (nnx.vmap over split keys),
  run with `scan_blocks`: the compiled program and the number of parameter arrays do not grow with
  depth (12 / 6 / 6 ALBEF layers compile like one of each)."""

  @nnx.split_rngs(splits=depth)
  @nnx.vmap(in_axes=(0,), out_axes=0)
  def create(rngs: nnx.Rngs) -> nnx.Module:
    return make(rngs)

  return create(rngs)


def scan_blocks(blocks: nnx.Module, x: jax.Array, *context: jax.Array, remat: bool = False
                ) -> jax.Array:
  """Runs stacked blocks in order, x <- block_i(x, *context), with jax.lax.scan over their
  parameters (blocks hold parameters only: no state changes to carry out)."""
  graph, params = nnx.split(blocks)

  def body(h: jax.Array, layer_params: nnx.State) -> tuple[jax.Array, None]:
    return nnx.merge(graph, layer_params)(h, *context), None

  h, _ = jax.lax.scan(jax.checkpoint(body) if remat else body, x, params)
  return h


class Encoder(nnx.Module):
  """`depth` EncoderBlocks (stacked, scanned) and a final LayerNorm. (B, N, D) -> (B, N, D).

  `remat`: recompute each block in the backward pass instead of storing its activations (memory
  for compute, for long token sequences).
  """

  def __init__(self, width: int, heads: int, mlp_dim: int, depth: int, *, attention: str = "auto",
               remat: bool = False, rngs: nnx.Rngs):
    self.blocks = stack_blocks(
        lambda r: EncoderBlock(width, heads, mlp_dim, attention=attention, rngs=r), depth, rngs)
    self.norm = layer_norm(width, rngs=rngs)
    self.remat = remat

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.norm(scan_blocks(self.blocks, x, remat=self.remat))


class CrossEncoder(nnx.Module):
  """`depth` CrossBlocks (stacked, scanned; all attend to the same context) and a final LayerNorm.
  `remat` as in Encoder."""

  def __init__(self, width: int, heads: int, mlp_dim: int, depth: int, *, attention: str = "auto",
               remat: bool = False, rngs: nnx.Rngs):
    self.blocks = stack_blocks(
        lambda r: CrossBlock(width, heads, mlp_dim, attention=attention, rngs=r), depth, rngs)
    self.norm = layer_norm(width, rngs=rngs)
    self.remat = remat

  def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
    return self.norm(scan_blocks(self.blocks, x, context, remat=self.remat))
