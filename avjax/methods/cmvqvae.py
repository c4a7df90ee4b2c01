"""`cmvqvae`: CM-VQVAE's training objective (CyberAgentAILab/CM-VQVAE main.py).

  L = MSE(x_visual_hat, x_visual) + MSE(x_audio_hat, x_audio) + CE(logits, y)
      + VQ_visual + VQ_audio + mask_weight * sum_c m_c

(main.py L194-202; `mask_weight` 1e-4, the reference's `regularization=True`; the regulariser is the
sum of the RAW mask values, not of their absolute values). MSEs are means over all elements of the
global batch; x_visual is the single frame (B,S,S,3) the model reads. Terms the configured ablation
does not have (model.cmvqvae.ablation 1, 3 and 4 reconstruct nothing; 1, 2 and 4 have no mask) are 0,
as in the reference. Model selection: lowest validation CE (config.train.best_metric 'loss', mode
'min'; `loss` in evaluation reports is the fused CE).

Evaluation (codebook, reconstruction and mask statistics, pictures) is the `cmvqvae` evaluator
(avjax/evaluators/cmvqvae.py, config.evals.cmvqvae).

Config keys (config.method.*, defaults when absent): mask_weight (1e-4; 0 is the reference's
`regularization=False`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from avjax.methods import base
from avjax.methods.base import METHODS, Method, Metrics, StepContext, cross_entropy
from avjax.models.cmvqvae import (ABLATIONS, MASK_INITS, MODES, model_kwargs,
                                  reconstruction_errors)
from avjax.models.contract import ModelInfo
from avjax.models.outputs import MODALITIES, ModelOutput
from avjax.models.vq import THRESHOLD_FNS
from avjax.registry import ConfigError


@dataclasses.dataclass(frozen=True)
class CMVQVAESettings(base.Settings):
  """mask_weight: weight of the mask regulariser (1e-4: main.py's regularization=True; 0: its
  regularization=False)."""

  mask_weight: float = 1e-4

  def __post_init__(self):
    super().__post_init__()
    if not self.mask_weight >= 0:
      raise ConfigError(f"config.method.mask_weight={self.mask_weight!r} must be >= 0 (0: no "
                        "regulariser).")


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
