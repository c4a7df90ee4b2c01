"""VQ-VAE parts of CM-VQVAE (NHWC): quantizers, straight-through mask thresholds, encoders, decoders.

Quantizers (one codebook of K vectors of dimension D per modality; inputs z (B,h,w,D)):

  k = argmin_j |z - e_j|^2 (computed as |z|^2 + |e_j|^2 - 2 z.e_j), q = e_k with the codebook
  before this step's update; straight-through output q_st = z + sg(q - z) (forward q, backward
  identity); perplexity = exp(-sum_k p_k log(p_k + 1e-10)), p = code counts / number of vectors.

`VectorQuantizerEMA` (decay > 0): the codebook e, EMA sums m and cluster sizes N are `VQState`
variables (not `nnx.Param`: the optimizer never sees them; they live in TrainState.model_state and
are checkpointed). Init e ~ N(0,1), m ~ N(0,1), N = 0. In training mode only (the module's
`use_running_average` is False; `model.eval()` sets it), with counts c_k and sums s_k = sum_{z->k} z
over the whole (global) batch:
  N <- decay N + (1 - decay) c;  n = sum N;  N <- (N + eps) / (n + K eps) * n   (Laplace smoothing)
  m <- decay m + (1 - decay) s;  e <- m / N
  loss = beta * mean((z - sg(q))^2)   (commitment only; the codebook learns by EMA)

`VectorQuantizer` (decay 0): the codebook is a Param, init U(-1/K, 1/K), and
  loss = mean((sg(z) - q)^2) + beta * mean((z - sg(q))^2).

Mask thresholds (`threshold_mask`, the reference's piggyback-style autograd functions): the forward
value depends on `threshold_fn`, the backward pass is the identity to the raw mask m:
  binarizer  1[m > t];  ternarizer -1 where m < 0, 1 where m > t, else 0;  attention m itself;
  randomizer 1[u > 0.5] with u ~ U[0, 1) drawn per call (a dropout-like control, independent of m).

Encoders / decoders (layer shapes in avjax.models.cmvqvae) use PyTorch's default init: conv,
transposed conv and linear weights and biases U(+-1/sqrt(fan_in)), where a transposed conv's fan_in
counts its output channels, as PyTorch computes it; BatchNorm scale 1, bias 0, PyTorch momentum 0.1.
"""

from __future__ import annotations

import math

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from avjax.ops import conv_transpose_4x4_s2, max_pool_3x3_s2

LOG_EPS = 1e-10
THRESHOLD_FNS = ("binarizer", "ternarizer", "attention", "randomizer")
HIGHEST = jax.lax.Precision.HIGHEST


class VQState(nnx.Variable):
  """Non-trainable quantizer state (EMA codebook, sums, cluster sizes): model_state, not params."""


@flax.struct.dataclass
class VQOutput:
  """A quantizer's outputs.

  Attributes:
    quantized: (B,h,w,D) straight-through quantized vectors (forward q, gradient to z).
    loss: scalar VQ loss (commitment, plus the codebook loss for the plain quantizer).
    perplexity: scalar perplexity of this batch's code usage.
    codes: (B,h,w) int32 code indices.
  """

  quantized: jax.Array
  loss: jax.Array
  perplexity: jax.Array
  codes: jax.Array


def nearest_codes(flat: jax.Array, codebook: jax.Array) -> jax.Array:
  """Index of the nearest code for each row. flat (N,D), codebook (K,D) -> (N,) int32."""
  dist = (jnp.sum(flat ** 2, axis=1, keepdims=True) + jnp.sum(codebook ** 2, axis=1)
          - 2.0 * jnp.matmul(flat, codebook.T, precision=HIGHEST))
  return jnp.argmin(dist, axis=1).astype(jnp.int32)


def code_perplexity(counts: jax.Array) -> jax.Array:
  """exp(-sum p log(p + 1e-10)) of code counts (..., K) normalised over the last axis."""
  p = counts / jnp.sum(counts, axis=-1, keepdims=True)
  return jnp.exp(-jnp.sum(p * jnp.log(p + LOG_EPS), axis=-1))


