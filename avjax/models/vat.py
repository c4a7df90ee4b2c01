"""VAT, the Video-Audio Transformer (Ding et al., MER 2023 / MRAC 2023), in the ALBEF formulation.

Three encoders (all pre-LN transformers of one width, avjax/models/transformer.py):
  visual_encoder  ViT over the frames of a clip: each (H, W) frame cut into p x p patches, the T x P
                  patch tokens of a clip are one sequence (frames as tokens over time) with a [CLS]
                  token; positions = spatial embedding (shared by the frames) + temporal embedding.
  audio_encoder   transformer over (pf, pt) patches of the spectrogram, with [CLS] and positions.
  fusion_encoder  self-attention over the audio tokens, cross-attention to the frame tokens (audio is
                  the query, the place of BERT's text layers in ALBEF), MLP.

Two registered models share these submodules (same parameter paths, so `config.init_from` carries a
pre-training checkpoint into fine-tuning):
  'vat'             pre-training: projections g_a, g_v to `embed_dim`, the matching head (width -> 2) on
                    the fused [CLS], and the learnable temperature `temp` (used by method vat_pretrain).
  'vat_classifier'  fine-tuning: ALBEF's classifier head (Linear, ReLU, Linear) on the fused [CLS]
                    giving C class logits and / or R regression outputs (sigmoid, scaled to a target
                    range), plus one linear head per modality on that encoder's [CLS].

Sizes come from `config.model.vat` (see `model_section`): a preset ('small': trains on a CPU;
'albef': 12 / 6 / 6 layers, 768 wide, 12 heads, projection 256 as ALBEF's ViT-B/16 + BERT-base) with
any size overridden; the frame count and size come from `config.input`, the spectrogram size from
`config.model.vat.audio_size`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from avjax.models import register_model, section_kwargs
from avjax.models.fusion import l2_normalize
from avjax.models.outputs import MODALITIES, ModelOutput, apply_modality_mask
from avjax.models.transformer import CrossEncoder, Encoder, linear, weight_init
from avjax.ops import ATTENTION_IMPLEMENTATIONS
from avjax.registry import ConfigError

PRESETS = {
    # A CPU-sized default (AcFormer, by the same author, uses embed_dim 128).
    "small": dict(width=128, heads=4, mlp_dim=512, visual_layers=4, audio_layers=2,
                  fusion_layers=2, embed_dim=128),
    # ALBEF: ViT-B/16 (12 layers, 768 wide, 12 heads, MLP 3072); BERT-base split at layer 6 into
    # 6 text (here audio) and 6 fusion layers; projections to 256 (vat.md).
    "albef": dict(width=768, heads=12, mlp_dim=3072, visual_layers=12, audio_layers=6,
                  fusion_layers=6, embed_dim=256),
}
SIZE_KEYS = tuple(PRESETS["small"])
SECTION = "vat"
# PyTorch's default Conv2d weight init (kaiming_uniform, a = sqrt(5)): U(+-1/sqrt(fan_in)).
patch_init = nnx.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


@dataclasses.dataclass(frozen=True)
class VATSettings:
  """Resolved sizes of a VAT model (see `resolve_settings`)."""

  width: int
  heads: int
  mlp_dim: int
  visual_layers: int
  audio_layers: int
  fusion_layers: int
  embed_dim: int
  patch_size: int
  audio_patch_size: tuple[int, int]
  audio_size: tuple[int, int]
  num_frames: int
  image_size: int
  visual_channels: int = 3
  audio_channels: int = 1
  attention: str = "auto"
  remat: bool = False


def model_section(preset: str = "small", **values: Any) -> ml_collections.ConfigDict:
  """`config.model.vat` for a config file: every key present (so the command line can set it).

  Sizes left at 0 take the preset's value. patch_size: frame patch side; audio_patch_size: (pf, pt);
  audio_size: the model's spectrogram (F, T) as the dataset stores it; attention: 'auto' (cuDNN fused
  attention on GPUs in bfloat16, else XLA), 'xla' or 'cudnn'; remat: recompute each layer in the
  backward pass (less memory for long frame sequences).
  """
  section = dict(preset=preset, **{k: 0 for k in SIZE_KEYS}, patch_size=16,
                 audio_patch_size=(16, 16), audio_size=(64, 64), attention="auto", remat=False)
  unknown = set(values) - set(section)
  if unknown:
    raise ValueError(f"Unknown VAT model settings {sorted(unknown)}; known: {sorted(section)}.")
  section.update(values)
  return ml_collections.ConfigDict(section)


def resolve_settings(config: ml_collections.ConfigDict) -> VATSettings:
  """The model sizes of `config` (preset + overrides + input sizes); ConfigError if impossible."""
  kwargs = section_kwargs(config, SECTION)
  if not kwargs:
    raise ConfigError("VAT models need a config.model.vat section; add "
                      "`c.model.vat = avjax.models.vat.model_section('small')` to the config file.")
  preset = kwargs.pop("preset", "small")
  if preset not in PRESETS:
    raise ConfigError(f"config.model.vat.preset={preset!r} is not one of {sorted(PRESETS)}.")
  known = set(SIZE_KEYS) | {"patch_size", "audio_patch_size", "audio_size", "attention", "remat"}
  unknown = set(kwargs) - known
  if unknown:
    raise ConfigError(f"Unknown config.model.vat key(s) {sorted(unknown)}; known: "
                      f"{sorted(known | {'preset'})}.")
  sizes = {k: int(kwargs.get(k) or PRESETS[preset][k]) for k in SIZE_KEYS}
  inp = config.input
  s = VATSettings(**sizes, patch_size=int(kwargs.get("patch_size", 16)),
                  audio_patch_size=tuple(int(x) for x in kwargs.get("audio_patch_size", (16, 16))),
                  audio_size=tuple(int(x) for x in kwargs.get("audio_size", (64, 64))),
                  num_frames=int(inp.num_frames), image_size=int(inp.image_size),
                  visual_channels=int(config.model.get("visual_channels", 3)),
                  attention=str(kwargs.get("attention", "auto")), remat=bool(kwargs.get("remat")))
  if s.attention not in ATTENTION_IMPLEMENTATIONS:
    raise ConfigError(f"config.model.vat.attention={s.attention!r} is not one of "
                      f"{ATTENTION_IMPLEMENTATIONS}.")
  if s.num_frames < 1 or s.image_size < 1:
    raise ConfigError(f"VAT's positional embeddings need a fixed clip size: set "
                      f"config.input.num_frames (got {s.num_frames}) and config.input.image_size "
                      f"(got {s.image_size}) to positive values.")
  if min(sizes.values()) < 1 or s.width % s.heads:
    raise ConfigError(f"config.model.vat sizes {sizes} must be positive and width divisible by "
                      "heads.")
  if s.patch_size < 1 or s.image_size % s.patch_size:
    raise ConfigError(f"config.input.image_size={s.image_size} is not a multiple of "
                      f"config.model.vat.patch_size={s.patch_size}.")
  if (len(s.audio_size) != 2 or len(s.audio_patch_size) != 2 or min(s.audio_patch_size) < 1
      or any(a % p for a, p in zip(s.audio_size, s.audio_patch_size))):
    raise ConfigError(f"config.model.vat.audio_size={s.audio_size} must be (F, T), each a multiple "
                      f"of config.model.vat.audio_patch_size={s.audio_patch_size}.")
  return s


class FrameEncoder(nnx.Module):
  """ViT over the frames of a clip. (B, T, S, S, C) -> tokens (B, 1 + T * P, D), [CLS] first."""

  def __init__(self, s: VATSettings, *, rngs: nnx.Rngs):
    p, d = s.patch_size, s.width
    self.num_frames, self.image_size = s.num_frames, s.image_size
    self.patch_embed = nnx.Conv(s.visual_channels, d, (p, p), strides=(p, p), padding="VALID",
                                kernel_init=patch_init, rngs=rngs)
    grid = (s.image_size // p) ** 2
    self.cls_token = nnx.Param(weight_init(rngs.params(), (1, 1, d)))
    self.pos_embed = nnx.Param(weight_init(rngs.params(), (1, 1 + grid, d)))  # [CLS] + spatial.
    # Zero at init (as TimeSformer): every frame starts as a plain ViT image.
    self.time_embed = nnx.Param(jnp.zeros((1, s.num_frames, d)))
    self.encoder = Encoder(d, s.heads, s.mlp_dim, s.visual_layers, attention=s.attention,
                           remat=s.remat, rngs=rngs)

  def __call__(self, frames: jax.Array) -> jax.Array:
    b, t, h, w, c = frames.shape
    if (t, h, w) != (self.num_frames, self.image_size, self.image_size):
      raise ValueError(f"VAT's frame encoder was built for {self.num_frames} frames of "
                       f"{self.image_size}x{self.image_size} (config.input.num_frames / image_size) "
                       f"but got {t} frames of {h}x{w}.")
    patches = self.patch_embed(frames.reshape(b * t, h, w, c))
    patches = patches.reshape(b, t, -1, patches.shape[-1])  # (B, T, P, D)
    pos = self.pos_embed[...]
    tokens = patches + pos[:, None, 1:] + self.time_embed[...][:, :, None]
    cls = jnp.broadcast_to(self.cls_token[...] + pos[:, :1], (b, 1, patches.shape[-1]))
    return self.encoder(jnp.concatenate([cls, tokens.reshape(b, -1, tokens.shape[-1])], 1))


class SpectrogramEncoder(nnx.Module):
  """Transformer over spectrogram patches. (B, F, T, 1) -> tokens (B, 1 + N, D), [CLS] first."""

  def __init__(self, s: VATSettings, *, rngs: nnx.Rngs):
    d = s.width
    self.audio_size = s.audio_size
    self.patch_embed = nnx.Conv(s.audio_channels, d, s.audio_patch_size,
                                strides=s.audio_patch_size, padding="VALID",
                                kernel_init=patch_init, rngs=rngs)
    grid = (s.audio_size[0] // s.audio_patch_size[0]) * (s.audio_size[1] // s.audio_patch_size[1])
    self.cls_token = nnx.Param(weight_init(rngs.params(), (1, 1, d)))
    self.pos_embed = nnx.Param(weight_init(rngs.params(), (1, 1 + grid, d)))
    self.encoder = Encoder(d, s.heads, s.mlp_dim, s.audio_layers, attention=s.attention,
                           remat=s.remat, rngs=rngs)

  def __call__(self, spec: jax.Array) -> jax.Array:
    b, f, t, _ = spec.shape
    if (f, t) != tuple(self.audio_size):
      raise ValueError(f"VAT's audio encoder was built for spectrograms of {self.audio_size} "
                       f"(config.model.vat.audio_size) but got ({f}, {t}).")
    patches = self.patch_embed(spec)
    patches = patches.reshape(b, -1, patches.shape[-1])
    cls = jnp.broadcast_to(self.cls_token[...], (b, 1, patches.shape[-1]))
    return self.encoder(jnp.concatenate([cls, patches], 1) + self.pos_embed[...])


def mask_tokens(tokens: dict[str, jax.Array], modality_mask: jax.Array | None
                ) -> dict[str, jax.Array]:
  """Multiplies each modality's token sequence (B, N, D) by its column of a (B, M) mask."""
  return apply_modality_mask(tokens, modality_mask)


