"""`av_resnet_mmtm`: av_resnet with MMTM blocks between the ResNet stages (Greedy, ICML 2022).

MMTM (multi-modal transfer module) after ResNet stage k of both encoders, with feature maps F_a
(B,h,w,C) and F_v (B*T,h,w,C):

  S_m = mean of F_m over every axis but batch and channel (the visual map over (T, h, w))  (B, C)
  E   = ReLU(squeeze([S_a; S_v]))          squeeze: Linear(2C -> 2 * 2C / ratio)
  G_m = sigmoid(excite_m(E))               excite_m: Linear(. -> C), no factor 2 on the sigmoid
  F_m <- F_m * G_m                         broadcast over (T,) h, w

as nyukat/greedy_multimodal_learning (GRD) src/balanced_mmtm.py:92-111 and BalanceBenchmark. Blocks
sit after the stages in `mmtm_positions` ((2, 3, 4): GRD's; (1, 2, 3, 4): BalanceBenchmark's).
Every training forward also updates a running mean of each gate over the forwards so far,
g_bar <- (mean_B G + t g_bar) / (t + 1) (GRD:104-107, per modality as intended; GRD updates the
second modality's mean from the first one's gate), before the gates are used.

Calls besides av_resnet's (capability 'mmtm'):
  __call__(inputs, modality_mask, curation=c): c an int32 scalar, -1: every gate computed; i: the
    gates of MODALITIES[i] replaced by their (updated, stop-gradient) running means for every
    example (Greedy's re-balancing step); squeeze_means=[(S_a, S_v) per block]: each modality's
    gate computed from its own squeeze and the other's given mean squeeze (GRD's `mmtm_off`,
    the conditional utilisation rate).
  mmtm_squeezes(inputs) -> {'<modality>_<block>': (B, C)}: the squeeze vectors of every block.
Parameter groups: av_resnet's plus 'mmtm/shared' (the squeeze layers) and 'mmtm/<modality>' (that
modality's excitations). The MMTM layers use PyTorch's default Linear init, as both codes do.
No released PyTorch checkpoint of this model exists (GRD ships ModelNet40 code only; BB none).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from avjax.models import av_resnet_kwargs, fusion_kwargs, register_model
from avjax.models.classifier import AVClassifier
from avjax.models.fusion import dense
from avjax.models.outputs import MODALITIES, ModelOutput, apply_modality_mask


class GateMean(nnx.Variable):
  """A running mean of MMTM gates (not trained; lives in the model state)."""


class GateStats(nnx.Module):
  """One block's running mean gate per modality and the number of forwards averaged."""

  def __init__(self, channels: int):
    self.audio = GateMean(jnp.zeros((channels,), jnp.float32))
    self.visual = GateMean(jnp.zeros((channels,), jnp.float32))
    self.count = GateMean(jnp.zeros((), jnp.float32))


def _fold(x: jax.Array) -> tuple[jax.Array, int]:
  """(B,T,H,W,C) frames -> ((B*T,H,W,C), B); a (B,F,T,C) spectrogram passes as it is."""
  if x.ndim == 5:
    return x.reshape((-1,) + x.shape[2:]), x.shape[0]
  return x, x.shape[0]


def squeeze_map(y: jax.Array, batch: int) -> jax.Array:
  """Mean of a (B*T,h,w,C) map over (T,h,w) per example: (B, C)."""
  return jnp.mean(y.reshape((batch, -1, y.shape[-1])), axis=1)


def scale_map(y: jax.Array, gate: jax.Array) -> jax.Array:
  """A (B*T,h,w,C) map times a (B, C) gate broadcast over (T,h,w)."""
  b = gate.shape[0]
  return (y.reshape((b, -1, y.shape[-1])) * gate[:, None, :].astype(y.dtype)).reshape(y.shape)


