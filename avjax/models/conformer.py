"""Conformer encoder (Gulati et al., 2020) in the layout VAVL uses (its sooftware/conformer copy).

Encoder: Linear(input_dim -> dim) (xavier) + dropout, then blocks. Block (pre-norm residual units):

  x = x + 0.5 * FF(x)          FF: LN, Linear(d, 4d), Swish, Dropout, Linear(4d, d), Dropout
  x = x + Dropout(MHSA(LN(x))) Transformer-XL relative attention (u / v biases, pos_proj, shift)
  x = x + Conv(x)              LN, pointwise d -> 2d, GLU, depthwise k (no bias), BatchNorm, Swish,
                               pointwise d -> d, Dropout
  x = x + 0.5 * FF(x)
  x = LN(x)

Attention scores are divided by sqrt(d_model) (the reference's scaling; Transformer-XL uses
sqrt(d_head)). Everything runs over TIME with a (B, T) padding mask: padded keys get no attention,
padded frames are zeroed before the depthwise convolution and left out of BatchNorm's batch
statistics, so valid outputs do not depend on how much padding follows (the reference attends across
the batch axis instead; docs/deviations.md).

Relative positions (`rel_pos`):
  'transformer_xl' (default): score_pos[i, j] = (q_i + v) . W_pos r(i - j), r the sinusoid of the
    relative distance i - j in [-(T-1), T-1]; computed with the relative-shift trick.
  'reference': the sinusoids of absolute indices 0..T-1 fed to the same shift (sooftware's encoding
    at the version VAVL copied): for j <= i the score reads r(T-1-(i-j)), for j > i the next query
    row's entries; it depends on the padded length. Only for running converted VAVL checkpoints.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from avjax.ops import depthwise_conv1d

REL_POS = ("transformer_xl", "reference")
BN_MOMENTUM = 0.9  # PyTorch BatchNorm momentum 0.1.
BN_EPSILON = 1e-5
LN_EPSILON = 1e-5  # torch.nn.LayerNorm default.
MASKED = -1e9  # Score of a masked key (the reference's masked_fill value).

xavier = nnx.initializers.xavier_uniform()
# torch.nn.Linear / Conv default: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
torch_default_kernel = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_default_bias(fan_in: int) -> nnx.Initializer:
  """U(+-1/sqrt(fan_in)), PyTorch's default bias init of Linear / Conv."""
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def torch_linear(in_features: int, out_features: int, *, use_bias: bool = True,
                 rngs: nnx.Rngs) -> nnx.Linear:
  """nnx.Linear initialised as torch.nn.Linear (or a k = 1 Conv1d)."""
  return nnx.Linear(in_features, out_features, use_bias=use_bias,
                    kernel_init=torch_default_kernel, bias_init=torch_default_bias(in_features),
                    rngs=rngs)


def xavier_linear(in_features: int, out_features: int, *, use_bias: bool = True,
                  rngs: nnx.Rngs) -> nnx.Linear:
  """sooftware's `Linear`: xavier_uniform weight, zero bias."""
  return nnx.Linear(in_features, out_features, use_bias=use_bias, kernel_init=xavier,
                    bias_init=nnx.initializers.zeros, rngs=rngs)


