"""Conformer: the relative shift, relative attention against a direct computation, padding masks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avjax.models import conformer

# Jitted calls: compiling a whole module once is much cheaper than op-by-op dispatch.
apply = nnx.jit(lambda module, *args: module(*args))


def np_sinusoid(position, dim):
  i = np.arange(0, dim, 2)
  angles = position / 10000.0 ** (i / dim)
  return np.stack([np.sin(angles), np.cos(angles)], -1).reshape(-1)[:dim]


def test_relative_shift_reads_the_relative_distance():
  t = 4
  x = np.arange(2 * t * (2 * t - 1), dtype=np.float32).reshape(2, t, 2 * t - 1)
  out = np.asarray(conformer.relative_shift(jnp.asarray(x), keep=t))
  # Column k holds distance T-1-k, so distance i-j sits in column T-1-i+j.
  expected = np.stack([[[x[b, i, t - 1 - i + j] for j in range(t)] for i in range(t)]
                       for b in range(2)])
  np.testing.assert_array_equal(out, expected)


def test_reference_shift_of_absolute_positions():
  """The reference feeds positions 0..T-1: j <= i reads p_{T-1-(i-j)}; j = i+1 the zero pad;
  j > i+1 the next row's p_{j-i-2}."""
  t = 3
  x = np.arange(1, t * t + 1, dtype=np.float32).reshape(t, t)
  out = np.asarray(conformer.relative_shift(jnp.asarray(x)))
  expected = np.zeros((t, t), np.float32)
  for i in range(t):
    for j in range(t):
      if j <= i:
        expected[i, j] = x[i, t - 1 - i + j]
      elif j > i + 1:
        expected[i, j] = x[i + 1, j - i - 2]
  np.testing.assert_array_equal(out, expected)


def test_sinusoids_of_negative_positions():
  pe = np.asarray(conformer.sinusoids(jnp.array([2, -3]), 4))
  for row, p in zip(pe, (2, -3)):
    expected = [math.sin(p), math.cos(p), math.sin(p / 100), math.cos(p / 100)]
    np.testing.assert_allclose(row, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np_sinusoid(p, 4), expected, rtol=1e-12)


def _direct_attention(att, x, mask):
  """score_ij = ((q_i + u) . k_j + (q_i + v) . W_pos r(i - j)) / sqrt(d), masked keys, softmax."""
  p = lambda layer: (np.asarray(layer.kernel[...]), None if layer.bias is None else
                     np.asarray(layer.bias[...]))
  lin = lambda layer, z: z @ p(layer)[0] + (0 if p(layer)[1] is None else p(layer)[1])
  b, t, d = x.shape
  h, dh = att.heads, d // att.heads
  q, k, v = (lin(m, x).reshape(b, t, h, dh) for m in (att.query, att.key, att.value))
  u, vb = np.asarray(att.u_bias[...]), np.asarray(att.v_bias[...])
  out = np.zeros((b, t, h, dh))
  for n in range(b):
    for i in range(t):
      for head in range(h):
        scores = np.empty(t)
        for j in range(t):
          r = np_sinusoid(i - j, d)
          pos = lin(att.pos, r).reshape(h, dh)[head]
          scores[j] = ((q[n, i, head] + u[head]) @ k[n, j, head]
                       + (q[n, i, head] + vb[head]) @ pos) / math.sqrt(d)
        scores = np.where(mask[n] > 0, scores, -1e9)
        w = np.exp(scores - scores.max())
        w /= w.sum()
        out[n, i, head] = w @ v[n, :, head]
  return lin(att.out, out.reshape(b, t, d))


def test_relative_attention_equals_direct_computation():
  att = conformer.RelativeMultiHeadAttention(8, 2, 0.0, rngs=nnx.Rngs(1))
  x = np.asarray(jax.random.normal(jax.random.key(0), (2, 4, 8)))
  mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], np.float32)
  got = np.asarray(apply(att, jnp.asarray(x), jnp.asarray(mask)))
  np.testing.assert_allclose(got, _direct_attention(att, x, mask), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("train", [False, True])
def test_block_output_does_not_depend_on_padding_length(train):
  """Valid frames give the same outputs (and BatchNorm statistics) with 2 or 6 padded frames."""
  block = conformer.ConformerBlock(8, heads=2, kernel_size=5, dropout=0.0, rngs=nnx.Rngs(0))
  block.train() if train else block.eval()
  x = jax.random.normal(jax.random.key(1), (2, 5, 8))
  mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], jnp.float32)
  junk = jax.random.normal(jax.random.key(2), (2, 4, 8)) * 10.0
  x_long = jnp.concatenate([x.at[0, 3:].set(5.0), junk], axis=1)
  mask_long = jnp.concatenate([mask, jnp.zeros((2, 4))], axis=1)
  short_block, long_block = nnx.clone(block), nnx.clone(block)
  short, long = apply(short_block, x, mask), apply(long_block, x_long, mask_long)
  np.testing.assert_allclose(short[0, :3], long[0, :3], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(short[1], long[1, :5], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(short_block.conv.bn.mean[...], long_block.conv.bn.mean[...],
                             rtol=1e-5, atol=1e-6)
  if train:  # The statistics did move (from 0), so the comparison above means something.
    assert np.abs(np.asarray(short_block.conv.bn.mean[...])).max() > 1e-4


def test_reference_positions_depend_on_padding_length():
  """rel_pos='reference' reproduces the reference's encoding, which is not padding-invariant."""
  att = conformer.RelativeMultiHeadAttention(8, 2, 0.0, rel_pos="reference", rngs=nnx.Rngs(1))
  x = jax.random.normal(jax.random.key(0), (1, 3, 8))
  padded = jnp.concatenate([x, jnp.zeros((1, 2, 8))], axis=1)
  short = apply(att, x, jnp.ones((1, 3)))
  long = apply(att, padded, jnp.array([[1, 1, 1, 0, 0.]]))
  assert np.abs(np.asarray(short - long[:, :3])).max() > 1e-4


def test_masked_mean():
  x = jnp.arange(12, dtype=jnp.float32).reshape(2, 3, 2)
  mask = jnp.array([[1, 1, 0], [0, 0, 0]], jnp.float32)
  np.testing.assert_allclose(conformer.masked_mean(x, mask), [[1.0, 2.0], [0.0, 0.0]])
