"""VAVL (Goncalves et al., 2023): per-modality Conformers, a shared Conformer, late concat fusion.

Per modality ('Acoustic' / 'Visual' in net/avmodel.py): a front end to a (B, T, 50) sequence, then a
3-block Conformer (50 -> 512). One `shared` module for both modalities: a 2-block Conformer
(512 -> 512), its input added back, LayerNorm, mean over the valid frames -> rep (B, 512). Heads
(Linear 512 -> 512, ReLU, Dropout 0.2, Linear 512 -> 256, Linear 256 -> C): `head_audio`,
`head_visual` (uni-modal predictions), `recon_audio`, `recon_visual` (reconstruct the time-mean
of the modality's input features), and `fusion` on concat(rep_a, rep_v) (1024 -> 512 -> 256 -> C).

Inputs (`inputs=`):
  'features': precomputed sequences 'audio' (B, T_a, audio_dim = 1024) and 'visual'
    (B, T_v, visual_dim = 1408) with 'audio_mask' / 'visual_mask' (B, T) (1 = frame, 0 = padding;
    all valid when absent); front end: Conv1d k = 1 without bias (= Linear) to proj_dim.
    Reconstruction targets: the masked time-mean of these features.
  'raw': nothing pretrained: 'audio' (B, F = audio_dim, T, 1) spectrograms through the Conformer's
    Conv2d subsampling stem (3x3 stride 2, ReLU, twice; time / 4) and 'visual' (B, T, S, S, 3)
    frames through a per-frame conv stem (3x3 stride 2 + ReLU, three times, spatial mean); then
    the same projection. Targets: the time-mean of the spectrogram frames (B, F) and of the
    frames pooled to a visual_grid x visual_grid x 3 grid, standardised per example.

`__call__(inputs, modality_mask)` multiplies rep_a / rep_v by the (B, 2) mask before every head
(0 removes a modality). Uni-modal predictions are the heads `head_audio` / `head_visual` of the same
model (VAVL's audio-only / visual-only inference).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from avjax.models import register_model, section_kwargs
from avjax.models.conformer import (Conformer, layer_norm, masked_mean, torch_default_bias,
                                    torch_default_kernel, torch_linear)
from avjax.models.outputs import MODALITIES, ModelOutput, apply_modality_mask
from avjax.ops import fast_dropout_rngs

INPUT_KINDS = ("features", "raw")


def _conv(cin: int, cout: int, padding: str, rngs: nnx.Rngs) -> nnx.Conv:
  return nnx.Conv(cin, cout, (3, 3), strides=(2, 2), padding=padding,
                  kernel_init=torch_default_kernel, bias_init=torch_default_bias(cin * 9),
                  rngs=rngs)


def _min_pool_valid(mask: jax.Array) -> jax.Array:
  """A (B,T) mask through one 3-wide stride-2 VALID window: valid iff the whole window is."""
  return jax.lax.reduce_window(mask, jnp.inf, jax.lax.min, (1, 3), (1, 2), "VALID")


class SpectrogramStem(nnx.Module):
  """Conv2d subsampling (the Conformer's front end): (B,F,T,1), mask (B,T) -> (B,T',C F'), (B,T')
  with T' = ((T-1)//2 - 1)//2, F' likewise."""

  def __init__(self, bins: int, channels: int, *, rngs: nnx.Rngs):
    if bins < 7:
      raise ValueError(f"The spectrogram stem needs at least 7 frequency bins, got {bins}.")
    self.conv1 = _conv(1, channels, "VALID", rngs)
    self.conv2 = _conv(channels, channels, "VALID", rngs)
    self.out_features = channels * (((bins - 1) // 2 - 1) // 2)

  def __call__(self, x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    y = jnp.transpose(x, (0, 2, 1, 3))  # (B, T, F, 1): time first, as the Conformer stem.
    y = jax.nn.relu(self.conv2(jax.nn.relu(self.conv1(y))))
    b, t, f, c = y.shape
    return y.reshape(b, t, f * c), _min_pool_valid(_min_pool_valid(mask))


class FrameStem(nnx.Module):
  """Per-frame conv stem: three 3x3 stride-2 convs + ReLU, spatial mean. (B,T,S,S,3) -> (B,T,C)."""

  def __init__(self, channels: int, *, in_channels: int = 3, rngs: nnx.Rngs):
    self.convs = nnx.List([_conv(in_channels if i == 0 else channels, channels, "SAME", rngs)
                           for i in range(3)])
    self.out_features = channels

  def __call__(self, x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    b, t = x.shape[:2]
    y = x.reshape((b * t,) + x.shape[2:])
    for conv in self.convs:
      y = jax.nn.relu(conv(y))
    return jnp.mean(y, axis=(1, 2)).reshape(b, t, -1), mask


class MLP(nnx.Module):
  """VAVL's head: Linear(in, h1), ReLU, Dropout, Linear(h1, h2), Linear(h2, out) (torch init)."""

  def __init__(self, in_features: int, hidden: Sequence[int], out_features: int, dropout: float, *,
               rngs: nnx.Rngs):
    h1, h2 = hidden
    self.fc1 = torch_linear(in_features, h1, rngs=rngs)
    self.fc2 = torch_linear(h1, h2, rngs=rngs)
    self.out = torch_linear(h2, out_features, rngs=rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.out(self.fc2(self.dropout(jax.nn.relu(self.fc1(x)))))


def sequence_mask(inputs: dict[str, jax.Array], modality: str, length: int) -> jax.Array:
  """inputs['<modality>_mask'] (B,T) as float, or all ones."""
  mask = inputs.get(f"{modality}_mask")
  if mask is None:
    return jnp.ones((inputs[modality].shape[0], length), jnp.float32)
  return mask.astype(jnp.float32)


class ModalityEncoder(nnx.Module):
  """Front end (features: Linear without bias; raw: conv stem + Linear) and a Conformer.

  Also defines the modality's reconstruction target. Used by VAVL and AuxFormer (conformer_blocks
  = 0: front end only, output (B,T',proj_dim)).
  """

  def __init__(self, modality: str, *, inputs: str, input_dim: int, proj_dim: int, dim: int = 0,
               conformer_blocks: int = 0, stem_channels: int = 32, visual_grid: int = 4,
               conformer_kwargs: dict[str, Any] | None = None, rngs: nnx.Rngs):
    if inputs not in INPUT_KINDS:
      raise ValueError(f"inputs={inputs!r} is not one of {INPUT_KINDS}.")
    self.modality, self.inputs, self.input_dim = modality, inputs, input_dim
    self.visual_grid = visual_grid
    if inputs == "features":
      self.stem, width = None, input_dim
      self.target_dim = input_dim
    elif modality == "audio":
      self.stem = SpectrogramStem(input_dim, stem_channels, rngs=rngs)
      width, self.target_dim = self.stem.out_features, input_dim
    else:
      self.stem = FrameStem(stem_channels, in_channels=input_dim, rngs=rngs)
      width, self.target_dim = stem_channels, input_dim * visual_grid ** 2
    # VAVL / AuxFormer skip the 1-D conv when the features already have proj_dim channels.
    self.projection = (None if width == proj_dim else
                       torch_linear(width, proj_dim, use_bias=False, rngs=rngs))
    self.conformer = (Conformer(proj_dim, dim, conformer_blocks, rngs=rngs,
                                **(conformer_kwargs or {})) if conformer_blocks else None)

  def _check(self, x: jax.Array) -> None:
    m, d = self.modality, self.input_dim
    if self.inputs == "features":
      ok, want = x.ndim == 3 and x.shape[-1] == d, f"(B, T, {d}) feature sequences"
    elif m == "audio":
      ok, want = x.ndim == 4 and x.shape[1] == d, f"(B, {d}, T, 1) spectrograms"
    else:
      ok, want = x.ndim == 5 and x.shape[-1] == d, f"(B, T, S, S, {d}) frames"
    if not ok:
      raise ValueError(f"{m} input has shape {x.shape} but the model was built for {want} "
                       f"(inputs={self.inputs!r}); set the model section's `inputs` and "
                       f"`{m}_dim` to match the dataset's records.")

  def __call__(self, inputs: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """-> (sequence (B,T',dim or proj_dim), mask (B,T'))."""
    x = inputs[self.modality]
    self._check(x)
    length = x.shape[2] if self.stem is not None and self.modality == "audio" else x.shape[1]
    mask = sequence_mask(inputs, self.modality, length)
    if self.stem is not None:
      x, mask = self.stem(x, mask)
    if self.projection is not None:
      x = self.projection(x)
    if self.conformer is not None:
      x = self.conformer(x, mask)
    return x, mask

  def target(self, inputs: dict[str, jax.Array]) -> jax.Array:
    """The reconstruction target (B, target_dim): the masked time-mean of the input features; raw
    inputs: of the spectrogram frames / pooled frames, standardised per example (zero mean, unit
    variance over its target_dim values), so the MSE starts near 1 whatever the input scale
    (log-mel values reach -14; VAVL's own targets are wav2vec2 features)."""
    x = inputs[self.modality]
    if self.inputs == "features":
      return masked_mean(x, sequence_mask(inputs, self.modality, x.shape[1]))
    if self.modality == "audio":  # (B,F,T,1) -> frames (B,T,F).
      x = jnp.transpose(x[..., 0], (0, 2, 1))
      mean = masked_mean(x, sequence_mask(inputs, "audio", x.shape[1]))
    else:
      b, t, s1, s2, c = x.shape
      g = self.visual_grid
      if s1 % g or s2 % g:
        raise ValueError(f"Frames of {s1}x{s2} do not pool to a {g}x{g} grid; choose a "
                         "visual_grid that divides the frame size.")
      pooled = x.reshape(b, t, g, s1 // g, g, s2 // g, c).mean(axis=(3, 5)).reshape(b, t, -1)
      mean = masked_mean(pooled, sequence_mask(inputs, "visual", t))
    centred = mean - jnp.mean(mean, axis=-1, keepdims=True)
    return centred / (jnp.std(mean, axis=-1, keepdims=True) + 1e-5)


class SharedEncoder(nnx.Module):
  """VAVL's `Shared`: Conformer(d -> d), + input, LayerNorm, masked mean over time -> (B, d)."""

  def __init__(self, dim: int, blocks: int, *, conformer_kwargs: dict[str, Any], rngs: nnx.Rngs):
    self.conformer = Conformer(dim, dim, blocks, rngs=rngs, **conformer_kwargs)
    self.norm = layer_norm(dim, rngs)

  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    return masked_mean(self.norm(self.conformer(x, mask) + x), mask)


class VAVL(nnx.Module):
  """See the module docstring. Parameter groups (what the VAVL method steps): encoder/<m>,
  shared, head/<m>, recon/<m>, fusion."""

  def __init__(self, *, num_outputs: int, inputs: str = "features", audio_dim: int = 1024,
               visual_dim: int = 1408, proj_dim: int = 50, dim: int = 512, heads: int = 8,
               audio_blocks: int = 3, visual_blocks: int = 3, shared_blocks: int = 2,
               ff_mult: int = 4, kernel_size: int = 31, dropout: float = 0.1,
               head_hidden: Sequence[int] = (512, 256), head_dropout: float = 0.2,
               stem_channels: int = 32, visual_grid: int = 4, rel_pos: str = "transformer_xl",
               remat: bool = False, rngs: nnx.Rngs):
    rngs = fast_dropout_rngs(rngs)
    ckw = dict(heads=heads, ff_mult=ff_mult, kernel_size=kernel_size, dropout=dropout,
               rel_pos=rel_pos, remat=remat)
    common = dict(inputs=inputs, proj_dim=proj_dim, dim=dim, stem_channels=stem_channels,
                  visual_grid=visual_grid, conformer_kwargs=ckw, rngs=rngs)
    self.audio_encoder = ModalityEncoder("audio", input_dim=audio_dim,
                                         conformer_blocks=audio_blocks, **common)
    self.visual_encoder = ModalityEncoder(
        "visual", input_dim=visual_dim if inputs == "features" else 3,
        conformer_blocks=visual_blocks, **common)
    self.shared = SharedEncoder(dim, shared_blocks, conformer_kwargs=ckw, rngs=rngs)
    head_hidden = tuple(head_hidden)
    self.head_audio = MLP(dim, head_hidden, num_outputs, head_dropout, rngs=rngs)
    self.head_visual = MLP(dim, head_hidden, num_outputs, head_dropout, rngs=rngs)
    self.recon_audio = MLP(dim, head_hidden, self.audio_encoder.target_dim, head_dropout, rngs=rngs)
    self.recon_visual = MLP(dim, head_hidden, self.visual_encoder.target_dim, head_dropout,
                            rngs=rngs)
    self.fusion = MLP(2 * dim, head_hidden, num_outputs, head_dropout, rngs=rngs)
    self.num_outputs = num_outputs

  def param_groups(self) -> dict[str, tuple[str, ...]]:
    groups = {"shared": ("shared",), "fusion": ("fusion",)}
    for m in MODALITIES:
      groups.update({f"encoder/{m}": (f"{m}_encoder",), f"head/{m}": (f"head_{m}",),
                     f"recon/{m}": (f"recon_{m}",)})
    return groups

  def encoder(self, modality: str) -> ModalityEncoder:
    return self.audio_encoder if modality == "audio" else self.visual_encoder

  def represent(self, inputs: dict[str, jax.Array], modality: str) -> jax.Array:
    """rep (B, dim) = Shared(Encoder_m(inputs))."""
    return self.shared(*self.encoder(modality)(inputs))

  def unimodal(self, inputs: dict[str, jax.Array], modality: str) -> dict[str, jax.Array]:
    """One modality's branch (VAVL's 'acoustic' / 'visual' mode): {'logits' (B,C), 'recon'
    (B,R), 'target' (B,R) (the reconstruction target, no gradient), 'features' (B,dim)}."""
    rep = self.represent(inputs, modality)
    head = self.head_audio if modality == "audio" else self.head_visual
    recon = self.recon_audio if modality == "audio" else self.recon_visual
    target = jax.lax.stop_gradient(self.encoder(modality).target(inputs))
    return {"logits": head(rep), "recon": recon(rep), "target": target, "features": rep}

  def encode(self, inputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """{'audio': rep_a (B,dim), 'visual': rep_v (B,dim)}."""
    return {m: self.represent(inputs, m) for m in MODALITIES}

  def fuse(self, features: dict[str, jax.Array]) -> ModelOutput:
    """Fusion head on concat(rep_a, rep_v); uni-modal logits from head_audio / head_visual."""
    a, v = features["audio"], features["visual"]
    return ModelOutput(
        logits=self.fusion(jnp.concatenate([a, v], axis=-1)),
        modality_logits={"audio": self.head_audio(a), "visual": self.head_visual(v)},
        features={"audio": a, "visual": v})

  def __call__(self, inputs: dict[str, jax.Array],
               modality_mask: jax.Array | None = None) -> ModelOutput:
    """Encode, scale rep_m by modality_mask[:, m] (B, 2) when given, fuse."""
    return self.fuse(apply_modality_mask(self.encode(inputs), modality_mask))


@register_model("vavl", lambda c: {"task_outputs", "modality_logits", "encode_fuse",
                                     "unimodal_branches"},
                remat_key="model.vavl.remat")
def vavl(config: ml_collections.ConfigDict, num_classes: int, overrides: dict[str, Any],
         rngs: nnx.Rngs) -> VAVL:
  """VAVL from `config.model.vavl` (keys: the VAVL constructor's arguments)."""
  return VAVL(num_outputs=num_classes, **{**section_kwargs(config, "vavl"), **overrides},
              rngs=rngs)