def ema_codebook_update(cluster_size: jax.Array, ema_w: jax.Array, counts: jax.Array,
                        sums: jax.Array, decay: float, epsilon: float
                        ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One EMA step with Laplace smoothing (module docstring).

  Args: cluster_size N (K,), ema_w m (K,D), counts c (K,), sums s (K,D), decay, epsilon.
  Returns: (new N (K,), new m (K,D), new codebook m / N (K,D)).
  """
  k = cluster_size.shape[0]
  n_k = cluster_size * decay + (1.0 - decay) * counts
  n = jnp.sum(n_k)
  n_k = (n_k + epsilon) / (n + k * epsilon) * n
  m = ema_w * decay + (1.0 - decay) * sums
  return n_k, m, m / n_k[:, None]


def straight_through(z: jax.Array, q: jax.Array) -> jax.Array:
  """z + sg(q - z): q in the forward pass, the identity to z in the backward pass."""
  return z + jax.lax.stop_gradient(q - z)


def _mse(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.mean(jnp.square(a - b))


def _flatten(z: jax.Array, dim: int) -> jax.Array:
  if z.shape[-1] != dim:
    raise ValueError(f"The quantizer expects (..., {dim}) vectors, got shape {z.shape}.")
  return z.reshape(-1, dim)


class VectorQuantizerEMA(nnx.Module):
  """EMA vector quantizer (module docstring). (B,h,w,D) -> VQOutput."""

  def __init__(self, num_embeddings: int, embedding_dim: int, commitment_cost: float = 0.25,
               decay: float = 0.99, epsilon: float = 1e-5, *, rngs: nnx.Rngs):
    self.num_embeddings = num_embeddings
    self.embedding_dim = embedding_dim
    self.commitment_cost = commitment_cost
    self.decay = decay
    self.epsilon = epsilon
    shape = (num_embeddings, embedding_dim)
    self.codebook = VQState(jax.random.normal(rngs.params(), shape, jnp.float32))
    self.ema_w = VQState(jax.random.normal(rngs.params(), shape, jnp.float32))
    self.cluster_size = VQState(jnp.zeros((num_embeddings,), jnp.float32))
    self.use_running_average = False  # model.train() / model.eval() switch the EMA update.

  def __call__(self, z: jax.Array) -> VQOutput:
    flat = _flatten(z, self.embedding_dim)
    codebook = self.codebook[...]
    codes = nearest_codes(jax.lax.stop_gradient(flat), codebook)
    q = jnp.take(codebook, codes, axis=0).reshape(z.shape)
    onehot = jax.nn.one_hot(codes, self.num_embeddings, dtype=jnp.float32)
    counts = jnp.sum(onehot, axis=0)
    if not self.use_running_average:
      sums = jnp.matmul(onehot.T, jax.lax.stop_gradient(flat), precision=HIGHEST)
      n_k, m, e = ema_codebook_update(self.cluster_size[...], self.ema_w[...], counts, sums,
                                      self.decay, self.epsilon)
      self.cluster_size[...] = n_k
      self.ema_w[...] = m
      self.codebook[...] = e
    loss = self.commitment_cost * _mse(z, jax.lax.stop_gradient(q))
    return VQOutput(quantized=straight_through(z, q), loss=loss,
                    perplexity=code_perplexity(counts), codes=codes.reshape(z.shape[:-1]))


class VectorQuantizer(nnx.Module):
  """Plain vector quantizer with a trainable codebook (module docstring). (B,h,w,D) -> VQOutput."""

  def __init__(self, num_embeddings: int, embedding_dim: int, commitment_cost: float = 0.25, *,
               rngs: nnx.Rngs):
    self.num_embeddings = num_embeddings
    self.embedding_dim = embedding_dim
    self.commitment_cost = commitment_cost
    bound = 1.0 / num_embeddings
    self.codebook = nnx.Param(jax.random.uniform(
        rngs.params(), (num_embeddings, embedding_dim), jnp.float32, -bound, bound))

  def __call__(self, z: jax.Array) -> VQOutput:
    flat = _flatten(z, self.embedding_dim)
    codebook = self.codebook[...]
    codes = nearest_codes(jax.lax.stop_gradient(flat), jax.lax.stop_gradient(codebook))
    onehot = jax.nn.one_hot(codes, self.num_embeddings, dtype=jnp.float32)
    # A one-hot product, as the reference: its gradient to the codebook is a deterministic matmul.
    q = jnp.matmul(onehot, codebook, precision=HIGHEST).reshape(z.shape)
    loss = (_mse(q, jax.lax.stop_gradient(z))
            + self.commitment_cost * _mse(z, jax.lax.stop_gradient(q)))
    return VQOutput(quantized=straight_through(z, q), loss=loss,
                    perplexity=code_perplexity(jnp.sum(onehot, axis=0)),
                    codes=codes.reshape(z.shape[:-1]))


# ------------------------------------------------------------------------------- mask thresholds


@jax.custom_vjp
def identity_backward(x: jax.Array, value: jax.Array) -> jax.Array:
  """Returns `value` exactly; the gradient flows to `x` unchanged (and none to `value`)."""
  del x
  return value


def _identity_backward_fwd(x, value):
  del x
  return value, None


def _identity_backward_bwd(_, g):
  return g, jnp.zeros_like(g)


identity_backward.defvjp(_identity_backward_fwd, _identity_backward_bwd)


def check_threshold_fn(name: str) -> str:
  if name not in THRESHOLD_FNS:
    raise ValueError(f"Unknown mask threshold function {name!r}; use one of {THRESHOLD_FNS}.")
  return name


def hard_mask(mask: jax.Array, threshold_fn: str, threshold: float,
              key: jax.Array | None = None) -> jax.Array:
  """The forward value of a thresholded mask (no gradient), same shape and dtype as `mask`."""
  check_threshold_fn(threshold_fn)
  if threshold_fn == "binarizer":
    out = (mask > threshold).astype(mask.dtype)
  elif threshold_fn == "ternarizer":
    out = jnp.where(mask < 0, -1.0, jnp.where(mask > threshold, 1.0, 0.0)).astype(mask.dtype)
  elif threshold_fn == "attention":
    out = mask
  else:
    if key is None:
      raise ValueError("The 'randomizer' mask needs a random key.")
    out = (jax.random.uniform(key, mask.shape) > 0.5).astype(mask.dtype)
  return jax.lax.stop_gradient(out)


def threshold_mask(mask: jax.Array, threshold_fn: str, threshold: float,
                   key: jax.Array | None = None) -> jax.Array:
  """Thresholded mask: forward `hard_mask(...)`, backward the identity to `mask` (STE)."""
  if threshold_fn == "attention":
    return mask
  return identity_backward(mask, hard_mask(mask, threshold_fn, threshold, key))


# ------------------------------------------------------------------------ encoders, decoders

BN_MOMENTUM = 0.9  # PyTorch momentum 0.1.
BN_EPSILON = 1e-5


def torch_uniform(fan_in: int) -> nnx.Initializer:
  """PyTorch's default for conv / linear weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def conv(cin: int, cout: int, kernel: int, stride: int, pad: int, *, bias: bool = True,
         rngs: nnx.Rngs) -> nnx.Conv:
  init = torch_uniform(cin * kernel * kernel)
  return nnx.Conv(cin, cout, (kernel, kernel), strides=(stride, stride),
                  padding=((pad, pad), (pad, pad)), use_bias=bias, kernel_init=init,
                  bias_init=init, rngs=rngs)


