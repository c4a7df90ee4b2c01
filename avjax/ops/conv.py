"""Convolutions with a per-backend form: the Conformer's depthwise 1-D convolution and the VQ-VAE
decoders' 4x4 stride-2 transposed convolution.

Each has two forms that compute the same sums of products, chosen by avjax.ops.policy (families
'depthwise_conv1d' and 'conv_transpose', or a `form` argument): on CPUs the written-out forms
(`shifted_products`, `col2im_conv_transpose`), which XLA:CPU runs several times faster than its
convolutions (docs/benchmarks.md); elsewhere XLA's convolutions (cuDNN's kernels on GPUs).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from avjax.ops import policy


def depthwise_conv1d(x: jax.Array, kernel: jax.Array, form: str = policy.AUTO) -> jax.Array:
  """Per-channel 1-D convolution with zero 'SAME' padding. x (B,T,C), kernel (K,1,C) (nnx.Conv's
  depthwise layout; K odd) -> (B,T,C).

  'shifted' (CPUs): K shifted products, which XLA fuses into one elementwise loop (and its
  gradients into K reductions): XLA:CPU runs the grouped convolution ~3x slower forward + backward
  at VAVL's sizes, and inside a `lax.scan` (`conformer.scan_blocks`) its gradients fell to a naive
  loop that took minutes per step. The written-out form needs more step buffers (VAVL: ~25%), so
  accelerators keep the grouped convolution ('grouped')."""
  if policy.resolve("depthwise_conv1d", form) == "grouped":
    pad = (kernel.shape[0] - 1) // 2
    return jax.lax.conv_general_dilated(
        x, kernel, (1,), [(pad, pad)], dimension_numbers=("NWC", "WIO", "NWC"),
        feature_group_count=x.shape[-1])
  return shifted_products(x, kernel)


def shifted_products(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """depthwise_conv1d as sum_i pad(x)[:, i:i+T] * kernel[i, 0]: the 'shifted' (CPU) form."""
  k, t = kernel.shape[0], x.shape[1]
  pad = (k - 1) // 2
  padded = jnp.pad(x, ((0, 0), (pad, pad), (0, 0)))
  out = padded[:, :t] * kernel[0, 0]
  for i in range(1, k):
    out = out + padded[:, i:i + t] * kernel[i, 0]
  return out


def conv_transpose_4x4_s2(x: jax.Array, kernel: jax.Array, form: str = policy.AUTO) -> jax.Array:
  """PyTorch's ConvTranspose2d(k=4, s=2, p=1) product without bias, i.e. lax.conv_transpose(x,
  kernel, (2, 2), ((2, 2), (2, 2))). x (B,h,w,Cin), kernel (4,4,Cin,Cout) (HWIO) ->
  (B,2h,2w,Cout).

  'col2im' (CPUs): `col2im_conv_transpose`; XLA:CPU computes the kernel gradient of
  lax.conv_transpose's input-dilated convolution ~15x slower, and convolutions with few output
  channels (the decoders' last layers) at a few GFLOP/s. 'lax': lax.conv_transpose (cuDNN's
  kernels on GPUs)."""
  if policy.resolve("conv_transpose", form) == "col2im":
    return col2im_conv_transpose(x, kernel)
  return jax.lax.conv_transpose(x, kernel, (2, 2), ((2, 2), (2, 2)),
                                dimension_numbers=("NHWC", "HWIO", "NHWC"))


# Output phase (row or column parity) -> (kernel tap, input offset) pairs along each axis:
# y[2m] = x[m-1] K[0] + x[m] K[2], y[2m+1] = x[m] K[1] + x[m+1] K[3].
_PHASE_TAPS = (((0, -1), (2, 0)), ((1, 0), (3, 1)))


def col2im_conv_transpose(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """lax.conv_transpose(x, kernel, (2, 2), ((2, 2), (2, 2))) as PyTorch's col2im does it: every
  input pixel's contribution to all 16 kernel taps in one (B*h*w, Cin) x (Cin, 16*Cout) product,
  then each output phase sums its four (tap, shifted input) terms. (B,h,w,Cin) -> (B,2h,2w,Cout).
  The same FLOPs as the convolution, spent in one large matrix product; sums in float32."""
  b, h, w, cin = x.shape
  cout = kernel.shape[-1]
  per_tap = jnp.dot(x.reshape(-1, cin), kernel.transpose(2, 0, 1, 3).reshape(cin, 16 * cout),
                    preferred_element_type=jnp.float32)
  per_tap = jnp.pad(per_tap.reshape(b, h, w, 4, 4, cout),
                    ((0, 0), (1, 1), (1, 1), (0, 0), (0, 0), (0, 0)))  # Zero beyond the edges.
  rows = []
  for row_terms in _PHASE_TAPS:
    cols = []
    for col_terms in _PHASE_TAPS:
      cols.append(sum(per_tap[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w, ty, tx]
                      for ty, dy in row_terms for tx, dx in col_terms))
    rows.append(jnp.stack(cols, axis=3))  # (B, h, w, 2, Cout): column phase.
  y = jnp.stack(rows, axis=2)  # (B, h, 2, w, 2, Cout): row phase, then column phase.
  return y.reshape(b, 2 * h, 2 * w, cout).astype(x.dtype)