def layer_norm(dim: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(dim, epsilon=LN_EPSILON, rngs=rngs)


def sinusoids(positions: jax.Array, dim: int) -> jax.Array:
  """(N,) positions -> (N, dim): pe[:, 2i] = sin(p / 10000^(2i/dim)), pe[:, 2i+1] = cos(...)."""
  div = jnp.exp(jnp.arange(0, dim, 2, dtype=jnp.float32) * -(math.log(10000.0) / dim))
  angles = positions.astype(jnp.float32)[:, None] * div[None, :]
  pe = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(positions.shape[0], -1)
  return pe[:, :dim]


def relative_shift(scores: jax.Array, keep: int | None = None) -> jax.Array:
  """Transformer-XL's relative shift. (..., T1, T2) -> (..., T1, keep or T2).

  Pads a zero column in front, reads the (T1, T2 + 1) block as (T2 + 1, T1), drops the first row
  and reads the rest as (T1, T2). With T2 = 2 T1 - 1 columns ordered by relative distance
  T1-1, ..., -(T1-1) and keep = T1, out[i, j] = scores[i, T1 - 1 - i + j] (distance i - j).
  """
  *lead, t1, t2 = scores.shape
  padded = jnp.concatenate([jnp.zeros((*lead, t1, 1), scores.dtype), scores], axis=-1)
  shifted = padded.reshape(*lead, t2 + 1, t1)[..., 1:, :].reshape(*lead, t1, t2)
  return shifted if keep is None else shifted[..., :keep]


def swish(x: jax.Array) -> jax.Array:
  return x * jax.nn.sigmoid(x)


class FeedForward(nnx.Module):
  """LN, Linear(d, m d), Swish, Dropout, Linear(m d, d), Dropout. (B,T,d) -> (B,T,d)."""

  def __init__(self, dim: int, mult: int, dropout: float, *, rngs: nnx.Rngs):
    self.norm = layer_norm(dim, rngs)
    self.fc1 = xavier_linear(dim, dim * mult, rngs=rngs)
    self.fc2 = xavier_linear(dim * mult, dim, rngs=rngs)
    self.drop1 = nnx.Dropout(dropout, rngs=rngs)
    self.drop2 = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.drop2(self.fc2(self.drop1(swish(self.fc1(self.norm(x))))))


class RelativeMultiHeadAttention(nnx.Module):
  """Multi-head self-attention with relative positions (see the module docstring).

  Attributes: query / key / value / out (d -> d, xavier, zero bias), pos (d -> d, no bias),
  u_bias / v_bias (heads, d_head) xavier.
  """

  def __init__(self, dim: int, heads: int, dropout: float, *, rel_pos: str = "transformer_xl",
               rngs: nnx.Rngs):
    if dim % heads:
      raise ValueError(f"dim={dim} must be divisible by heads={heads}.")
    if rel_pos not in REL_POS:
      raise ValueError(f"rel_pos={rel_pos!r} is not one of {REL_POS}.")
    self.dim, self.heads, self.rel_pos = dim, heads, rel_pos
    self.query = xavier_linear(dim, dim, rngs=rngs)
    self.key = xavier_linear(dim, dim, rngs=rngs)
    self.value = xavier_linear(dim, dim, rngs=rngs)
    self.pos = xavier_linear(dim, dim, use_bias=False, rngs=rngs)
    self.out = xavier_linear(dim, dim, rngs=rngs)
    self.u_bias = nnx.Param(xavier(rngs.params(), (heads, dim // heads)))
    self.v_bias = nnx.Param(xavier(rngs.params(), (heads, dim // heads)))
    self.dropout = nnx.Dropout(dropout, rngs=rngs)

  def relative_positions(self, length: int) -> jax.Array:
    """The positions whose sinusoids feed `pos`: T-1 .. -(T-1), or 0 .. T-1 ('reference')."""
    if self.rel_pos == "reference":
      return jnp.arange(length)
    return jnp.arange(length - 1, -length, -1)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """x (B,T,d), mask (B,T) (1 = valid) -> (B,T,d)."""
    b, t, _ = x.shape
    h, dh = self.heads, self.dim // self.heads
    q = self.query(x).reshape(b, t, h, dh)
    k = self.key(x).reshape(b, t, h, dh)
    v = self.value(x).reshape(b, t, h, dh)
    p = self.pos(sinusoids(self.relative_positions(t), self.dim).astype(x.dtype))
    p = p.reshape(-1, h, dh)
    content = jnp.einsum("bihd,bjhd->bhij", q + self.u_bias[...], k)
    position = jnp.einsum("bihd,phd->bhip", q + self.v_bias[...], p)
    position = relative_shift(position, keep=None if self.rel_pos == "reference" else t)
    scores = (content + position) / math.sqrt(self.dim)
    if mask is not None:
      scores = jnp.where(mask[:, None, None, :] > 0, scores, MASKED)
    attn = self.dropout(jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(x.dtype))
    context = jnp.einsum("bhij,bjhd->bihd", attn, v).reshape(b, t, self.dim)
    return self.out(context)


class ConvModule(nnx.Module):
  """LN, pointwise d -> 2d, GLU, depthwise conv (kernel k, no bias), BatchNorm, Swish, pointwise,
  Dropout. (B,T,d) -> (B,T,d). Padded frames are zeroed before the depthwise conv and excluded from
  BatchNorm's batch statistics."""

  def __init__(self, dim: int, kernel_size: int, dropout: float, *, rngs: nnx.Rngs):
    if kernel_size % 2 != 1:
      raise ValueError(f"kernel_size={kernel_size} must be odd ('SAME' padding).")
    self.norm = layer_norm(dim, rngs)
    self.pointwise1 = torch_linear(dim, 2 * dim, rngs=rngs)
    pad = (kernel_size - 1) // 2
    self.depthwise = nnx.Conv(dim, dim, (kernel_size,), padding=((pad, pad),),
                              feature_group_count=dim, use_bias=False,
                              kernel_init=torch_default_kernel, rngs=rngs)
    self.bn = nnx.BatchNorm(dim, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, rngs=rngs)
    self.pointwise2 = torch_linear(dim, dim, rngs=rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    y = self.pointwise1(self.norm(x))
    a, gate = jnp.split(y, 2, axis=-1)
    y = a * jax.nn.sigmoid(gate)  # GLU over channels.
    bn_mask = None
    if mask is not None:
      y = y * mask[..., None].astype(y.dtype)
      bn_mask = jnp.broadcast_to(mask[..., None] > 0, y.shape)
    y = depthwise_conv1d(y, self.depthwise.kernel[...].astype(y.dtype))
    y = self.bn(y, mask=bn_mask)
    return self.dropout(self.pointwise2(swish(y)))


class ConformerBlock(nnx.Module):
  """Macaron FF (x0.5), relative MHSA, conv module, FF (x0.5), LayerNorm. (B,T,d) -> (B,T,d)."""

  def __init__(self, dim: int, *, heads: int = 8, ff_mult: int = 4, kernel_size: int = 31,
               dropout: float = 0.1, rel_pos: str = "transformer_xl", rngs: nnx.Rngs):
    self.ff1 = FeedForward(dim, ff_mult, dropout, rngs=rngs)
    self.attn_norm = layer_norm(dim, rngs)
    self.attn = RelativeMultiHeadAttention(dim, heads, dropout, rel_pos=rel_pos, rngs=rngs)
    self.attn_dropout = nnx.Dropout(dropout, rngs=rngs)
    self.conv = ConvModule(dim, kernel_size, dropout, rngs=rngs)
    self.ff2 = FeedForward(dim, ff_mult, dropout, rngs=rngs)
    self.norm = layer_norm(dim, rngs)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    x = x + 0.5 * self.ff1(x)
    x = x + self.attn_dropout(self.attn(self.attn_norm(x), mask))
    x = x + self.conv(x, mask)
    x = x + 0.5 * self.ff2(x)
    return self.norm(x)


class Conformer(nnx.Module):
  """Input projection (xavier Linear + dropout) and `num_blocks` Conformer blocks.

  (B,T,input_dim), mask (B,T) -> (B,T,dim). Attributes: `input_projection`, `blocks`. `remat`:
  recompute each block in the backward pass instead of keeping its activations (long sequences);
  the blocks then run as one scanned, checkpointed block (`scan_blocks`), the form in which XLA
  keeps only one block's activations alive (unrolled checkpoints save nothing on XLA:CPU).
  """

  def __init__(self, input_dim: int, dim: int, num_blocks: int, *, heads: int = 8,
               ff_mult: int = 4, kernel_size: int = 31, dropout: float = 0.1,
               rel_pos: str = "transformer_xl", remat: bool = False, rngs: nnx.Rngs):
    self.remat = remat
    self.input_projection = xavier_linear(input_dim, dim, rngs=rngs)
    self.input_dropout = nnx.Dropout(dropout, rngs=rngs)
    self.blocks = nnx.List([
        ConformerBlock(dim, heads=heads, ff_mult=ff_mult, kernel_size=kernel_size,
                       dropout=dropout, rel_pos=rel_pos, rngs=rngs) for _ in range(num_blocks)])

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    x = self.input_dropout(self.input_projection(x))
    if self.remat:
      return scan_blocks(self.blocks, x, mask)
    for block in self.blocks:
      x = block(x, mask)
    return x


def scan_blocks(blocks: Sequence[nnx.Module], x: jax.Array, mask: jax.Array | None) -> jax.Array:
  """Identical blocks applied in order as one `lax.scan` over their stacked states, each step
  recomputed in the backward pass. Parameters stay per block (names, checkpoints and converters are
  unchanged): they are stacked for the scan and their gradients flow back through the stack; the
  blocks' other state (BatchNorm statistics, dropout RNG counts) is written back after it."""
  graphdef = nnx.graphdef(blocks[0])
  params, others = zip(*(nnx.state(block, nnx.Param, ...) for block in blocks))
  stack = lambda states: jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)

  @jax.checkpoint
  def step(h: jax.Array, layer: tuple[nnx.State, nnx.State]) -> tuple[jax.Array, nnx.State]:
    block = nnx.merge(graphdef, *layer)
    h = block(h, mask)
    return h, nnx.state(block, nnx.Not(nnx.Param))

  x, new_others = jax.lax.scan(step, x, (stack(params), stack(others)))
  for i, block in enumerate(blocks):
    nnx.update(block, jax.tree.map(lambda leaf: leaf[i], new_others))
  return x


def masked_mean(x: jax.Array, mask: jax.Array | None) -> jax.Array:
  """Mean over the valid frames. x (B,T,...), mask (B,T) -> (B,...); 0 without a valid frame."""
  if mask is None:
    return jnp.mean(x, axis=1)
  m = mask.astype(x.dtype).reshape(mask.shape + (1,) * (x.ndim - 2))
  return jnp.sum(x * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)


__all__: Sequence[str] = ("Conformer", "ConformerBlock", "ConvModule", "FeedForward", "REL_POS",
                          "RelativeMultiHeadAttention", "masked_mean", "relative_shift",
                          "scan_blocks", "sinusoids")
