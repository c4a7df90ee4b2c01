"""`cmvqvae`: CM-VQVAE's training objective, metrics and pictures (CyberAgentAILab/CM-VQVAE main.py).

  L = MSE(x_visual_hat, x_visual) + MSE(x_audio_hat, x_audio) + CE(logits, y)
      + VQ_visual + VQ_audio + mask_weight * sum_c m_c

(main.py L194-202; `mask_weight` 1e-4, the reference's `regularization=True`; the regulariser is the
sum of the RAW mask values, not of their absolute values). MSEs are means over all elements of the
global batch; x_visual is the single frame (B,S,S,3) the model reads. Terms the configured ablation
does not have (model.cmvqvae.ablation 1, 3 and 4 reconstruct nothing; 1, 2 and 4 have no mask) are 0,
as in the reference. Model selection: lowest validation CE (config.train.best_metric 'loss', mode
'min'; `loss` in evaluation reports is the fused CE).

Evaluation adds, over the whole split (to what the base Method reports):
  vq_perplexity_audio / _visual   exp(-sum_k p_k log(p_k + 1e-10)) with p the split's code histogram
  recon_mse_audio / _visual       mean squared reconstruction error per element
  mask_shared_ratio_visual / _audio  100 * (shared channels of the modality) / (2D channels), at most
                                  50 each (the reference's shared1 / shared2 ratios; 'shared' = a
                                  non-zero thresholded mask value, see avjax.models.cmvqvae)
  complementarity                 min(s_visual, s_audio) / max(s_visual, s_audio) of the shared
                                  counts (1: the modalities keep equally many channels); 0 when no
                                  channel is shared (the reference divides 0 by 0 there)
  accuracy_class_<i>              recall of class i (classes present in the split)
and, after each evaluation, <workdir>/pictures/<split>_epoch<NNN>_mask.png (raw mask values per
channel with the threshold) and ..._reconstructions.png (spectrograms and frames of the first few
examples next to their reconstructions).

Config keys (config.method.*, defaults when absent): mask_weight (1e-4; 0 is the reference's
`regularization=False`), num_pictures (4, examples in the reconstruction picture).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from avjax import metrics as metrics_lib
from avjax.methods import base
from avjax.methods.base import METHODS, EvalContext, Method, Metrics, StepContext, cross_entropy
from avjax.models.cmvqvae import ABLATIONS, MASK_INITS, MODES, model_kwargs
from avjax.models.contract import ModelInfo
from avjax.models.outputs import MODALITIES, ModelOutput
from avjax.models.vq import LOG_EPS, THRESHOLD_FNS
from avjax.registry import ConfigError
from avjax.state import model_inputs


@dataclasses.dataclass(frozen=True)
class CMVQVAESettings(base.Settings):
  """mask_weight: weight of the mask regulariser (1e-4: main.py's regularization=True; 0: its
  regularization=False); num_pictures: examples in the reconstruction picture (avjax's choice)."""

  mask_weight: float = 1e-4
  num_pictures: int = 4

  def __post_init__(self):
    super().__post_init__()
    if not self.mask_weight >= 0:
      raise ConfigError(f"config.method.mask_weight={self.mask_weight!r} must be >= 0 (0: no "
                        "regulariser).")


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


def mask_report(shared_visual: float, shared_audio: float, channels: int) -> dict[str, float]:
  """Shared ratios (percent of all 2D channels) and complementarity from shared channel counts."""
  high = max(shared_visual, shared_audio)
  return {
      "mask_shared_ratio_visual": 100.0 * shared_visual / channels,
      "mask_shared_ratio_audio": 100.0 * shared_audio / channels,
      "complementarity": min(shared_visual, shared_audio) / high if high > 0 else 0.0,
  }


@nnx.jit
def _picture_pass(model: nnx.Module, inputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """The mask and reconstructions of a few examples (eval mode; compiled once per shape)."""
  out = model(inputs)
  result = {f"recon_{m}": r for m, r in (out.reconstructions or {}).items()}
  if out.fusion_mask is not None:
    result.update(mask=out.fusion_mask.values, mask_thresholded=out.fusion_mask.thresholded)
  return result


@METHODS.register("cmvqvae")
class CMVQVAEMethod(Method):
  """Reconstruction + classification + VQ + mask-regulariser objective (module docstring)."""

  Settings = CMVQVAESettings
  # Reconstructions, VQ statistics and the mask enter the loss when the model has them (its
  # ablations drop some); classification alone needs no more than any model has.
  requires = frozenset({"modality_logits", "encode_fuse"})

  def __init__(self, config: ml_collections.ConfigDict, model: ModelInfo | None = None):
    super().__init__(config, model)
    self.mask_weight = float(self.settings.mask_weight)
    self.num_pictures = int(self.settings.num_pictures)

  @classmethod
  def validate(cls, config: ml_collections.ConfigDict) -> None:
    super().validate(config)
    if config.model.name != "cmvqvae":
      raise ConfigError(f"method 'cmvqvae' trains the CM-VQVAE model and reads its settings "
                        f"(config.model.cmvqvae); set config.model.name='cmvqvae' (got "
                        f"{config.model.name!r}).")
    kw = model_kwargs(config)
    checks = [("ablation", ABLATIONS, 0), ("mode", MODES, "multimodal"),
              ("threshold_fn", THRESHOLD_FNS, "binarizer"), ("mask_init", MASK_INITS, "1s")]
    for key, allowed, default in checks:
      if kw.get(key, default) not in allowed:
        raise ConfigError(f"config.model.cmvqvae.{key}={kw[key]!r} is not one of {allowed}.")
    decay = kw.get("decay", 0.99)
    if not 0 <= decay < 1:
      raise ConfigError(f"config.model.cmvqvae.decay={decay!r} must be in [0, 1) (0 selects the "
                        "plain quantizer with a trained codebook, > 0 the EMA quantizer).")
    dim = kw.get("embedding_dim", 64)
    if dim < 2 or dim % 2 or kw.get("num_hiddens", 128) % 4:
      raise ConfigError("config.model.cmvqvae.embedding_dim must be even (the head halves it) and "
                        "num_hiddens a multiple of 4 (the audio decoder quarters it).")
    if kw.get("num_embeddings", 512) < 1:
      raise ConfigError("config.model.cmvqvae.num_embeddings must be >= 1.")
    if config.input.num_frames != 1:
      raise ConfigError(f"CM-VQVAE reads one frame per clip; set config.input.num_frames=1 (got "
                        f"{config.input.num_frames}).")
    size, latent = config.input.image_size, tuple(kw.get("latent_size", (32, 32)))
    if size and kw.get("ablation", 0) != 4 and -(-size // 4) != latent[0]:
      raise ConfigError(
          f"config.input.image_size={size} frames encode to {-(-size // 4)}x{-(-size // 4)} maps "
          f"but config.model.cmvqvae.latent_size={latent}; frames are downsampled 4x (and "
          "spectrograms 8x): set latent_size to image_size / 4 (both modalities must agree).")

  def loss(self, output: ModelOutput, batch: dict[str, jax.Array], state: Any,
           ctx: StepContext) -> tuple[jax.Array, Metrics]:
    zero = jnp.zeros((), jnp.float32)
    quantization, mask = output.quantization or {}, output.fusion_mask
    ce = cross_entropy(output.logits, batch["label"])
    recon = {k: jnp.mean(v) for k, v in reconstruction_errors(output, batch).items()}
    terms = {
        "loss_ce": ce,
        "recon_audio": recon.get("recon_audio", zero),
        "recon_visual": recon.get("recon_visual", zero),
        "vq_loss_audio": quantization["audio"].loss if quantization else zero,
        "vq_loss_visual": quantization["visual"].loss if quantization else zero,
        "mask_sum": jnp.sum(mask.values) if mask is not None else zero,
    }
    loss = (terms["recon_visual"] + terms["recon_audio"] + ce + terms["vq_loss_visual"]
            + terms["vq_loss_audio"] + self.mask_weight * terms["mask_sum"])
    metrics = {"loss": loss, **terms}
    for m, stats in quantization.items():
      metrics[f"perplexity_{m}"] = stats.perplexity
    if mask is not None:
      metrics.update({f"mask_shared_{m}": mask.shared[m] for m in MODALITIES})
    return loss, metrics

  # ---------------------------------------------------------------------------- evaluation
  def eval_outputs(self, model: nnx.Module, batch: dict[str, jax.Array],
                   output: ModelOutput) -> dict[str, jax.Array]:
    """Per example: code histograms (B,K), reconstruction MSEs (B,), shared mask channels (B,)
    (the same for every example of a batch; the mask's size in `mask_channels`)."""
    b = output.logits.shape[0]
    out = dict(super().eval_outputs(model, batch, output))  # The base's outputs (if any) too.
    for m, stats in (output.quantization or {}).items():
      codes = stats.codes.reshape(b, -1)
      out[f"code_counts_{m}"] = jnp.sum(jax.nn.one_hot(codes, stats.num_codes, dtype=jnp.int32),
                                        axis=1)
    out.update(reconstruction_errors(output, batch))
    if output.fusion_mask is not None:
      for m in MODALITIES:
        out[f"mask_shared_{m}"] = jnp.broadcast_to(output.fusion_mask.shared[m], (b,))
      out["mask_channels"] = jnp.full((b,), output.fusion_mask.values.shape[0], jnp.float32)
    return out

  def eval_report(self, predictions: dict[str, np.ndarray]) -> dict[str, float]:
    report = dict(super().eval_report(predictions))  # The classification report and the base's.
    labels = predictions["label"]
    num_classes = predictions["logits"].shape[-1]
    recall = metrics_lib.per_class_accuracy(labels, predictions["logits"], num_classes)
    report.update({f"accuracy_class_{i}": float(r) for i, r in enumerate(recall)
                   if np.isfinite(r)})
    for m in MODALITIES:
      if f"code_counts_{m}" in predictions:
        counts = np.asarray(predictions[f"code_counts_{m}"], np.float64).sum(axis=0)
        p = counts / max(counts.sum(), 1.0)  # As vq.code_perplexity, in float64 on the host.
        report[f"vq_perplexity_{m}"] = float(np.exp(-np.sum(p * np.log(p + LOG_EPS))))
      if f"recon_{m}" in predictions:
        report[f"recon_mse_{m}"] = float(np.mean(predictions[f"recon_{m}"]))
    if "mask_channels" in predictions and len(labels):
      report.update(mask_report(float(np.mean(predictions["mask_shared_visual"])),
                                float(np.mean(predictions["mask_shared_audio"])),
                                float(predictions["mask_channels"][0])))
    return report

  def eval_artifacts(self, ctx: EvalContext) -> None:
    """Saves the mask and a few reconstructions as PNGs under <workdir>/pictures/ (chief only),
    after the base's artifacts (if any)."""
    super().eval_artifacts(ctx)
    count = min(self.num_pictures, len(ctx.sample["label"]))

    def pictures(model: nnx.Module, sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
      inputs = {k: jnp.asarray(v[:count]) for k, v in model_inputs(sample).items()}
      return jax.tree.map(np.asarray, _picture_pass(model, inputs))

    result = ctx.apply(pictures)  # On every process: the model's arrays may span hosts.
    if not ctx.is_chief or not result:
      return
    folder = os.path.join(ctx.workdir, "pictures")
    os.makedirs(folder, exist_ok=True)
    stem = os.path.join(folder, f"{ctx.split}_epoch{ctx.epoch + 1:03d}")
    threshold = float(model_kwargs(self.config).get("threshold", 5e-3))
    if "mask" in result:
      save_mask(f"{stem}_mask.png", result["mask"],
                                 result["mask_thresholded"], threshold)
    if "recon_audio" in result:
      sample = {k: np.asarray(v[:count]) for k, v in ctx.sample.items()}
      save_reconstructions(
          f"{stem}_reconstructions.png", sample["audio"], result["recon_audio"],
          np.asarray(visual_target(sample)), result["recon_visual"],
          tuple(self.config.input.mean), tuple(self.config.input.std))


# ------------------------------------------------------------------------------------- pictures


def _figure(width: float, height: float):
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  fig = Figure(figsize=(width, height), dpi=100)
  FigureCanvasAgg(fig)
  return fig


def save_mask(path: str, mask: np.ndarray, thresholded: np.ndarray, threshold: float) -> None:
  """Bar chart of the raw mask per channel, one row per modality (visual: the first half);
  shared channels (non-zero thresholded value) in orange, private ones in grey."""
  d = mask.shape[0] // 2
  fig = _figure(10, 5)
  for row, (name, part) in enumerate((("visual", slice(0, d)), ("audio", slice(d, 2 * d)))):
    ax = fig.add_subplot(2, 1, row + 1)
    shared = thresholded[part] != 0
    ax.bar(np.arange(d), mask[part], color=np.where(shared, "tab:orange", "tab:gray"))
    ax.axhline(threshold, color="k", linewidth=0.8, linestyle="--")
    ax.set_ylabel("mask value")
    ax.set_title(f"{name}: {int(shared.sum())}/{d} channels shared (orange), threshold {threshold:g}")
  fig.axes[-1].set_xlabel("channel")
  fig.tight_layout()
  fig.savefig(path)


def save_reconstructions(path: str, audio: np.ndarray, recon_audio: np.ndarray, frames: np.ndarray,
                         recon_frames: np.ndarray, mean: tuple[float, ...],
                         std: tuple[float, ...]) -> None:
  """One row per example: spectrogram, its reconstruction, frame, its reconstruction. audio
  (N,F,T,1), frames (N,S,S,3) normalised with (mean, std), shown back in [0, 1]."""
  n = audio.shape[0]
  fig = _figure(12, 3 * n)
  to_rgb = lambda x: np.clip(x * np.asarray(std) + np.asarray(mean), 0.0, 1.0)
  for i in range(n):
    low, high = float(audio[i].min()), float(audio[i].max())
    panels = (("spectrogram", audio[i, ..., 0]), ("reconstruction", recon_audio[i, ..., 0]),
              ("frame", to_rgb(frames[i])), ("reconstruction", to_rgb(recon_frames[i])))
    for j, (title, image) in enumerate(panels):
      ax = fig.add_subplot(n, 4, 4 * i + j + 1)
      if j < 2:
        ax.imshow(image, origin="lower", aspect="auto", vmin=low, vmax=high, cmap="magma")
      else:
        ax.imshow(image)
      ax.set_title(title)
      ax.axis("off")
  fig.tight_layout()
  fig.savefig(path)
