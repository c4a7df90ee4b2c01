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
attention with a flash-style backward pass (avjax/ops/attention.py).

Layers are stacked (`stack_blocks`: parameters with a leading depth axis) and run with lax.scan, so
the number of parameter arrays and the compiled program do not grow with depth.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from avjax.ops import attend, attention_implementation

LN_EPSILON = 1e-6
weight_init = nnx.initializers.normal(stddev=0.02)


def linear(in_features: int, out_features: int, *, rngs: nnx.Rngs) -> nnx.Linear:
  """nn.Linear with timm ViT's init: weight N(0, 0.02), bias 0."""
  return nnx.Linear(in_features, out_features, kernel_init=weight_init,
                    bias_init=nnx.initializers.zeros, rngs=rngs)


def layer_norm(width: int, *, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(width, epsilon=LN_EPSILON, rngs=rngs)


class Attention(nnx.Module):
  """Multi-head scaled dot-product attention; self-attention unless a `context` is given.

  x: (B, N, D) queries; context: (B, M, D) keys / values (default x) -> (B, N, D). The product
  runs in `avjax.ops.attend` with the implementation `attention` names (softmax in float32).
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
    attended = attend(q, k, v, self.attention)
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