class MMTMClassifier(AVClassifier):
  """AVClassifier whose encoders exchange channel gates (MMTM) after the chosen ResNet stages."""

  def __init__(self, *, mmtm_positions: Sequence[int] = (2, 3, 4), mmtm_ratio: float = 4,
               **kwargs: Any):
    super().__init__(**kwargs)
    positions = tuple(sorted(int(p) for p in mmtm_positions))
    if not positions or any(p not in (1, 2, 3, 4) for p in positions) or len(set(positions)) != len(
        positions):
      raise ValueError(f"mmtm_positions={tuple(mmtm_positions)} must be distinct stages in 1..4.")
    rngs = kwargs["rngs"]
    widths = tuple(kwargs.get("widths", (64, 128, 256, 512)))
    self.mmtm_positions = positions
    squeeze, audio, visual, stats = [], [], [], []
    for p in positions:
      channels = widths[p - 1]
      hidden = int(2 * (2 * channels) / mmtm_ratio)
      squeeze.append(dense(2 * channels, hidden, init="mmcosine", rngs=rngs))
      audio.append(dense(hidden, channels, init="mmcosine", rngs=rngs))
      visual.append(dense(hidden, channels, init="mmcosine", rngs=rngs))
      stats.append(GateStats(channels))
    self.mmtm_squeeze = nnx.List(squeeze)
    self.mmtm_audio = nnx.List(audio)
    self.mmtm_visual = nnx.List(visual)
    self.mmtm_stats = nnx.List(stats)
    self.use_running_average = False  # model.eval() sets it: only training forwards update g_bar.

  def param_groups(self) -> dict[str, tuple[str, ...]]:
    return {**super().param_groups(), "mmtm/shared": ("mmtm_squeeze",),
            "mmtm/audio": ("mmtm_audio",), "mmtm/visual": ("mmtm_visual",)}

  def gates(self, k: int, s_a: jax.Array, s_v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Block k's gates (B, C) each from squeezes (B, C) each."""
    e = nnx.relu(self.mmtm_squeeze[k](jnp.concatenate([s_a, s_v], axis=-1)))
    return jax.nn.sigmoid(self.mmtm_audio[k](e)), jax.nn.sigmoid(self.mmtm_visual[k](e))

  def _run(self, inputs: dict[str, jax.Array], curation: jax.Array | None,
           squeeze_means: Sequence[tuple[jax.Array, jax.Array]] | None
           ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """Both encoders stage by stage with the MMTM blocks: (pooled features, squeezes)."""
    nets = {"audio": self.audio_encoder.backbone, "visual": self.visual_encoder.backbone}
    x, batch = {}, 0
    for m in MODALITIES:
      x[m], batch = _fold(inputs[m])
      x[m] = nets[m].stem(x[m])
    squeezes, k = {}, 0
    for stage in range(1, 5):
      x = {m: nets[m].stage(stage, x[m]) for m in MODALITIES}
      if stage not in self.mmtm_positions:
        continue
      s_a, s_v = squeeze_map(x["audio"], batch), squeeze_map(x["visual"], batch)
      squeezes.update({f"audio_{k}": s_a, f"visual_{k}": s_v})
      if squeeze_means is None:
        g_a, g_v = self.gates(k, s_a, s_v)
      else:  # Each modality's gate with the other's mean squeeze (GRD's mmtm_off).
        mean_a, mean_v = (jnp.broadcast_to(s, (batch, s.shape[-1])) for s in squeeze_means[k])
        g_a, _ = self.gates(k, s_a, mean_v)
        _, g_v = self.gates(k, mean_a, s_v)
      stats = self.mmtm_stats[k]
      if not self.use_running_average:
        t = stats.count[...]
        for m, g in (("audio", g_a), ("visual", g_v)):
          mean = getattr(stats, m)
          mean[...] = (jnp.mean(jax.lax.stop_gradient(g), 0) + t * mean[...]) / (t + 1)
        stats.count[...] = t + 1
      if curation is not None:
        frozen = {m: jnp.broadcast_to(jax.lax.stop_gradient(getattr(stats, m)[...]), g_a.shape)
                  for m in MODALITIES}
        g_a = jnp.where(curation == 0, frozen["audio"], g_a)
        g_v = jnp.where(curation == 1, frozen["visual"], g_v)
      x = {"audio": scale_map(x["audio"], g_a), "visual": scale_map(x["visual"], g_v)}
      k += 1
    features = {m: squeeze_map(x[m], batch) for m in MODALITIES}
    return features, squeezes

  def encode(self, inputs: dict[str, jax.Array], curation: jax.Array | None = None,
             squeeze_means: Sequence[tuple[jax.Array, jax.Array]] | None = None
             ) -> dict[str, jax.Array]:
    """Pooled features {'audio': (B,D), 'visual': (B,D)} through the MMTM-coupled encoders."""
    return self._run(inputs, curation, squeeze_means)[0]

  def mmtm_squeezes(self, inputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Every block's squeeze vectors {'<modality>_<block>': (B, C)} (eval mode: no state change)."""
    return self._run(inputs, None, None)[1]

  def __call__(self, inputs: dict[str, jax.Array], modality_mask: jax.Array | None = None,
               curation: jax.Array | None = None,
               squeeze_means: Sequence[tuple[jax.Array, jax.Array]] | None = None
               ) -> ModelOutput:
    """Encode (with MMTM), optionally mask the pooled features, fuse (see AVClassifier)."""
    features = self.encode(inputs, curation, squeeze_means)
    return self.fuse(apply_modality_mask(features, modality_mask))


def _capabilities(config: ml_collections.ConfigDict) -> set[str]:
  caps = {"task_outputs", "modality_logits", "encode_fuse", "head_inputs", "modality_encoders",
          "modality_heads", "shared_head", "mmtm"}
  if config.model.fusion not in ("film", "gated") or config.model.fusion_kwargs.get(
      "form", "ogm_ge") == "mmcosine":
    caps.add("cosine_head")
  return caps


@register_model("av_resnet_mmtm", _capabilities, remat_key="")
def av_resnet_mmtm(config: ml_collections.ConfigDict, num_classes: int, overrides: dict[str, Any],
                   rngs: nnx.Rngs) -> MMTMClassifier:
  """av_resnet (config.model.av_resnet, config.model.fusion) with MMTM blocks; a method's
  overrides 'mmtm_positions' / 'mmtm_ratio' place and size them (default GRD's (2, 3, 4),
  ratio 4)."""
  m = config.model
  overrides = dict(overrides)
  heads = overrides.pop("modality_heads", "slices")
  shared = overrides.pop("shared_head", False)
  positions = overrides.pop("mmtm_positions", (2, 3, 4))
  ratio = overrides.pop("mmtm_ratio", 4)
  return MMTMClassifier(mmtm_positions=positions, mmtm_ratio=ratio, num_classes=num_classes,
                        fusion=m.fusion, modality_heads=heads, shared_head=shared,
                        fusion_kwargs={**fusion_kwargs(m), **overrides},
                        **av_resnet_kwargs(config), rngs=rngs)
