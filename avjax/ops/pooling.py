"""The 3x3 stride-2 max-pool of ResNet stems and the CM-VQVAE audio encoder, with a fast gradient.

`lax.reduce_window`'s gradient lowers to select-and-scatter, which XLA:CPU expands into a variadic
reduce-window over four index (iota) arrays plus a scatter: ~17% of the OGM-GE step on CPU
(scripts/profile_step.py), and on GPUs it accumulates with atomics (non-deterministic). Here the
forward is the maximum of the 9 strided shifts of the padded input and the backward routes each
output's gradient to the first input of its window (row-major) that attains the maximum, as
PyTorch's MaxPool2d does: elementwise work XLA fuses, deterministic everywhere. That form
('shifts') runs on every backend; avjax.ops.policy's 'max_pool' family (or `form`) can force
'reduce_window' (lax.reduce_window and XLA's own gradient) instead.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from avjax.ops import policy

_OFFSETS = tuple((i, j) for i in range(3) for j in range(3))  # Window positions, PyTorch's order.


def _out_size(n: int) -> int:
  return (n - 1) // 2 + 1


def _shifts(x: jax.Array) -> list[jax.Array]:
  """The 9 window positions as (B,ho,wo,C) views of the input padded by one -inf on each side."""
  b, h, w, c = x.shape
  ho, wo = _out_size(h), _out_size(w)
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
  return [jax.lax.slice(padded, (0, i, j, 0), (b, i + 2 * ho - 1, j + 2 * wo - 1, c), (1, 2, 2, 1))
          for i, j in _OFFSETS]


def max_pool_3x3_s2(x: jax.Array, form: str = policy.AUTO) -> jax.Array:
  """MaxPool2d(3, stride 2, padding 1) padded with -inf. (B,H,W,C) -> (B,ceil(H/2),ceil(W/2),C)."""
  if policy.resolve("max_pool", form) == "reduce_window":
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                                 ((0, 0), (1, 1), (1, 1), (0, 0)))
  return _max_pool_shifts(x)


@jax.custom_vjp
def _max_pool_shifts(x: jax.Array) -> jax.Array:
  """The 'shifts' form: the maximum of the 9 window positions, with `_backward`'s gradient."""
  out = None
  for shift in _shifts(x):
    out = shift if out is None else jnp.maximum(out, shift)
  return out


def _forward(x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
  out = _max_pool_shifts(x)
  return out, (x, out)


def _backward(residuals: tuple[jax.Array, jax.Array], g: jax.Array) -> tuple[jax.Array]:
  """Each output's gradient to the first input of its window equal to its maximum."""
  x, out = residuals
  _, h, w, _ = x.shape
  ho, wo = out.shape[1:3]
  zero = jnp.zeros((), g.dtype)
  taken = jnp.zeros(out.shape, bool)
  dx = jnp.zeros(x.shape, g.dtype)
  for (i, j), shift in zip(_OFFSETS, _shifts(x)):
    hit = (shift == out) & ~taken
    taken = taken | hit
    # Output (a, b) at offset (i, j) reads input (2a + i - 1, 2b + j - 1): interleave with zeros
    # (interior padding 1) and shift by i - 1, j - 1 (negative padding crops).
    dx = dx + jax.lax.pad(jnp.where(hit, g, zero), zero,
                          ((0, 0, 0), (i - 1, h - (i - 1) - (2 * ho - 1), 1),
                           (j - 1, w - (j - 1) - (2 * wo - 1), 1), (0, 0, 0)))
  return (dx,)


_max_pool_shifts.defvjp(_forward, _backward)
