"""CM-VQVAE on CREMA-D: audio (256, 256, 1) mel in dB, one 128x128 frame, per-modality VQ-VAEs
(EMA codebooks K=512, D=64), decoders and the masked task solver, loss recon + CE + VQ + 1e-4 mask
sum, Adam 1e-3."""

from __future__ import annotations

from typing import Any, Callable

from benchlib import load_config
from vs_torch import common

NAME = "cmvqvae_cremad"
DESCRIPTION = " ".join(__doc__.split())
DEFAULT_BATCHES = (128,)  # The paper's (main.py batch_size).
OPTIONS = {"image_size": 128,  # Frames S x S; the spectrogram is 2S x 2S (both encode to S / 4).
           "num_hiddens": 128, "num_residual_hiddens": 32, "embedding_dim": 64,
           "num_embeddings": 512, "fc_hidden": 256,
           "channels_last": True,  # PyTorch side only: channels_last model and inputs.
           "compute_dtype": "float32"}  # 'bfloat16': avjax mixed precision / torch.autocast.
TINY_OPTS = {"image_size": 32, "num_hiddens": 16, "num_residual_hiddens": 8, "embedding_dim": 8,
             "num_embeddings": 32, "fc_hidden": 32}  # As the config's smoke sizes.
NUM_CLASSES = 6
SIZE_KEYS = ("num_hiddens", "num_residual_hiddens", "embedding_dim", "num_embeddings", "fc_hidden")


def config_for(batch: int, opts: dict) -> Any:
  """configs/cmvqvae_cremad.py with the case's sizes (latent maps image_size / 4)."""
  config = load_config("cmvqvae_cremad")
  s = opts["image_size"]
  config.input.image_size = s
  config.model.cmvqvae.update({k: opts[k] for k in SIZE_KEYS})
  config.model.cmvqvae.latent_size = (-(-s // 4), -(-s // 4))
  config.train.batch_size = batch
  config.train.compute_dtype = opts["compute_dtype"]
  return config


def make_data(batch: int, opts: dict) -> dict[str, Any]:
  """Random inputs as the avjax pipeline feeds them (numpy, NHWC): 'audio' (B, 2S, 2S, 1) dB-like
  values N(-40, 20^2), 'visual' (B, 1, S, S, 3) frames in [0, 1], 'label' (B,) int32."""
  import numpy as np

  rng = np.random.default_rng(0)
  s = opts["image_size"]
  return {
      "audio": (rng.standard_normal((batch, 2 * s, 2 * s, 1), np.float32) * 20 - 40),
      "visual": rng.uniform(0.0, 1.0, (batch, 1, s, s, 3)).astype(np.float32),
      "label": rng.integers(0, NUM_CLASSES, batch).astype(np.int32),
  }


def avjax_step(batch: int, opts: dict) -> Callable[[], Any]:
  """The trainer's jitted CM-VQVAE step (method cmvqvae) on random inputs."""
  return common.avjax_train_step(config_for(batch, opts), NUM_CLASSES, make_data(batch, opts))


def torch_step(batch: int, opts: dict, compile_: bool, device: str) -> Callable[[], Any]:
  """The reference's training step (main.py L180-205) on the restatement (base_type 0, EMA VQ):

    L = MSE(x_image_hat, x_image) + MSE(x_audio_hat, x_audio) + CE(logits, y) + VQ_image
        + VQ_audio + 1e-4 * sum(mask)

  backward, one Adam(1e-3) step over model.parameters() (the EMA codebooks get no gradient and
  update in the forward pass, as there). The reference's per-step .item() logging is left out.
  """
  import torch
  import torch.nn.functional as F

  from avjax.models.cmvqvae import head_positions
  from tests.convert import torch_cmvqvae as ref

  torch.manual_seed(0)
  config = config_for(batch, opts)
  c = config.model.cmvqvae
  model = ref.Model(NUM_CLASSES, c.num_hiddens, c.num_residual_hiddens, c.num_residual_layers,
                    c.num_embeddings, c.embedding_dim, c.decay, head_positions(c.latent_size),
                    c.fc_hidden, c.commitment_cost).to(device)
  data = make_data(batch, opts)
  # NHWC numpy -> NCHW tensors (memory laid out channels-last when asked: no copy then).
  image = torch.from_numpy(data["visual"][:, 0]).to(device).permute(0, 3, 1, 2)
  audio = torch.from_numpy(data["audio"]).to(device).permute(0, 3, 1, 2)
  label = torch.from_numpy(data["label"]).to(device).long()
  layout = common.torch_layout(opts, device)
  model = model.to(memory_format=layout)
  image, audio = image.contiguous(memory_format=layout), audio.contiguous(memory_format=layout)
  opt = torch.optim.Adam(model.parameters(), lr=config.optimizer.learning_rate)
  mask_weight = config.method.mask_weight
  forward = torch.compile(model) if compile_ else model

  def step():
    model.train()
    opt.zero_grad(set_to_none=True)
    with common.torch_autocast(opts, device):
      vq_i, vq_a, recon_i, recon_a, mask_sum, logits, _, _ = forward(image, audio)
    recon_i, recon_a, logits = recon_i.float(), recon_a.float(), logits.float()
    loss = (F.mse_loss(recon_i, image) + F.mse_loss(recon_a, audio) + F.cross_entropy(logits, label)
            + vq_i + vq_a + mask_weight * mask_sum)
    loss.backward()
    opt.step()
    return loss.detach()

  return step
