"""CM-VQVAE (WACV 2024): VQ-VAEs per modality and a classifier behind a learned channel mask.

CyberAgentAILab/CM-VQVAE, CREMA-D/model.py (`Model`, `Model_Baseline`, `Model_Comparison`); NHWC here.
With H = num_hiddens (128), R = num_residual_hiddens (32), D = embedding_dim (64), defaults in ():

  residual block (pre-activation): x + Conv1x1(ReLU(BN(Conv3x3(ReLU(BN(x)))))), H -> R -> H, no bias
  residual stack: `num_residual_layers` blocks, then BN, ReLU
  visual encoder: Conv4x4 s2 (3 -> H/2), BN, ReLU; Conv4x4 s2 (H/2 -> H), BN, ReLU; Conv3x3 (H -> H);
                  residual stack                               128x128 frame -> 32x32xH
  audio encoder:  the same from 1 channel, MaxPool 3x3 s2 after the Conv3x3   256x256 mel -> 32x32xH
  pre-VQ:         Conv1x1 (H -> D) per modality; one quantizer per modality (avjax.models.vq)
  visual decoder: Conv3x3 (D -> H), residual stack, ConvT4x4 s2 (H -> H/2), BN, ReLU, ConvT (H/2 -> 3)
  audio decoder:  the same start, ConvT H -> H/2 -> H/4 -> 1 with BN, ReLU between   (no output act.)
  task solver:    x = concat(q_visual, q_audio) (2D channels, visual first) * threshold(mask) per
                  channel; Conv3x3 s2 (-> D/2), BN, ReLU; Conv3x3 s2 (D/2 -> D/2), Dropout 0.5;
                  residual stack (D/2 channels, hidden R/4); flatten (C,h,w order); FC -> 256, BN,
                  ReLU, Dropout 0.5, FC -> classes. 'visual-only' / 'audio-only' modes keep channels
                  [:D] / [D:] after masking. The mask m (2D,) starts at mask_scale ('1s') or
                  U(-mask_scale, mask_scale) ('uniform'); `mask_sum` = sum_c m_c (the regulariser).

Ablations (`ablation`, the reference's base_type): 0 the proposed model; 1 classifier on the pre-VQ z
(no VQ, reconstruction or mask); 2 VQ and decoders, no mask; 3 mask on the continuous z (no VQ or
reconstruction); 4 two ResNet-18s (`ResNetPair`: `AVClassifier` with an MLP head). Types 1-3 keep every
layer (the reference's state dicts do), unused ones just receive no gradient.

Layers use PyTorch's default init (avjax.models.vq, where the encoders and decoders live). The head's
width D/2 and
its residual width R/4 are the reference's `in_channels/2` and `num_residual_hiddens/4` (its
residual stack is built with num_hiddens/4 channels, equal to D/2 at the published sizes).

`encode` gives the per-modality features the classifier reads (quantized maps (B,h,w,D); pre-VQ z
for ablations 1 and 3), `fuse` runs the masked head on them; `__call__` also decodes the unmasked
features. Per-modality logits: the head with the other modality's channels zeroed (its BatchNorm
statistics are not updated by these passes; no gradient flows through them); in a uni-modal mode
the absent modality's logits are zeros. ModelOutput holds `quantization` (per modality: VQ loss,
perplexity, codes (B,h,w)), `reconstructions` (audio (B,F,T,1), visual (B,S,S,3)) and `fusion_mask`
(values (2D,), thresholded (2D,), shared channel counts; see `mask_statistics`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from avjax.models import register_model, section_kwargs
from avjax.models.classifier import AVClassifier
from avjax.models.fusion import FusionOutput
from avjax.models.outputs import (MODALITIES, FusionMask, ModelOutput, Quantization,
                                  apply_modality_mask)
from avjax.models.vq import (Decoder, Encoder, ResidualStack, VectorQuantizer, VectorQuantizerEMA,
                             batch_norm, check_threshold_fn, conv, dense, hard_mask, threshold_mask)

MODES = ("multimodal", "visual-only", "audio-only")
ABLATIONS = (0, 1, 2, 3, 4)
MASK_INITS = ("1s", "uniform")


def head_positions(latent_size: Sequence[int]) -> int:
  """h*w after the head's two stride-2 3x3 convs (padding 1): ceil(ceil(n/2)/2) per side."""
  return math.prod(-(-(-(-int(n) // 2)) // 2) for n in latent_size)


class TaskSolver(nnx.Module):
  """The classifier on the concatenated per-modality maps, optionally behind the channel mask.

  Input (B,h,w,2D) with channels [visual D | audio D] -> (B,C) logits.
  """

  def __init__(self, embedding_dim: int, num_classes: int, num_residual_layers: int,
               num_residual_hiddens: int, latent_size: Sequence[int], *, mode: str, masked: bool,
               mask_init: str, mask_scale: float, threshold_fn: str, threshold: float,
               fc_hidden: int, dropout: float, rngs: nnx.Rngs):
    self.mode, self.masked, self.embedding_dim = mode, masked, embedding_dim
    self.threshold_fn, self.threshold = check_threshold_fn(threshold_fn), float(threshold)
    width = embedding_dim // 2
    in_size = 2 * embedding_dim if mode == "multimodal" else embedding_dim
    self.conv_1 = conv(in_size, width, 3, 2, 1, rngs=rngs)
    self.bn_1 = batch_norm(width, rngs=rngs)
    self.conv_2 = conv(width, width, 3, 2, 1, rngs=rngs)
    self.conv_drop = nnx.Dropout(dropout, rngs=rngs)
    self.residual_stack = ResidualStack(width, max(num_residual_hiddens // 4, 1),
                                        num_residual_layers, rngs=rngs)
    self.fc_1 = dense(width * head_positions(latent_size), fc_hidden, rngs=rngs)
    self.bn_2 = batch_norm(fc_hidden, rngs=rngs)
    self.fc_drop = nnx.Dropout(dropout, rngs=rngs)
    self.fc_2 = dense(fc_hidden, num_classes, rngs=rngs)
    if masked:
      shape = (2 * embedding_dim,)
      if mask_init == "1s":
        value = jnp.full(shape, mask_scale, jnp.float32)
      else:
        value = jax.random.uniform(rngs.params(), shape, jnp.float32, -mask_scale, mask_scale)
      self.mask = nnx.Param(value)
      self.mask_rngs = rngs["randomizer"].fork()  # Only the 'randomizer' threshold draws from it.

  def thresholded_mask(self) -> jax.Array:
    """(2D,) mask as applied in the forward pass (one new draw per call for 'randomizer')."""
    key = self.mask_rngs() if self.threshold_fn == "randomizer" else None
    return threshold_mask(self.mask[...], self.threshold_fn, self.threshold, key)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """x (B,h,w,2D), `mask` the thresholded mask (2D,) when masked -> (B,C) logits."""
    if self.masked:
      x = x * mask
    d = self.embedding_dim
    if self.mode == "visual-only":
      x = x[..., :d]
    elif self.mode == "audio-only":
      x = x[..., d:]
    x = nnx.relu(self.bn_1(self.conv_1(x)))
    x = self.residual_stack(self.conv_drop(self.conv_2(x)))
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)  # PyTorch's (C,h,w) flatten order.
    x = self.fc_drop(nnx.relu(self.bn_2(self.fc_1(x))))
    return self.fc_2(x)


def mask_statistics(mask: jax.Array, threshold_fn: str, threshold: float,
                    thresholded: jax.Array) -> dict[str, jax.Array]:
  """Shared (non-zero) channel counts of each modality's half of the mask, as the reference's
  `get_private_shared_ratio`: 'attention' masks count through the binarizer, 'randomizer' masks
  count the draw used in the forward pass. Visual is the first half."""
  hard = thresholded if threshold_fn == "randomizer" else hard_mask(
      mask, "binarizer" if threshold_fn == "attention" else threshold_fn, threshold)
  d = mask.shape[0] // 2
  shared = jax.lax.stop_gradient(hard != 0).astype(jnp.float32)
  return {"visual": jnp.sum(shared[:d]), "audio": jnp.sum(shared[d:])}


def _uni_modal_logits(head: nnx.Module, run, inputs: dict[str, jax.Array], mode: str,
                      num_classes: int) -> dict[str, jax.Array]:
  """Logits of `run(head, inputs with the other modality zeroed)` per modality, without gradient
  and leaving `head`'s BatchNorm statistics as they were; zeros for a modality the mode leaves
  out."""
  saved = jax.tree.map(lambda x: x, nnx.state(head, nnx.BatchStat))
  out = {}
  for m in MODALITIES:
    used = mode == "multimodal" or mode.startswith(m)
    if not used:
      out[m] = jnp.zeros((next(iter(inputs.values())).shape[0], num_classes), jnp.float32)
      continue
    alone = {k: v if k == m else jnp.zeros_like(v) for k, v in inputs.items()}
    out[m] = jax.lax.stop_gradient(run(head, alone))
  nnx.update(head, saved)
  return out


class CMVQVAE(nnx.Module):
  """CM-VQVAE and its ablations 0-3 (module docstring). Inputs {'audio': (B,F,T,1), 'visual':
  (B,1,S,S,3)}; both must encode to `latent_size` (h, w) maps."""

  def __init__(self, *, num_classes: int, ablation: int = 0, mode: str = "multimodal",
               num_hiddens: int = 128, num_residual_hiddens: int = 32, num_residual_layers: int = 2,
               embedding_dim: int = 64, num_embeddings: int = 512, commitment_cost: float = 0.25,
               decay: float = 0.99, epsilon: float = 1e-5, mask_init: str = "1s",
               mask_scale: float = 1e-2, threshold_fn: str = "binarizer", threshold: float = 5e-3,
               latent_size: Sequence[int] = (32, 32), fc_hidden: int = 256, dropout: float = 0.5,
               rngs: nnx.Rngs):
    if ablation not in (0, 1, 2, 3):
      raise ValueError(f"CMVQVAE takes ablation 0-3 (4 is the ResNet pair), got {ablation!r}.")
    if mode not in MODES:
      raise ValueError(f"mode={mode!r} is not one of {MODES}.")
    if mask_init not in MASK_INITS:
      raise ValueError(f"mask_init={mask_init!r} is not one of {MASK_INITS}.")
    self.num_classes, self.ablation, self.mode = num_classes, ablation, mode
    self.quantize = ablation in (0, 2)
    self.latent_size = tuple(int(n) for n in latent_size)
    h, r, layers, d = num_hiddens, num_residual_hiddens, num_residual_layers, embedding_dim
    self.visual_encoder = Encoder(3, h, layers, r, max_pool=False, rngs=rngs)
    self.audio_encoder = Encoder(1, h, layers, r, max_pool=True, rngs=rngs)
    self.visual_pre_vq = conv(h, d, 1, 1, 0, rngs=rngs)
    self.audio_pre_vq = conv(h, d, 1, 1, 0, rngs=rngs)
    if decay > 0:
      self.visual_vq = VectorQuantizerEMA(num_embeddings, d, commitment_cost, decay, epsilon,
                                          rngs=rngs)
      self.audio_vq = VectorQuantizerEMA(num_embeddings, d, commitment_cost, decay, epsilon,
                                         rngs=rngs)
    else:
      self.visual_vq = VectorQuantizer(num_embeddings, d, commitment_cost, rngs=rngs)
      self.audio_vq = VectorQuantizer(num_embeddings, d, commitment_cost, rngs=rngs)
    self.visual_decoder = Decoder(d, 3, h, layers, r, num_upsamples=2, rngs=rngs)
    self.audio_decoder = Decoder(d, 1, h, layers, r, num_upsamples=3, rngs=rngs)
    self.classifier = TaskSolver(
        d, num_classes, layers, r, self.latent_size, mode=mode, masked=ablation in (0, 3),
        mask_init=mask_init, mask_scale=mask_scale, threshold_fn=threshold_fn,
        threshold=threshold, fc_hidden=fc_hidden, dropout=dropout, rngs=rngs)

  def param_groups(self) -> dict[str, tuple[str, ...]]:
    groups = {"fusion": ("classifier",)}
    for m in MODALITIES:
      groups[f"encoder/{m}"] = (f"{m}_encoder", f"{m}_pre_vq", f"{m}_vq")
      groups[f"recon/{m}"] = (f"{m}_decoder",)
    return groups

  def _encode(self, inputs: dict[str, jax.Array]
              ) -> tuple[dict[str, jax.Array], dict[str, Quantization] | None]:
    visual = inputs["visual"]
    if visual.ndim == 5:
      if visual.shape[1] != 1:
        raise ValueError(f"CM-VQVAE reads one frame per clip, got {visual.shape[1]} (visual "
                         f"{visual.shape}); set config.input.num_frames=1.")
      visual = visual[:, 0]
    z = {"visual": self.visual_pre_vq(self.visual_encoder(visual)),
         "audio": self.audio_pre_vq(self.audio_encoder(inputs["audio"]))}
    for m, v in z.items():
      if tuple(v.shape[1:3]) != self.latent_size:
        raise ValueError(
            f"The {m} input {inputs[m].shape} encodes to {tuple(v.shape[1:3])} maps but the model "
            f"was built for latent_size={self.latent_size} (audio is downsampled 8x, frames 4x); "
            "set config.model.cmvqvae.latent_size or the input sizes to agree.")
    if not self.quantize:
      return z, None
    stats = {}
    for m, vq in (("visual", self.visual_vq), ("audio", self.audio_vq)):
      out = vq(z[m])
      z[m] = out.quantized
      stats[m] = Quantization(loss=out.loss, perplexity=out.perplexity, codes=out.codes,
                              num_codes=vq.num_embeddings)
    return z, stats

  def encode(self, inputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Per-modality maps the classifier reads {'audio', 'visual'}: (B,h,w,D)."""
    return self._encode(inputs)[0]

  def _head(self, features: dict[str, jax.Array], mask: jax.Array | None) -> jax.Array:
    return self.classifier(jnp.concatenate([features["visual"], features["audio"]], -1), mask)

  def fuse(self, features: dict[str, jax.Array]) -> ModelOutput:
    """Masked task solver on {'audio', 'visual'} (B,h,w,D) maps -> ModelOutput (features pooled
    to (B,D) by a mean over h, w)."""
    solver, fusion_mask = self.classifier, None
    mask = None
    if solver.masked:
      mask = solver.thresholded_mask()
      raw = solver.mask[...]
      fusion_mask = FusionMask(values=raw, thresholded=mask, shared=mask_statistics(
          raw, solver.threshold_fn, solver.threshold, mask))
    logits = self._head(features, mask)
    uni = _uni_modal_logits(solver, lambda _, f: self._head(f, mask), features, self.mode,
                            self.num_classes)
    pooled = {m: jnp.mean(features[m], axis=(1, 2)) for m in MODALITIES}
    return ModelOutput(logits=logits, modality_logits=uni, features=pooled,
                       fusion_mask=fusion_mask)

  def __call__(self, inputs: dict[str, jax.Array],
               modality_mask: jax.Array | None = None) -> ModelOutput:
    """Encode, decode (ablations 0, 2), weight the features by `modality_mask` (B,2) in
    ('audio', 'visual') order, fuse."""
    features, stats = self._encode(inputs)
    recon = None
    if self.quantize:
      recon = {"visual": self.visual_decoder(features["visual"]),
               "audio": self.audio_decoder(features["audio"])}
    out = self.fuse(apply_modality_mask(features, modality_mask))
    return out.replace(quantization=stats, reconstructions=recon)


class MLPHead(nnx.Module):
  """CM-VQVAE's ResNet baseline head (Model_Comparison): FC([v; a] -> hidden), BN, ReLU, Dropout,
  FC -> classes, PyTorch's default init. mode 'audio-only' / 'visual-only' reads one modality.
  Uni-modal logits: the head with the other modality zeroed (no BatchNorm update, no gradient);
  zeros for a modality the mode leaves out. {(B,D), (B,D)} -> FusionOutput (a fusion's interface)."""

  def __init__(self, dim: int, num_classes: int, *, mode: str = "multimodal", hidden: int = 256,
               dropout: float = 0.5, rngs: nnx.Rngs):
    if mode not in MODES:
      raise ValueError(f"mode={mode!r} is not one of {MODES}.")
    self.mode, self.num_classes = mode, num_classes
    self.fc_1 = dense(2 * dim if mode == "multimodal" else dim, hidden, rngs=rngs)
    self.bn = batch_norm(hidden, rngs=rngs)
    self.drop = nnx.Dropout(dropout, rngs=rngs)
    self.fc_2 = dense(hidden, num_classes, rngs=rngs)

  def _logits(self, features: dict[str, jax.Array]) -> jax.Array:
    if self.mode == "multimodal":
      x = jnp.concatenate([features["visual"], features["audio"]], -1)
    else:
      x = features[self.mode.split("-")[0]]
    return self.fc_2(self.drop(nnx.relu(self.bn(self.fc_1(x)))))

  def __call__(self, features: dict[str, jax.Array]) -> FusionOutput:
    logits = self._logits(features)
    uni = _uni_modal_logits(self, lambda head, f: head._logits(f), features, self.mode,
                            self.num_classes)
    return FusionOutput(logits=logits, modality_logits=uni, head_inputs=dict(features))


class ResNetPair(AVClassifier):
  """Ablation 4: AVClassifier's two ResNet-18 encoders (torchvision layout and init; its encode /
  fuse / modality removal) with the MLPHead in place of a registered fusion."""

  def __init__(self, *, num_classes: int, widths: Sequence[int], mode: str = "multimodal",
               fc_hidden: int = 256, dropout: float = 0.5, rngs: nnx.Rngs):
    super().__init__(num_classes=num_classes, fusion="concat", widths=widths, visual_channels=3,
                     init="ogm_ge", rngs=rngs)
    self.fusion_name = "mlp"
    self.fusion = MLPHead(self.feature_dim, num_classes, mode=mode, hidden=fc_hidden,
                          dropout=dropout, rngs=rngs)


def visual_target(batch: dict[str, jax.Array]) -> jax.Array:
  """The frame the model reconstructs: (B,1,S,S,3) -> (B,S,S,3)."""
  v = batch["visual"]
  return v[:, 0] if v.ndim == 5 else v


def reconstruction_errors(output: ModelOutput, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """{'recon_audio', 'recon_visual'}: per-example mean squared errors (B,), for those present."""
  targets = {"audio": batch["audio"], "visual": visual_target(batch)}
  out = {}
  for m, recon in (output.reconstructions or {}).items():
    diff = recon.astype(jnp.float32) - targets[m].astype(jnp.float32)
    out[f"recon_{m}"] = jnp.mean(jnp.square(diff).reshape(diff.shape[0], -1), axis=1)
  return out


def model_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """config.model.cmvqvae as constructor arguments (tuples for sequences)."""
  kwargs = section_kwargs(config, "cmvqvae")
  if "latent_size" in kwargs:
    size = kwargs["latent_size"]
    kwargs["latent_size"] = (size, size) if isinstance(size, int) else tuple(size)
  return kwargs


def _capabilities(config: ml_collections.ConfigDict) -> set[str]:
  """Reconstructions and VQ statistics in ablations 0 and 2, the mask in 0 and 3."""
  ablation = model_kwargs(config).get("ablation", 0)
  caps = {"task_outputs", "modality_logits", "encode_fuse"}
  if ablation in (0, 2):
    caps |= {"reconstructions", "quantization"}
  if ablation in (0, 3):
    caps.add("fusion_mask")
  return caps


@register_model("cmvqvae", _capabilities)
def cmvqvae(config: ml_collections.ConfigDict, num_classes: int, overrides: dict[str, Any],
            rngs: nnx.Rngs) -> nnx.Module:
  """CM-VQVAE from `config.model.cmvqvae` (ablation 4: two ResNet-18s of stage widths
  `config.model.cmvqvae.widths`, default ResNet-18's)."""
  kwargs = {**model_kwargs(config), **overrides}
  ablation = kwargs.pop("ablation", 0)
  widths = tuple(kwargs.pop("widths", (64, 128, 256, 512)))
  if ablation == 4:
    return ResNetPair(num_classes=num_classes, widths=widths,
                      mode=kwargs.get("mode", "multimodal"), fc_hidden=kwargs.get("fc_hidden", 256),
                      dropout=kwargs.get("dropout", 0.5), rngs=rngs)
  return CMVQVAE(num_classes=num_classes, ablation=ablation, **kwargs, rngs=rngs)