def conv_transpose(cin: int, cout: int, *, rngs: nnx.Rngs) -> "UpConv":
  """PyTorch ConvTranspose2d(k=4, s=2, p=1): doubles h and w."""
  return UpConv(cin, cout, rngs=rngs)


class UpConv(nnx.Module):
  """PyTorch's ConvTranspose2d(k=4, s=2, p=1) (doubles h and w). (B,h,w,Cin) -> (B,2h,2w,Cout).

  Parameters as nnx.ConvTranspose's (`kernel` (4,4,Cin,Cout) in lax.conv_transpose's layout,
  `bias` (Cout,); same initialisation, same draws), so checkpoints and the converter see no
  difference. The product is avjax.ops.conv_transpose_4x4_s2: on CPUs one matrix product and an
  overlap-add (col2im), elsewhere lax.conv_transpose (cuDNN's kernels on GPUs); the same sum of
  products either way (docs/benchmarks.md).
  """

  def __init__(self, cin: int, cout: int, *, dtype: jnp.dtype | None = None,
               param_dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
    init = torch_uniform(cout * 16)
    self.kernel = nnx.Param(init(rngs.params(), (4, 4, cin, cout), param_dtype))
    self.bias = nnx.Param(init(rngs.params(), (cout,), param_dtype))
    self.dtype, self.param_dtype = dtype, param_dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    dtype = self.dtype or jnp.result_type(x, self.kernel[...])
    x, kernel, bias = (jnp.asarray(t, dtype) for t in (x, self.kernel[...], self.bias[...]))
    return conv_transpose_4x4_s2(x, kernel) + bias


def batch_norm(channels: int, *, rngs: nnx.Rngs) -> nnx.BatchNorm:
  return nnx.BatchNorm(channels, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, rngs=rngs)


def dense(cin: int, cout: int, *, rngs: nnx.Rngs) -> nnx.Linear:
  init = torch_uniform(cin)
  return nnx.Linear(cin, cout, kernel_init=init, bias_init=init, rngs=rngs)


class Residual(nnx.Module):
  """x + Conv1x1(ReLU(BN(Conv3x3(ReLU(BN(x)))))), channels -> hidden -> channels, no conv bias."""

  def __init__(self, channels: int, hidden: int, *, rngs: nnx.Rngs):
    self.bn_1 = batch_norm(channels, rngs=rngs)
    self.conv_1 = conv(channels, hidden, 3, 1, 1, bias=False, rngs=rngs)
    self.bn_2 = batch_norm(hidden, rngs=rngs)
    self.conv_2 = conv(hidden, channels, 1, 1, 0, bias=False, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.conv_1(nnx.relu(self.bn_1(x)))
    return x + self.conv_2(nnx.relu(self.bn_2(y)))


class ResidualStack(nnx.Module):
  """`num_layers` residual blocks, then BN and ReLU. (B,h,w,C) -> (B,h,w,C)."""

  def __init__(self, channels: int, hidden: int, num_layers: int, *, rngs: nnx.Rngs):
    self.layers = nnx.List([Residual(channels, hidden, rngs=rngs) for _ in range(num_layers)])
    self.bn = batch_norm(channels, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    for layer in self.layers:
      x = layer(x)
    return nnx.relu(self.bn(x))


class Encoder(nnx.Module):
  """VQ-VAE encoder: (B,H,W,Cin) -> (B,H/4,W/4,hiddens), or /8 with `max_pool` (audio)."""

  def __init__(self, in_channels: int, num_hiddens: int, num_residual_layers: int,
               num_residual_hiddens: int, *, max_pool: bool, rngs: nnx.Rngs):
    self.max_pool = max_pool
    self.conv_1 = conv(in_channels, num_hiddens // 2, 4, 2, 1, rngs=rngs)
    self.bn_1 = batch_norm(num_hiddens // 2, rngs=rngs)
    self.conv_2 = conv(num_hiddens // 2, num_hiddens, 4, 2, 1, rngs=rngs)
    self.bn_2 = batch_norm(num_hiddens, rngs=rngs)
    self.conv_3 = conv(num_hiddens, num_hiddens, 3, 1, 1, rngs=rngs)
    self.residual_stack = ResidualStack(num_hiddens, num_residual_hiddens, num_residual_layers,
                                        rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = nnx.relu(self.bn_1(self.conv_1(x)))
    x = nnx.relu(self.bn_2(self.conv_2(x)))
    x = self.conv_3(x)
    if self.max_pool:
      x = max_pool_3x3_s2(x)
    return self.residual_stack(x)


class Decoder(nnx.Module):
  """VQ-VAE decoder: (B,h,w,D) -> (B,h*2^n,w*2^n,out_channels), n = `num_upsamples` (2 visual, 3
  audio); ConvT widths H -> H/2 (-> H/4) -> out, BN + ReLU between them, no output activation."""

  def __init__(self, in_channels: int, out_channels: int, num_hiddens: int,
               num_residual_layers: int, num_residual_hiddens: int, *, num_upsamples: int,
               rngs: nnx.Rngs):
    self.conv_1 = conv(in_channels, num_hiddens, 3, 1, 1, rngs=rngs)
    self.residual_stack = ResidualStack(num_hiddens, num_residual_hiddens, num_residual_layers,
                                        rngs=rngs)
    widths = [num_hiddens // 2 ** i for i in range(num_upsamples)] + [out_channels]
    self.conv_trans = nnx.List([conv_transpose(widths[i], widths[i + 1], rngs=rngs)
                                for i in range(num_upsamples)])
    self.bns = nnx.List([batch_norm(w, rngs=rngs) for w in widths[1:-1]])

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.residual_stack(self.conv_1(x))
    for i, up in enumerate(self.conv_trans):
      x = up(x)
      if i < len(self.bns):
        x = nnx.relu(self.bns[i](x))
    return x