class VATBase(nnx.Module):
  """The three encoders shared by pre-training and fine-tuning (identical parameter paths)."""

  def __init__(self, s: VATSettings, *, rngs: nnx.Rngs):
    self.settings = s
    self.audio_encoder = SpectrogramEncoder(s, rngs=rngs)
    self.visual_encoder = FrameEncoder(s, rngs=rngs)
    self.fusion_encoder = CrossEncoder(s.width, s.heads, s.mlp_dim, s.fusion_layers,
                                       attention=s.attention, remat=s.remat, rngs=rngs)

  def encode(self, inputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Token sequences {'audio': (B, 1 + Na, D), 'visual': (B, 1 + Nv, D)}; [CLS] at index 0."""
    return {"audio": self.audio_encoder(inputs["audio"]),
            "visual": self.visual_encoder(inputs["visual"])}

  def fused_cls(self, audio_tokens: jax.Array, visual_tokens: jax.Array) -> jax.Array:
    """The multimodal encoder's [CLS] (B, D): audio tokens attend to frame tokens."""
    return self.fusion_encoder(audio_tokens, visual_tokens)[:, 0]


class VATPretrain(VATBase):
  """VAT for pre-training (model 'vat'); the losses live in method 'vat_pretrain'.

  Adds audio_proj / visual_proj (width -> embed_dim), itm_head (width -> 2) and `temp`, the learnable
  contrastive temperature (a scalar Param; vat_pretrain clamps it to [0.001, 0.5] every step).
  """

  def __init__(self, s: VATSettings, *, temperature: float = 0.07, rngs: nnx.Rngs):
    super().__init__(s, rngs=rngs)
    self.audio_proj = linear(s.width, s.embed_dim, rngs=rngs)
    self.visual_proj = linear(s.width, s.embed_dim, rngs=rngs)
    self.itm_head = linear(s.width, 2, rngs=rngs)
    self.temp = nnx.Param(jnp.asarray(temperature, jnp.float32))

  def param_groups(self) -> dict[str, tuple[str, ...]]:
    """'momentum' is what vat_pretrain keeps an EMA copy of (encoders and projections)."""
    return {"encoder/audio": ("audio_encoder",), "encoder/visual": ("visual_encoder",),
            "projection/audio": ("audio_proj",), "projection/visual": ("visual_proj",),
            "fusion": ("fusion_encoder", "itm_head"), "temperature": ("temp",),
            "momentum": ("audio_encoder", "visual_encoder", "audio_proj", "visual_proj")}

  def temperature(self) -> jax.Array:
    """The contrastive temperature (scalar; vat_pretrain clamps it every step)."""
    return self.temp[...]

  def embed(self, tokens: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """L2-normalised projections of the [CLS] tokens: {'audio': (B, E), 'visual': (B, E)}."""
    project = lambda proj, x: l2_normalize(proj(x[:, 0]).astype(jnp.float32))
    return {"audio": project(self.audio_proj, tokens["audio"]),
            "visual": project(self.visual_proj, tokens["visual"])}

  def match(self, audio_tokens: jax.Array, visual_tokens: jax.Array) -> jax.Array:
    """Matching logits (N, 2) (column 1: 'the pair matches') of N audio / frame token pairs."""
    return self.itm_head(self.fused_cls(audio_tokens, visual_tokens)).astype(jnp.float32)

  def __call__(self, inputs: dict[str, jax.Array], modality_mask: jax.Array | None = None
               ) -> ModelOutput:
    """Encodes and matches each clip with itself.

    Returns ModelOutput: logits (B, 2) matching logits of the true pairs; no modality_logits (no
    classes in pre-training); features: the [CLS] tokens (B, D); embeddings (B, E) normalised
    projections and tokens (B, N, D) per modality.
    """
    tokens = mask_tokens(self.encode(inputs), modality_mask)
    embeds = self.embed(tokens)
    return ModelOutput(
        logits=self.match(tokens["audio"], tokens["visual"]), modality_logits={},
        features={m: tokens[m][:, 0] for m in MODALITIES},
        embeddings=dict(embeds), tokens=dict(tokens))


class MlpHead(nnx.Module):
  """ALBEF's fine-tuning head: Linear(D, D), ReLU, Linear(D, K). (B, D) -> (B, K)."""

  def __init__(self, width: int, outputs: int, *, rngs: nnx.Rngs):
    self.fc1 = linear(width, width, rngs=rngs)
    self.fc2 = linear(width, outputs, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc2(jax.nn.relu(self.fc1(x)))


class VATClassifier(VATBase):
  """VAT for fine-tuning (model 'vat_classifier'): classes and / or continuous targets.

  Every head emits C + R values: C class logits, then R regression outputs mapped to
  `target_range` by lo + (hi - lo) * sigmoid. `head` reads the fused [CLS]; `audio_head` /
  `visual_head` read each unimodal encoder's [CLS] (with `detach_modality_heads`, through a stop
  gradient: linear probes that do not train the encoders).
  """

  def __init__(self, s: VATSettings, *, num_classes: int, num_targets: int = 0,
               target_range: tuple[float, float] = (0.0, 1.0),
               detach_modality_heads: bool = False, rngs: nnx.Rngs):
    super().__init__(s, rngs=rngs)
    if num_classes < 0 or num_targets < 0 or num_classes + num_targets < 1:
      raise ValueError(f"VATClassifier needs outputs: num_classes={num_classes}, "
                       f"num_targets={num_targets}.")
    self.num_classes, self.num_targets = num_classes, num_targets
    self.target_range = tuple(float(x) for x in target_range)
    self.detach_modality_heads = detach_modality_heads
    outputs = num_classes + num_targets
    self.head = MlpHead(s.width, outputs, rngs=rngs)
    self.audio_head = linear(s.width, outputs, rngs=rngs)
    self.visual_head = linear(s.width, outputs, rngs=rngs)

  def param_groups(self) -> dict[str, tuple[str, ...]]:
    return {"encoder/audio": ("audio_encoder",), "encoder/visual": ("visual_encoder",),
            "fusion": ("fusion_encoder", "head"), "head/audio": ("audio_head",),
            "head/visual": ("visual_head",)}

  def _split(self, raw: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(B, C + R) -> class logits (B, C), regression outputs in target_range (B, R)."""
    lo, hi = self.target_range
    raw = raw.astype(jnp.float32)
    return raw[:, :self.num_classes], lo + (hi - lo) * jax.nn.sigmoid(raw[:, self.num_classes:])

  def fuse(self, features: dict[str, jax.Array]) -> ModelOutput:
    """Token sequences {'audio': (B, Na, D), 'visual': (B, Nv, D)} -> ModelOutput.

    logits: (B, C) class logits, or (B, R) regression outputs when C = 0; modality_logits likewise
    from each [CLS]; features: the [CLS] tokens (B, D); tokens: the token sequences fused (i.e.
    `fuse`'s inputs); regression (B, R) and modality_regression when R > 0.
    """
    cls = {m: features[m][:, 0] for m in MODALITIES}
    heads = {"audio": self.audio_head, "visual": self.visual_head}
    fused = self._split(self.head(self.fused_cls(features["audio"], features["visual"])))
    per_modality = {}
    for m in MODALITIES:
      x = jax.lax.stop_gradient(cls[m]) if self.detach_modality_heads else cls[m]
      per_modality[m] = self._split(heads[m](x))
    pick = (lambda out: out[0]) if self.num_classes else (lambda out: out[1])
    regress = bool(self.num_targets)
    return ModelOutput(logits=pick(fused),
                       modality_logits={m: pick(per_modality[m]) for m in MODALITIES},
                       features=cls, tokens={m: features[m] for m in MODALITIES},
                       regression=fused[1] if regress else None,
                       modality_regression=({m: per_modality[m][1] for m in MODALITIES}
                                            if regress else None))

  def __call__(self, inputs: dict[str, jax.Array], modality_mask: jax.Array | None = None
               ) -> ModelOutput:
    """Encode, optionally mask (multiplies each modality's token sequence by its (B, 2) mask
    column, before fusion: 0 removes the modality), fuse."""
    return self.fuse(mask_tokens(self.encode(inputs), modality_mask))


@register_model("vat", lambda c: {"embeddings", "tokens"}, remat_key="model.vat.remat")
def vat(config: ml_collections.ConfigDict, num_classes: int, overrides: dict[str, Any],
        rngs: nnx.Rngs) -> VATPretrain:
  """VAT pre-training model; `overrides` may set the initial 'temperature' (vat_pretrain does)."""
  del num_classes
  return VATPretrain(resolve_settings(config), rngs=rngs, **overrides)


@register_model("vat_classifier",
                lambda c: {"task_outputs", "modality_logits", "encode_fuse", "tokens",
                           "regression"},
                remat_key="model.vat.remat")
def vat_classifier(config: ml_collections.ConfigDict, num_classes: int,
                   overrides: dict[str, Any], rngs: nnx.Rngs) -> VATClassifier:
  """VAT fine-tuning model; method vat_finetune passes num_targets / target_range /
  detach_modality_heads (with another method it is a plain C-class classifier)."""
  return VATClassifier(resolve_settings(config), num_classes=num_classes, rngs=rngs, **overrides)
