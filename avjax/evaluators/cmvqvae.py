"""`cmvqvae` evaluator: CM-VQVAE's codebook, reconstruction and mask statistics, and pictures.

Over the whole split (config.evals.cmvqvae; avjax.models.cmvqvae gives the model's outputs):
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
examples next to their reconstructions). Settings: num_pictures (4, examples in the picture).
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from avjax import metrics as metrics_lib
from avjax import workdir as workdir_lib
from avjax.evaluators.base import EVALUATORS, EvalContext, Evaluator
from avjax.models.cmvqvae import model_kwargs, reconstruction_errors, visual_target
from avjax.models.outputs import MODALITIES
from avjax.models.vq import LOG_EPS
from avjax.state import model_inputs


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


@dataclasses.dataclass(frozen=True)
class CMVQVAESettings:
  num_pictures: int = 4  # Examples in the reconstruction picture (avjax's choice).


@EVALUATORS.register("cmvqvae")
class CMVQVAEEvaluator(Evaluator):
  """Codebook usage, reconstruction errors, mask sharing, per-class recall and pictures."""

  Settings = CMVQVAESettings

  def outputs(self, model, batch, output):
    """Per example: code histograms (B,K), reconstruction MSEs (B,), shared mask channels (B,)
    (the same for every example of a batch; the mask's size in `mask_channels`)."""
    b = output.logits.shape[0]
    out = {}
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

  def report(self, predictions):
    labels = predictions["label"]
    num_classes = predictions["logits"].shape[-1]
    recall = metrics_lib.per_class_accuracy(labels, predictions["logits"], num_classes)
    report = {f"accuracy_class_{i}": float(r) for i, r in enumerate(recall) if np.isfinite(r)}
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

  def write(self, ctx: EvalContext) -> None:
    """Saves the mask and a few reconstructions as PNGs under <workdir>/pictures/ (chief only)."""
    count = min(self.settings.num_pictures, len(ctx.sample["label"]))

    def pictures(model: nnx.Module, sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
      inputs = {k: jnp.asarray(v[:count]) for k, v in model_inputs(sample).items()}
      return jax.tree.map(np.asarray, _picture_pass(model, inputs))

    result = ctx.apply(pictures)  # On every process: the model's arrays may span hosts.
    if not ctx.is_chief or not result:
      return
    folder = workdir_lib.folder(workdir_lib.pictures(ctx.workdir))
    stem = os.path.join(folder, f"{ctx.split}_epoch{ctx.epoch + 1:03d}")
    threshold = float(model_kwargs(self.config).get("threshold", 5e-3))
    if "mask" in result:
      save_mask(f"{stem}_mask.png", result["mask"], result["mask_thresholded"], threshold)
    if "recon_audio" in result:
      sample = {k: np.asarray(v[:count]) for k, v in ctx.sample.items()}
      save_reconstructions(
          f"{stem}_reconstructions.png", sample["audio"], result["recon_audio"],
          np.asarray(visual_target(sample)), result["recon_visual"],
          tuple(self.config.input.mean), tuple(self.config.input.std))


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
