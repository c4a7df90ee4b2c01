"""Attention kernels: padding for cuDNN, the query-blocked CPU kernel and its flash-style backward."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avjax import ops
from avjax.ops import attend, attention_implementation, blocked_attention, padded_attention


def test_padded_attention_equals_unpadded():
  """The cuDNN path pads odd sequence lengths ([CLS] + patches) and masks the padding; with XLA's
  kernel the padded and unpadded products agree."""
  ks = jax.random.split(jax.random.key(0), 3)
  q = jax.random.normal(ks[0], (2, 5, 2, 8))
  k, v = (jax.random.normal(key, (2, 9, 2, 8)) for key in ks[1:])
  np.testing.assert_allclose(padded_attention(q, k, v, "xla"),
                             jax.nn.dot_product_attention(q, k, v), rtol=1e-5, atol=1e-6)
  assert attention_implementation("auto", jnp.float32) == "xla"
  assert attention_implementation("cudnn", jnp.float32) == "cudnn"


@pytest.mark.parametrize("n,m,dtype", [(600, 600, jnp.float32), (517, 9, jnp.float32),
                                       (300, 300, jnp.bfloat16)])
def test_blocked_attention_equals_materialised(n, m, dtype):
  """Query blocks (with padding of the last one) give the same outputs and gradients; bfloat16
  inputs keep a float32 softmax like XLA's kernel."""
  ks = jax.random.split(jax.random.key(1), 4)
  q = jax.random.normal(ks[0], (2, n, 2, 8)).astype(dtype)
  k, v = (jax.random.normal(key, (2, m, 2, 8)).astype(dtype) for key in ks[1:3])
  w = jax.random.normal(ks[3], (2, n, 2, 8))
  loss = lambda fn: lambda q, k, v: jnp.sum(fn(q, k, v).astype(jnp.float32) * w)
  plain = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="xla")
  blocked = lambda q, k, v: blocked_attention(q, k, v, block=128)
  tol = dict(rtol=1e-5, atol=1e-5) if dtype == jnp.float32 else dict(rtol=2e-2, atol=2e-2)
  np.testing.assert_allclose(np.asarray(blocked(q, k, v), np.float32),
                             np.asarray(plain(q, k, v), np.float32), **tol)
  grads = jax.grad(loss(blocked), argnums=(0, 1, 2))(q, k, v)
  want = jax.grad(loss(plain), argnums=(0, 1, 2))(q, k, v)
  for g, h in zip(grads, want):
    np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(h, np.float32), **tol)


def test_auto_attention_blocks_long_sequences_on_cpu():
  assert attention_implementation("auto", jnp.float32, 32, num_scores=1569 * 1569) == "blocked"
  assert attention_implementation("auto", jnp.float32, 32, num_scores=513 * 100) == "xla"
  assert attention_implementation("blocked", jnp.float32) == "blocked"


def test_blocked_backward_by_hand():
  """One query block of 2 against 3 keys (block=1 makes 2 blocks): the gradients equal the
  closed forms dV = P^T dO, dS = P * (dO V^T - rowsum(dO * O)), dQ = dS K / sqrt(Dh),
  dK = dS^T Q / sqrt(Dh), computed here in numpy."""
  rng = np.random.default_rng(3)
  q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((1, 2, 1, 4), (1, 3, 1, 4),
                                                                   (1, 3, 1, 4)))
  d_out = rng.standard_normal((1, 2, 1, 4)).astype(np.float32)
  out, vjp = jax.vjp(lambda q, k, v: blocked_attention(q, k, v, block=1), q, k, v)
  dq, dk, dv = vjp(jnp.asarray(d_out))
  q2, k2, v2, do2 = q[0, :, 0], k[0, :, 0], v[0, :, 0], d_out[0, :, 0]
  s = q2 @ k2.T / 2.0  # sqrt(Dh) = 2
  p = np.exp(s - s.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  o = p @ v2
  ds = p * (do2 @ v2.T - (do2 * o).sum(1, keepdims=True))
  np.testing.assert_allclose(np.asarray(out)[0, :, 0], o, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(dv)[0, :, 0], p.T @ do2, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(dq)[0, :, 0], ds @ k2 / 2.0, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(dk)[0, :, 0], ds.T @ q2 / 2.0, rtol=1e-5, atol=1e-6)


def test_attend_dispatches_on_the_implementation():
  ks = jax.random.split(jax.random.key(2), 3)
  q, k, v = (jax.random.normal(key, (1, 600, 2, 8)) for key in ks)
  want = jax.nn.dot_product_attention(q, k, v, implementation="xla")
  for choice in ("auto", "xla", "blocked"):
    np.testing.assert_allclose(attend(q, k, v, choice), want, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="not one of"):
    attend(q, k, v, "flash")


@pytest.mark.parametrize("form", ["xla", "blocked"])
def test_forced_attention_equals_the_other_forms(form):
  """A form forced for 'auto' (as VAT's default config passes it) gives XLA's values and
  gradients; an explicit choice still wins over the forced form. ('cudnn' needs a GPU.)"""
  ks = jax.random.split(jax.random.key(4), 4)
  q, k, v = (jax.random.normal(key, (1, 300, 2, 8)) for key in ks[:3])
  w = jax.random.normal(ks[3], (1, 300, 2, 8))
  plain = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="xla")
  loss = lambda fn: lambda q, k, v: jnp.sum(fn(q, k, v) * w)
  with ops.force(attention=form):
    assert attention_implementation("auto", jnp.float32, 8, 300 * 300) == form
    assert attention_implementation("xla", jnp.float32, 8, 300 * 300) == "xla"
    np.testing.assert_allclose(attend(q, k, v), plain(q, k, v), rtol=1e-5, atol=1e-5)
    grads = jax.grad(loss(attend), argnums=(0, 1, 2))(q, k, v)
  for got, want in zip(grads, jax.grad(loss(plain), argnums=(0, 1, 2))(q, k, v)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert attention_implementation("auto", jnp.float32, 8, 300 * 300) == "xla"  # Restored.
