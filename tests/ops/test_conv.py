"""Convolution kernels: every form of the depthwise 1-D convolution and of the 4x4 stride-2
transposed convolution gives XLA's convolution's values and gradients, chosen per call or forced."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avjax import ops


def _grads(f, w, *args):
  """Gradients of sum(f(*args) * w) to every argument."""
  return jax.grad(lambda *a: jnp.sum(f(*a) * w), argnums=tuple(range(len(args))))(*args)


def _assert_same(f, g, w, *args, **tol):
  np.testing.assert_allclose(f(*args), g(*args), **tol)
  for got, want in zip(_grads(f, w, *args), _grads(g, w, *args)):
    np.testing.assert_allclose(got, want, **tol)


@pytest.mark.parametrize("form", ops.FORMS["depthwise_conv1d"])
def test_depthwise_conv1d_by_hand(form):
  # One channel, kernel (1, 2, 3): out[t] = x[t-1] + 2 x[t] + 3 x[t+1], zeros outside.
  x = jnp.array([1.0, 10.0, 100.0]).reshape(1, 3, 1)
  kernel = jnp.array([1.0, 2.0, 3.0]).reshape(3, 1, 1)
  np.testing.assert_allclose(ops.depthwise_conv1d(x, kernel, form).ravel(),
                             [2 + 30, 1 + 20 + 300, 10 + 200])


@pytest.mark.parametrize("form", ops.FORMS["depthwise_conv1d"])
def test_depthwise_conv1d_forms_equal_grouped_convolution_with_gradients(form):
  kx, kk, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (2, 9, 4))
  kernel = jax.random.normal(kk, (5, 1, 4))
  g = jax.random.normal(kg, (2, 9, 4))
  grouped = lambda x, k: jax.lax.conv_general_dilated(
      x, k, (1,), [(2, 2)], dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=4)
  with ops.force(depthwise_conv1d=form):  # Forced for the 'auto' the model code passes.
    _assert_same(ops.depthwise_conv1d, grouped, g, x, kernel, rtol=1e-5, atol=1e-5)
  _assert_same(ops.shifted_products, grouped, g, x, kernel, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("form", ops.FORMS["conv_transpose"])
def test_conv_transpose_forms_equal_lax_conv_transpose_with_gradients(form):
  """col2im (one matrix product, then each output phase's four terms) is lax.conv_transpose
  (k 4, s 2, lax padding 2), PyTorch's ConvTranspose2d(k=4, s=2, p=1), in values and gradients."""
  kx, kk, kw = jax.random.split(jax.random.key(1), 3)
  x = jax.random.normal(kx, (2, 5, 7, 6))
  kernel = jax.random.normal(kk, (4, 4, 6, 5)) * 0.2
  w = jax.random.normal(kw, (2, 10, 14, 5))
  native = lambda x, k: jax.lax.conv_transpose(x, k, (2, 2), ((2, 2), (2, 2)),
                                               dimension_numbers=("NHWC", "HWIO", "NHWC"))
  with ops.force(conv_transpose=form):
    assert ops.conv_transpose_4x4_s2(x, kernel).shape == (2, 10, 14, 5)
    _assert_same(ops.conv_transpose_4x4_s2, native, w, x, kernel, rtol=1e-4, atol=1e-5)
  per_call = lambda x, k: ops.conv_transpose_4x4_s2(x, k, form)
  _assert_same(per_call, native, w, x, kernel, rtol=1e-4, atol=1e-5)


def test_col2im_keeps_bfloat16_inputs_bfloat16():
  x = jnp.ones((1, 2, 3, 4), jnp.bfloat16)
  kernel = jnp.ones((4, 4, 4, 2), jnp.bfloat16)
  y = ops.col2im_conv_transpose(x, kernel)
  assert y.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(y, np.float32),
                             np.asarray(ops.conv_transpose_4x4_s2(x, kernel, "lax"), np.float32))
