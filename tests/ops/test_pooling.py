"""The shared 3x3 stride-2 max-pool: -inf padding, and PyTorch's gradient rule (first maximum)."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avjax import ops
from avjax.ops import max_pool_3x3_s2


def _windows(x: np.ndarray):
  """(output row, output col, input rows, input cols) of every window, PyTorch's scan order."""
  _, h, w, _ = x.shape
  for a, b in itertools.product(range((h - 1) // 2 + 1), range((w - 1) // 2 + 1)):
    rows = [r for r in (2 * a - 1, 2 * a, 2 * a + 1) if 0 <= r < h]
    cols = [c for c in (2 * b - 1, 2 * b, 2 * b + 1) if 0 <= c < w]
    yield a, b, rows, cols


def _numpy_pool_and_grad(x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The forward by definition, and each output's gradient to its window's first maximum."""
  out = np.empty(g.shape, x.dtype)
  dx = np.zeros_like(x)
  for n, ch in itertools.product(range(x.shape[0]), range(x.shape[3])):
    for a, b, rows, cols in _windows(x):
      cells = [(r, c) for r in rows for c in cols]
      values = [x[n, r, c, ch] for r, c in cells]
      first = int(np.argmax(values))  # numpy's argmax returns the first maximum, like PyTorch.
      out[n, a, b, ch] = values[first]
      dx[n, cells[first][0], cells[first][1], ch] += g[n, a, b, ch]
  return out, dx


def test_pads_with_minus_inf():
  x = -1.0 - np.random.default_rng(0).uniform(size=(2, 7, 6, 3)).astype(np.float32)
  out = np.asarray(max_pool_3x3_s2(jnp.asarray(x)))
  assert out.shape == (2, 4, 3, 3)
  assert (out < 0).all()  # zero padding would leak 0 into every border window
  np.testing.assert_array_equal(out[:, 0, 0], x[:, :2, :2].max(axis=(1, 2)))


@pytest.mark.parametrize("shape", [(2, 7, 6, 3), (1, 8, 9, 2), (1, 1, 1, 1), (1, 2, 5, 1)])
def test_values_and_gradient_match_first_maximum_rule(shape):
  rng = np.random.default_rng(1)
  # Small integers: many exact ties inside and across overlapping windows.
  x = rng.integers(-2, 3, size=shape).astype(np.float32)
  out_shape = (shape[0], (shape[1] - 1) // 2 + 1, (shape[2] - 1) // 2 + 1, shape[3])
  g = rng.integers(1, 9, size=out_shape).astype(np.float32)
  want_out, want_dx = _numpy_pool_and_grad(x, g)
  out, vjp = jax.vjp(jax.jit(max_pool_3x3_s2), jnp.asarray(x))
  np.testing.assert_array_equal(out, want_out)
  np.testing.assert_array_equal(vjp(jnp.asarray(g))[0], want_dx)


def test_all_tied_window_gives_gradient_to_its_first_input():
  x = jnp.zeros((1, 3, 3, 1))
  _, vjp = jax.vjp(max_pool_3x3_s2, x)
  dx = np.asarray(vjp(jnp.array([[[[1.0], [10.0]], [[100.0], [1000.0]]]]))[0])[0, :, :, 0]
  # Output (0,0) sees rows/cols 0-1 (first: (0,0)); (0,1) cols 1-2 -> (0,1); (1,0) -> (1,0); ...
  np.testing.assert_array_equal(dx, [[1, 10, 0], [100, 1000, 0], [0, 0, 0]])


def test_agrees_with_reduce_window_without_ties_in_bfloat16():
  """The 'shifts' form against the 'reduce_window' form (lax.reduce_window, XLA's gradient), per
  call and forced."""
  x = jax.random.normal(jax.random.key(0), (2, 12, 10, 4)).astype(jnp.bfloat16)
  with ops.force(max_pool="reduce_window"):
    ref, ref_vjp = jax.vjp(max_pool_3x3_s2, x)
  ours, ours_vjp = jax.vjp(lambda x: max_pool_3x3_s2(x, "shifts"), x)
  g = jax.random.normal(jax.random.key(1), ref.shape).astype(jnp.bfloat16)
  assert ours.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(ours, np.float32), np.asarray(ref, np.float32))
  np.testing.assert_allclose(np.asarray(ours_vjp(g)[0], np.float32),
                             np.asarray(ref_vjp(g)[0], np.float32), rtol=1e-2, atol=1e-2)


def test_matches_torch_max_pool_gradient():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(2)
  x = rng.integers(-1, 2, size=(2, 9, 11, 3)).astype(np.float32)
  g = rng.standard_normal((2, 5, 6, 3)).astype(np.float32)
  xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
  torch.nn.functional.max_pool2d(xt, 3, 2, 1).backward(torch.tensor(g.transpose(0, 3, 1, 2)))
  _, vjp = jax.vjp(max_pool_3x3_s2, jnp.asarray(x))
  np.testing.assert_allclose(vjp(jnp.asarray(g))[0], xt.grad.numpy().transpose(0, 2, 3, 1),
                             rtol=1e-6, atol=1e-6)
