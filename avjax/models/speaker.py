"""MMCosine's VoxCeleb model: ResNetSE34V2 on log-mel spectrograms of the raw waveform and a
ResNet-34 on face frames, fused by a late-fusion head (avjax.models.fusion), cosine head included.

Audio (MMCosine models/vox/ResNetSE34V2_audio.py, from clovaai/voxceleb_trainer), on (B, N) float
waveforms at 16 kHz:
  front end (float32, no gradient to the wave): pre-emphasis y[n] = x[n] - 0.97 x[n-1] (x[-1] =
    x[1], reflect); power STFT n_fft 512, periodic Hamming window of 400 centred in 512, hop 160,
    centred frames with reflect padding (T = 1 + N // 160); 40 HTK mel bins 0-8000 Hz without
    normalisation; log(S + 1e-6); each bin normalised over time (instance norm, eps 1e-5).
  trunk: "thin ResNet-34" with squeeze-excitation: conv3x3 (bias) -> ReLU -> BN stem, stages of
    [3, 4, 6, 3] SE blocks of widths [32, 64, 128, 256] (strides 1, 2, 2, 2), each block conv ->
    ReLU -> BN, conv -> BN, SE (reduction 8), + shortcut, ReLU. (B, 40, T, 1) -> (B, 5, T', 256).
  pooling: self-attentive pooling over time of the (channel, frequency) rows (1280 of them): w =
    softmax_t(Conv1d(128 -> 1280)(BN(ReLU(Conv1d(1280 -> 128)(x))))), e = sum_t x w; then
    Linear(1280 -> 512).
Faces (MMCosine models/vox/backbone_visual.py): torchvision ResNet-34 per frame, mean over frames
and space: (B, T, H, W, 3) -> (B, 512).

Parameter groups: 'encoder/audio', 'encoder/visual', 'fusion'. Init: convs of the trunks kaiming
normal (fan_out); the audio trunk's BN scale 1, the face ResNet's per `init`; the stem conv bias,
the attention convs, their BN and the output Linear PyTorch's defaults.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from avjax.models import fusion_kwargs, register_model, section_kwargs
from avjax.models.fusion import FUSIONS
from avjax.models.outputs import MODALITIES, ModelOutput, apply_modality_mask
from avjax.models.resnet import BN_EPSILON, BN_MOMENTUM, VisualEncoder, conv_kernel_init

SAMPLE_RATE = 16000
N_FFT, WIN_LENGTH, HOP_LENGTH = 512, 400, 160
PRE_EMPHASIS = 0.97


def hz_to_mel(f: np.ndarray) -> np.ndarray:
  return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def mel_to_hz(m: np.ndarray) -> np.ndarray:
  return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_mels: int = 40, n_freqs: int = N_FFT // 2 + 1,
                   sample_rate: int = SAMPLE_RATE, f_max: float | None = None) -> np.ndarray:
  """(n_freqs, n_mels) triangular HTK mel filters from 0 Hz to f_max (sample_rate / 2), peak 1, no
  area normalisation (torchaudio melscale_fbanks(norm=None, mel_scale='htk'))."""
  f_max = sample_rate / 2 if f_max is None else f_max
  freqs = np.linspace(0, sample_rate // 2, n_freqs)
  points = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(f_max), n_mels + 2))
  widths = np.diff(points)
  slopes = points[None, :] - freqs[:, None]
  down = -slopes[:, :-2] / widths[:-1]
  up = slopes[:, 2:] / widths[1:]
  return np.maximum(0.0, np.minimum(down, up)).astype(np.float32)


def stft_window() -> np.ndarray:
  """(N_FFT,) periodic Hamming window of WIN_LENGTH, zero-padded on both sides to N_FFT."""
  n = np.arange(WIN_LENGTH)
  window = 0.54 - 0.46 * np.cos(2 * np.pi * n / WIN_LENGTH)
  left = (N_FFT - WIN_LENGTH) // 2
  return np.pad(window, (left, N_FFT - WIN_LENGTH - left)).astype(np.float32)


def log_mel_instance_norm(wave: jax.Array, filterbank: jax.Array) -> jax.Array:
  """(B, N) waveform -> (B, n_mels, 1 + N // HOP_LENGTH) normalised log-mel (see module)."""
  x = wave.astype(jnp.float32)
  x = jnp.concatenate([x[:, 1:2], x], axis=1)  # Reflect padding by one sample on the left.
  x = x[:, 1:] - PRE_EMPHASIS * x[:, :-1]
  half = N_FFT // 2
  x = jnp.pad(x, ((0, 0), (half, half)), mode="reflect")
  num_frames = 1 + wave.shape[1] // HOP_LENGTH
  starts = np.arange(num_frames)[:, None] * HOP_LENGTH + np.arange(N_FFT)[None, :]
  frames = x[:, starts] * jnp.asarray(stft_window())  # (B, T, N_FFT)
  power = jnp.square(jnp.abs(jnp.fft.rfft(frames, axis=-1)))  # (B, T, N_FFT // 2 + 1)
  mel = jnp.log(power @ filterbank + 1e-6)  # (B, T, n_mels)
  mean = jnp.mean(mel, axis=1, keepdims=True)
  var = jnp.var(mel, axis=1, keepdims=True)
  return jnp.swapaxes((mel - mean) * jax.lax.rsqrt(var + 1e-5), 1, 2)


def _torch_default_uniform(fan_in: int) -> nnx.Initializer:
  """PyTorch's default bias init (and its kaiming_uniform(a=sqrt(5)) weight bound): U(+-1/sqrt)."""
  bound = 1.0 / float(fan_in) ** 0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def _conv3x3(in_ch: int, out_ch: int, stride: int, *, rngs: nnx.Rngs, bias: bool = False):
  return nnx.Conv(in_ch, out_ch, (3, 3), strides=(stride, stride), padding=((1, 1), (1, 1)),
                  use_bias=bias, kernel_init=conv_kernel_init,
                  bias_init=_torch_default_uniform(9 * in_ch), rngs=rngs)


def _bn(channels: int, *, rngs: nnx.Rngs) -> nnx.BatchNorm:
  return nnx.BatchNorm(channels, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, rngs=rngs)


def _linear(in_features: int, out_features: int, *, rngs: nnx.Rngs) -> nnx.Linear:
  """A PyTorch-default Linear (also a kernel-1 Conv1d): kernel and bias U(+-1/sqrt(fan_in))."""
  init = _torch_default_uniform(in_features)
  return nnx.Linear(in_features, out_features, kernel_init=init, bias_init=init, rngs=rngs)


class SEBasicBlock(nnx.Module):
  """conv3x3 -> ReLU -> BN, conv3x3 -> BN, squeeze-excitation, + shortcut, ReLU (NHWC)."""

  def __init__(self, in_ch: int, out_ch: int, stride: int, reduction: int = 8, *,
               rngs: nnx.Rngs):
    self.conv1 = _conv3x3(in_ch, out_ch, stride, rngs=rngs)
    self.bn1 = _bn(out_ch, rngs=rngs)
    self.conv2 = _conv3x3(out_ch, out_ch, 1, rngs=rngs)
    self.bn2 = _bn(out_ch, rngs=rngs)
    self.se_down = _linear(out_ch, max(out_ch // reduction, 1), rngs=rngs)
    self.se_up = _linear(max(out_ch // reduction, 1), out_ch, rngs=rngs)
    if stride != 1 or in_ch != out_ch:
      self.down_conv = nnx.Conv(in_ch, out_ch, (1, 1), strides=(stride, stride), use_bias=False,
                                kernel_init=conv_kernel_init, rngs=rngs)
      self.down_bn = _bn(out_ch, rngs=rngs)
    else:
      self.down_conv = self.down_bn = None

  def __call__(self, x: jax.Array) -> jax.Array:
    shortcut = x if self.down_conv is None else self.down_bn(self.down_conv(x))
    y = self.bn1(nnx.relu(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    gate = nnx.sigmoid(self.se_up(nnx.relu(self.se_down(jnp.mean(y, axis=(1, 2))))))
    return nnx.relu(y * gate[:, None, None, :] + shortcut)


class ResNetSE34V2(nnx.Module):
  """Speaker encoder on (B, N) 16 kHz waveforms -> (B, embedding_dim) (see the module docstring)."""

  def __init__(self, *, widths: Sequence[int] = (32, 64, 128, 256),
               blocks: Sequence[int] = (3, 4, 6, 3), n_mels: int = 40,
               attention_dim: int = 128, embedding_dim: int = 512, rngs: nnx.Rngs):
    widths, blocks = tuple(int(w) for w in widths), tuple(int(b) for b in blocks)
    if len(widths) != 4 or len(blocks) != 4 or n_mels % 8:
      raise ValueError(f"ResNetSE34V2 needs 4 widths and 4 block counts and n_mels divisible by "
                       f"8; got widths {widths}, blocks {blocks}, n_mels {n_mels}.")
    self.filterbank = nnx.Variable(jnp.asarray(mel_filterbank(n_mels)))  # Constant, not a Param.
    self.stem = _conv3x3(1, widths[0], 1, rngs=rngs, bias=True)
    self.stem_bn = _bn(widths[0], rngs=rngs)
    stages, in_ch = [], widths[0]
    for i, (width, count) in enumerate(zip(widths, blocks)):
      stride = 1 if i == 0 else 2
      stages.append(nnx.List([SEBasicBlock(in_ch if j == 0 else width, width,
                                           stride if j == 0 else 1, rngs=rngs)
                              for j in range(count)]))
      in_ch = width
    self.layers = nnx.List(stages)
    rows = widths[-1] * (n_mels // 8)
    self.attention_in = _linear(rows, attention_dim, rngs=rngs)
    self.attention_bn = nnx.BatchNorm(attention_dim, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                      rngs=rngs)
    self.attention_out = _linear(attention_dim, rows, rngs=rngs)
    self.output = _linear(rows, embedding_dim, rngs=rngs)
    self.out_features = embedding_dim

  def __call__(self, wave: jax.Array) -> jax.Array:
    if wave.ndim == 3:  # (B, N, 1) from the input pipeline's channel axis.
      wave = wave[..., 0]
    mel = jax.lax.stop_gradient(log_mel_instance_norm(wave, self.filterbank.get_value()))
    x = self.stem_bn(nnx.relu(self.stem(mel[..., None].astype(self.stem.kernel.dtype))))
    for stage in self.layers:
      for block in stage:
        x = block(x)
    b, f, t, c = x.shape
    x = jnp.transpose(x, (0, 2, 3, 1)).reshape(b, t, c * f)  # Rows in (channel, frequency) order.
    weights = self.attention_out(self.attention_bn(nnx.relu(self.attention_in(x))))
    weights = jax.nn.softmax(weights.astype(jnp.float32), axis=1).astype(x.dtype)  # Over time.
    return self.output(jnp.sum(x * weights, axis=1))


class AVSpeakerClassifier(nnx.Module):
  """ResNetSE34V2 (audio waveform) and ResNet-34 (face frames), a registered fusion head.

  Inputs: {'audio': (B, N) or (B, N, 1) 16 kHz waveform, 'visual': (B, T, H, W, 3) faces}.
  """

  def __init__(self, *, num_classes: int, fusion: str = "concat",
               fusion_kwargs: dict[str, Any] | None = None,
               audio_widths: Sequence[int] = (32, 64, 128, 256),
               face_widths: Sequence[int] = (64, 128, 256, 512),
               attention_dim: int = 128, init: str = "mmcosine", rngs: nnx.Rngs):
    self.visual_encoder = VisualEncoder(3, widths=face_widths, blocks=(3, 4, 6, 3), init=init,
                                        rngs=rngs)
    dim = self.visual_encoder.out_features
    self.audio_encoder = ResNetSE34V2(widths=audio_widths, attention_dim=attention_dim,
                                      embedding_dim=dim, rngs=rngs)
    self.fusion = FUSIONS.get(fusion)(dim, num_classes, init=init, rngs=rngs,
                                      **(fusion_kwargs or {}))

  def param_groups(self) -> dict[str, tuple[str, ...]]:
    return {"encoder/audio": ("audio_encoder",), "encoder/visual": ("visual_encoder",),
            "fusion": ("fusion",)}

  def encode(self, inputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
    return {"audio": self.audio_encoder(inputs["audio"]),
            "visual": self.visual_encoder(inputs["visual"])}

  def fuse(self, features: dict[str, jax.Array]) -> ModelOutput:
    out = self.fusion(features)
    return ModelOutput(logits=out.logits, modality_logits=dict(out.modality_logits),
                       features={m: features[m] for m in MODALITIES},
                       head_inputs={m: out.head_inputs[m] for m in MODALITIES})

  def __call__(self, inputs: dict[str, jax.Array],
               modality_mask: jax.Array | None = None) -> ModelOutput:
    return self.fuse(apply_modality_mask(self.encode(inputs), modality_mask))


def _capabilities(config: ml_collections.ConfigDict) -> set[str]:
  caps = {"task_outputs", "modality_logits", "encode_fuse", "head_inputs"}
  formed = config.model.fusion in ("film", "gated")
  if not formed or config.model.fusion_kwargs.get("form", "ogm_ge") == "mmcosine":
    caps.add("cosine_head")
  return caps


@register_model("av_resnetse", _capabilities, hints={
    "cosine_head": "fusions 'film' / 'gated' have a per-modality slice of the final weight only "
                   "in their symmetric form: set config.model.fusion_kwargs.form='mmcosine'"})
def av_resnetse(config: ml_collections.ConfigDict, num_classes: int, overrides: dict[str, Any],
                rngs: nnx.Rngs) -> AVSpeakerClassifier:
  """MMCosine's VoxCeleb model; settings from `config.model.av_resnetse` (audio_widths,
  face_widths, attention_dim, init), the fusion from config.model.fusion."""
  m = config.model
  return AVSpeakerClassifier(num_classes=num_classes, fusion=m.fusion,
                             fusion_kwargs={**fusion_kwargs(m), **overrides},
                             **section_kwargs(config, "av_resnetse"), rngs=rngs)
