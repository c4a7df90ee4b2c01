"""AuxFormer (Goncalves & Busso, ICASSP 2022): MulT-style cross-modal transformers plus auxiliary
uni-modal networks (ilucasgoncalves/AuxFormer, net/avmodel_AF.py, modules/transformer.py).

Front ends to d = 50 per modality (features: Conv1d k = 1 without bias, skipped when the features
already have d channels, as the reference's 50-d EMOCA visual features; raw: VAVL's conv stems).
Transformer encoders (pre-LN, `heads` heads, `layers` layers, FF 4d ReLU, final LayerNorm; inputs
scaled by sqrt(d); the key/value inputs of a cross-modal layer go through the query's first
LayerNorm, as the reference):

  main:  h_a = SelfScalar_a(Cross_a<-v(a, v, v))[last]; h_v = SelfScalar_v(Cross_v<-a(v, a, a))
         [last]
         out = W_out(proj2(drop(relu(proj1([h_a; h_v])))) + [h_a; h_v])
  aux:   g_a = Self_a(Self_a(Self_a(a)))[last] (one encoder applied three times), g_v likewise;
         out_m = W_aux(proj_aux3(drop(relu(proj_aux2(drop(relu(proj_aux1(g_m))))))) + g_m),
         one head for both modalities.

Cross-modal encoders add sinusoidal positions (fairseq: positions 1..L of the valid frames, 0 -> a
zero vector for padding; [sin | cos] halves) and use no attention dropout. "Scalar" layers have a
learned alpha ~ U(0, 1): residual alpha x, sublayer (1 - alpha) f(x). With `causal_mask` (the
reference's default attn_mask) query i attends keys j < i + 1 + |L_k - L_q| (L the padded lengths).
Padded keys are masked too and "last" is the last valid frame (the reference takes the last padded
frame; docs/deviations.md).

Output: logits = (out + out_a + out_v) / 3 (the prediction), modality_logits = the auxiliary heads'
out_a / out_v, joint_logits = out. `modality_mask` (B, 2) scales the projected input sequences
(0 removes a modality, as AuxFormer's modality dropout zeroes an input).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from avjax.models import register_model, section_kwargs
from avjax.models.conformer import MASKED, torch_default_bias, torch_default_kernel, xavier
from avjax.models.outputs import ModelOutput, apply_modality_mask
from avjax.models.vavl import ModalityEncoder
from avjax.ops import fast_dropout_rngs


def fairseq_positions(mask: jax.Array, dim: int) -> jax.Array:
  """Sinusoidal embeddings of positions 1..L of the valid frames (0 -> zeros). (B,T) -> (B,T,dim).

  fairseq / MulT layout: half = dim // 2 frequencies exp(-k log(1e4) / (half - 1)),
  [sin(p f) | cos(p f)], a zero column when dim is odd.
  """
  valid = mask > 0
  positions = jnp.cumsum(valid, axis=1) * valid  # Right-padded: 1..L, then 0.
  half = dim // 2
  freq = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -(math.log(10000.0) / (half - 1)))
  angles = positions[..., None].astype(jnp.float32) * freq
  emb = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
  if dim % 2:
    emb = jnp.concatenate([emb, jnp.zeros(emb.shape[:-1] + (1,), emb.dtype)], axis=-1)
  return emb * valid[..., None]


def attention_mask(q_mask: jax.Array, k_mask: jax.Array, causal: bool) -> jax.Array:
  """(B,Lq), (B,Lk) -> (B,1,Lq,Lk) bool: padded keys masked; with `causal`, key j allowed for query
  i iff j < i + 1 + |Lk - Lq| (the reference's triu(-inf, 1 + |Lk - Lq|))."""
  lq, lk = q_mask.shape[1], k_mask.shape[1]
  allowed = jnp.broadcast_to(k_mask[:, None, None, :] > 0, (q_mask.shape[0], 1, lq, lk))
  if causal:
    i, j = jnp.arange(lq)[:, None], jnp.arange(lk)[None, :]
    allowed = allowed & (j < i + 1 + abs(lk - lq))
  return allowed


def last_valid(x: jax.Array, mask: jax.Array) -> jax.Array:
  """x (B,T,d) at each example's last valid frame (frame 0 when none). -> (B,d)."""
  idx = jnp.maximum(jnp.sum(mask > 0, axis=1) - 1, 0)
  return jnp.take_along_axis(x, idx[:, None, None], axis=1)[:, 0]


class MultiheadAttention(nnx.Module):
  """torch.nn.MultiheadAttention: in-projection (xavier, zero bias), scaled dot product over
  1/sqrt(d_head), dropout on the weights, out-projection (torch Linear init, zero bias)."""

  def __init__(self, dim: int, heads: int, dropout: float, *, rngs: nnx.Rngs):
    if dim % heads:
      raise ValueError(f"dim={dim} must be divisible by heads={heads}.")
    self.dim, self.heads = dim, heads
    zeros = nnx.initializers.zeros
    self.q = nnx.Linear(dim, dim, kernel_init=xavier, bias_init=zeros, rngs=rngs)
    self.k = nnx.Linear(dim, dim, kernel_init=xavier, bias_init=zeros, rngs=rngs)
    self.v = nnx.Linear(dim, dim, kernel_init=xavier, bias_init=zeros, rngs=rngs)
    self.out = nnx.Linear(dim, dim, kernel_init=torch_default_kernel, bias_init=zeros, rngs=rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, q: jax.Array, k: jax.Array, v: jax.Array, allowed: jax.Array) -> jax.Array:
    b, lq, _ = q.shape
    h, dh = self.heads, self.dim // self.heads
    split = lambda x: x.reshape(x.shape[0], x.shape[1], h, dh)
    scores = jnp.einsum("bihd,bjhd->bhij", split(self.q(q)), split(self.k(k))) / math.sqrt(dh)
    scores = jnp.where(allowed, scores, MASKED)
    attn = self.dropout(jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(q.dtype))
    return self.out(jnp.einsum("bhij,bjhd->bihd", attn, split(self.v(v))).reshape(b, lq, -1))


class EncoderLayer(nnx.Module):
  """Pre-LN transformer layer, self- or cross-attention, optional learned-alpha residuals."""

  def __init__(self, dim: int, heads: int, *, attn_dropout: float, relu_dropout: float,
               res_dropout: float, scalar: bool, rngs: nnx.Rngs):
    self.scalar = scalar
    if scalar:  # torch.rand(1).
      self.alpha = nnx.Param(jax.random.uniform(rngs.params(), (1,)))
    self.attn = MultiheadAttention(dim, heads, attn_dropout, rngs=rngs)
    self.norm0 = nnx.LayerNorm(dim, epsilon=1e-5, rngs=rngs)
    self.norm1 = nnx.LayerNorm(dim, epsilon=1e-5, rngs=rngs)
    zeros = nnx.initializers.zeros
    self.fc1 = nnx.Linear(dim, 4 * dim, kernel_init=xavier, bias_init=zeros, rngs=rngs)
    self.fc2 = nnx.Linear(4 * dim, dim, kernel_init=xavier, bias_init=zeros, rngs=rngs)
    self.relu_dropout = nnx.Dropout(relu_dropout, rngs=rngs)
    self.res_dropout1 = nnx.Dropout(res_dropout, rngs=rngs)
    self.res_dropout2 = nnx.Dropout(res_dropout, rngs=rngs)

  def _residual(self, x: jax.Array, fx: jax.Array) -> jax.Array:
    if self.scalar:
      a = self.alpha[...]
      return a * x + (1.0 - a) * fx
    return x + fx

  def __call__(self, x: jax.Array, allowed: jax.Array, k: jax.Array | None = None,
               v: jax.Array | None = None) -> jax.Array:
    y = self.norm0(x)
    if k is None:
      y = self.attn(y, y, y, allowed)
    else:
      y = self.attn(y, self.norm0(k), self.norm0(v), allowed)
    x = self._residual(x, self.res_dropout1(y))
    y = self.fc2(self.relu_dropout(jax.nn.relu(self.fc1(self.norm1(x)))))
    return self._residual(x, self.res_dropout2(y))


class TransformerEncoder(nnx.Module):
  """x * sqrt(d) (+ positions), embedding dropout, layers, final LayerNorm. Cross-modal when called
  with key / value sequences. (B,Lq,d) -> (B,Lq,d)."""

  def __init__(self, dim: int, heads: int, layers: int, *, attn_dropout: float,
               relu_dropout: float, res_dropout: float, embed_dropout: float, causal_mask: bool,
               scalar: bool = False, positions: bool = False, rngs: nnx.Rngs):
    self.dim, self.causal_mask, self.positions = dim, causal_mask, positions
    self.embed_dropout = nnx.Dropout(embed_dropout, rngs=rngs)
    self.layers = nnx.List([
        EncoderLayer(dim, heads, attn_dropout=attn_dropout, relu_dropout=relu_dropout,
                     res_dropout=res_dropout, scalar=scalar, rngs=rngs) for _ in range(layers)])
    self.norm = nnx.LayerNorm(dim, epsilon=1e-5, rngs=rngs)

  def _embed(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    y = math.sqrt(self.dim) * x
    if self.positions:
      y = y + fairseq_positions(mask, self.dim).astype(y.dtype)
    return self.embed_dropout(y)

  def __call__(self, x: jax.Array, mask: jax.Array, kv: jax.Array | None = None,
               kv_mask: jax.Array | None = None) -> jax.Array:
    h = self._embed(x, mask)
    if kv is None:
      allowed = attention_mask(mask, mask, self.causal_mask)
      for layer in self.layers:
        h = layer(h, allowed)
    else:  # The reference embeds key and value separately (own dropout draws).
      k, v = self._embed(kv, kv_mask), self._embed(kv, kv_mask)
      allowed = attention_mask(mask, kv_mask, self.causal_mask)
      for layer in self.layers:
        h = layer(h, allowed, k, v)
    return self.norm(h)


def _linear(cin: int, cout: int, rngs: nnx.Rngs) -> nnx.Linear:
  return nnx.Linear(cin, cout, kernel_init=torch_default_kernel, bias_init=torch_default_bias(cin),
                    rngs=rngs)


class AuxFormer(nnx.Module):
  """See the module docstring. Attributes: audio_frontend, visual_frontend, cross_audio
  (a <- v), cross_visual (v <- a), self_audio / self_visual (scalar), aux_audio / aux_visual (the
  recurrent auxiliary encoders), aux_fc1..3 + aux_out (shared auxiliary head), fc1, fc2, out."""

  def __init__(self, *, num_outputs: int, inputs: str = "features", audio_dim: int = 1024,
               visual_dim: int = 1408, dim: int = 50, heads: int = 10, layers: int = 5,
               attn_dropout: float = 0.1, relu_dropout: float = 0.1, res_dropout: float = 0.1,
               embed_dropout: float = 0.25, out_dropout: float = 0.2, causal_mask: bool = True,
               aux_hidden: tuple[int, int] = (512, 256), aux_repeats: int = 3,
               stem_channels: int = 32, rngs: nnx.Rngs):
    rngs = fast_dropout_rngs(rngs)
    front = dict(inputs=inputs, proj_dim=dim, stem_channels=stem_channels, rngs=rngs)
    self.audio_frontend = ModalityEncoder("audio", input_dim=audio_dim, **front)
    self.visual_frontend = ModalityEncoder(
        "visual", input_dim=visual_dim if inputs == "features" else 3, **front)
    kw = dict(relu_dropout=relu_dropout, res_dropout=res_dropout, embed_dropout=embed_dropout,
              causal_mask=causal_mask, rngs=rngs)
    self.cross_audio = TransformerEncoder(dim, heads, layers, attn_dropout=0.0, positions=True,
                                          **kw)
    self.cross_visual = TransformerEncoder(dim, heads, layers, attn_dropout=0.0, positions=True,
                                           **kw)
    self.self_audio = TransformerEncoder(dim, heads, layers, attn_dropout=attn_dropout,
                                         scalar=True, **kw)
    self.self_visual = TransformerEncoder(dim, heads, layers, attn_dropout=attn_dropout,
                                          scalar=True, **kw)
    self.aux_audio = TransformerEncoder(dim, heads, layers, attn_dropout=attn_dropout, **kw)
    self.aux_visual = TransformerEncoder(dim, heads, layers, attn_dropout=attn_dropout, **kw)
    h1, h2 = aux_hidden
    self.aux_fc1, self.aux_fc2 = _linear(dim, h1, rngs), _linear(h1, h2, rngs)
    self.aux_fc3, self.aux_out = _linear(h2, dim, rngs), _linear(dim, num_outputs, rngs)
    self.fc1, self.fc2 = _linear(2 * dim, 2 * dim, rngs), _linear(2 * dim, 2 * dim, rngs)
    self.out = _linear(2 * dim, num_outputs, rngs)
    self.drop1 = nnx.Dropout(out_dropout, rngs=rngs)
    self.drop2 = nnx.Dropout(out_dropout, rngs=rngs)
    self.aux_repeats = aux_repeats

  def encode(self, inputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Projected input sequences {'audio', 'visual'} (B,T,d) and their masks '<m>_mask' (B,T)."""
    out = {}
    for m, frontend in (("audio", self.audio_frontend), ("visual", self.visual_frontend)):
      out[m], out[f"{m}_mask"] = frontend(inputs)
    return out

  def _aux_head(self, g: jax.Array) -> jax.Array:
    y = self.aux_fc3(self.drop1(jax.nn.relu(self.aux_fc2(self.drop1(jax.nn.relu(
        self.aux_fc1(g)))))))
    return self.aux_out(y + g)

  def fuse(self, features: dict[str, jax.Array]) -> ModelOutput:
    """The main and auxiliary networks on the (masked) projected sequences of `encode`."""
    a, v = features["audio"], features["visual"]
    ma, mv = features["audio_mask"], features["visual_mask"]
    h_a = last_valid(self.self_audio(self.cross_audio(a, ma, v, mv), ma), ma)
    h_v = last_valid(self.self_visual(self.cross_visual(v, mv, a, ma), mv), mv)
    av = jnp.concatenate([h_a, h_v], axis=-1)
    main = self.out(self.fc2(self.drop2(jax.nn.relu(self.fc1(av)))) + av)
    aux = {}
    for m, x, mask, enc in (("audio", a, ma, self.aux_audio), ("visual", v, mv, self.aux_visual)):
      h = x
      for _ in range(self.aux_repeats):  # One encoder, applied recurrently.
        h = enc(h, mask)
      aux[m] = self._aux_head(last_valid(h, mask))
    return ModelOutput(logits=(main + aux["audio"] + aux["visual"]) / 3.0,
                       modality_logits=aux, features={"audio": h_a, "visual": h_v},
                       joint_logits=main)

  def __call__(self, inputs: dict[str, jax.Array],
               modality_mask: jax.Array | None = None) -> ModelOutput:
    """Front ends, optional modality removal (scales a modality's whole sequence), networks."""
    return self.fuse(apply_modality_mask(self.encode(inputs), modality_mask))


@register_model("auxformer", lambda c: {"task_outputs", "modality_logits", "encode_fuse",
                                          "joint_logits"})
def auxformer(config: ml_collections.ConfigDict, num_classes: int, overrides: dict[str, Any],
              rngs: nnx.Rngs) -> AuxFormer:
  """AuxFormer from `config.model.auxformer` (keys: the AuxFormer constructor's arguments)."""
  return AuxFormer(num_outputs=num_classes,
                   **{**section_kwargs(config, "auxformer"), **overrides}, rngs=rngs)
