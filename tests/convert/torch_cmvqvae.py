"""A PyTorch restatement of CM-VQVAE's model.py (VQ-EMA / plain quantizers, pre-activation residual
stacks, encoders, decoders, the masked task solver), written from /work/shared/reference/cm_vqvae.md
with the reference's module and parameter names, NCHW. Used only by the parity tests.

`Model(...)(image (B,3,S,S), audio (B,1,F,T))` returns (vq_image, vq_audio, recon_image, recon_audio,
mask_sum, logits, perplexity_image, perplexity_audio), as the reference's `Model.forward`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class VectorQuantizerEMA(nn.Module):
  """EMA codebook: nearest code, EMA counts with Laplace smoothing and sums (training only),
  commitment loss, straight-through output, batch perplexity."""

  def __init__(self, num_embeddings: int, embedding_dim: int, commitment_cost: float, decay: float,
               epsilon: float = 1e-5):
    super().__init__()
    self.k, self.d, self.beta, self.decay, self.eps = (num_embeddings, embedding_dim,
                                                       commitment_cost, decay, epsilon)
    self._embedding = nn.Embedding(num_embeddings, embedding_dim)
    self._embedding.weight.data.normal_()
    self.register_buffer("_ema_cluster_size", torch.zeros(num_embeddings))
    self._ema_w = nn.Parameter(torch.randn(num_embeddings, embedding_dim))

  def forward(self, z: torch.Tensor):
    z = z.permute(0, 2, 3, 1).contiguous()
    flat = z.reshape(-1, self.d)
    codebook = self._embedding.weight
    dist = (flat.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1)
            - 2 * flat @ codebook.t())
    onehot = F.one_hot(dist.argmin(1), self.k).float()
    q = (onehot @ codebook).view(z.shape)
    if self.training:
      with torch.no_grad():
        n = self._ema_cluster_size * self.decay + (1 - self.decay) * onehot.sum(0)
        total = n.sum()
        n = (n + self.eps) / (total + self.k * self.eps) * total
        self._ema_cluster_size.copy_(n)
        self._ema_w.data = self._ema_w.data * self.decay + (1 - self.decay) * (onehot.t() @ flat)
        self._embedding.weight.data = self._ema_w.data / n.unsqueeze(1)
    loss = self.beta * F.mse_loss(q.detach(), z)
    q = z + (q - z).detach()
    p = onehot.mean(0)
    perplexity = torch.exp(-(p * torch.log(p + 1e-10)).sum())
    return loss, q.permute(0, 3, 1, 2).contiguous(), perplexity


class VectorQuantizer(nn.Module):
  """Trainable codebook U(+-1/K): codebook + beta * commitment loss."""

  def __init__(self, num_embeddings: int, embedding_dim: int, commitment_cost: float):
    super().__init__()
    self.k, self.d, self.beta = num_embeddings, embedding_dim, commitment_cost
    self._embedding = nn.Embedding(num_embeddings, embedding_dim)
    self._embedding.weight.data.uniform_(-1 / num_embeddings, 1 / num_embeddings)

  def forward(self, z: torch.Tensor):
    z = z.permute(0, 2, 3, 1).contiguous()
    flat = z.reshape(-1, self.d)
    codebook = self._embedding.weight
    dist = (flat.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1)
            - 2 * flat @ codebook.t())
    onehot = F.one_hot(dist.argmin(1), self.k).float()
    q = (onehot @ codebook).view(z.shape)
    loss = F.mse_loss(q, z.detach()) + self.beta * F.mse_loss(q.detach(), z)
    q = z + (q - z).detach()
    p = onehot.mean(0)
    return loss, q.permute(0, 3, 1, 2).contiguous(), torch.exp(-(p * torch.log(p + 1e-10)).sum())


class Residual(nn.Module):
  def __init__(self, channels: int, hidden: int):
    super().__init__()
    self._block = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(),
                                nn.Conv2d(channels, hidden, 3, 1, 1, bias=False),
                                nn.BatchNorm2d(hidden), nn.ReLU(),
                                nn.Conv2d(hidden, channels, 1, 1, bias=False))

  def forward(self, x):
    return x + self._block(x)


class ResidualStack(nn.Module):
  def __init__(self, channels: int, hidden: int, layers: int):
    super().__init__()
    self._layers = nn.ModuleList([Residual(channels, hidden) for _ in range(layers)])
    self._bn = nn.BatchNorm2d(channels)

  def forward(self, x):
    for layer in self._layers:
      x = layer(x)
    return F.relu(self._bn(x))


class Encoder(nn.Module):
  def __init__(self, cin: int, h: int, layers: int, r: int, max_pool: bool):
    super().__init__()
    self._conv_1 = nn.Conv2d(cin, h // 2, 4, 2, 1)
    self._bn_1 = nn.BatchNorm2d(h // 2)
    self._conv_2 = nn.Conv2d(h // 2, h, 4, 2, 1)
    self._bn_2 = nn.BatchNorm2d(h)
    self._conv_3 = nn.Conv2d(h, h, 3, 1, 1)
    self.pool = nn.MaxPool2d(3, 2, 1) if max_pool else nn.Identity()
    self._residual_stack = ResidualStack(h, r, layers)

  def forward(self, x):
    x = F.relu(self._bn_1(self._conv_1(x)))
    x = F.relu(self._bn_2(self._conv_2(x)))
    return self._residual_stack(self.pool(self._conv_3(x)))


class DecoderImage(nn.Module):
  def __init__(self, d: int, cout: int, h: int, layers: int, r: int):
    super().__init__()
    self._conv_1 = nn.Conv2d(d, h, 3, 1, 1)
    self._residual_stack = ResidualStack(h, r, layers)
    self._conv_trans_1 = nn.ConvTranspose2d(h, h // 2, 4, 2, 1)
    self._bn = nn.BatchNorm2d(h // 2)
    self._conv_trans_2 = nn.ConvTranspose2d(h // 2, cout, 4, 2, 1)

  def forward(self, x):
    x = self._residual_stack(self._conv_1(x))
    return self._conv_trans_2(F.relu(self._bn(self._conv_trans_1(x))))


class DecoderAudio(nn.Module):
  def __init__(self, d: int, cout: int, h: int, layers: int, r: int):
    super().__init__()
    self._conv_1 = nn.Conv2d(d, h, 3, 1, 1)
    self._residual_stack = ResidualStack(h, r, layers)
    self._conv_trans_1 = nn.ConvTranspose2d(h, h // 2, 4, 2, 1)
    self._bn_1 = nn.BatchNorm2d(h // 2)
    self._conv_trans_2 = nn.ConvTranspose2d(h // 2, h // 4, 4, 2, 1)
    self._bn_2 = nn.BatchNorm2d(h // 4)
    self._conv_trans_3 = nn.ConvTranspose2d(h // 4, cout, 4, 2, 1)

  def forward(self, x):
    x = self._residual_stack(self._conv_1(x))
    x = F.relu(self._bn_1(self._conv_trans_1(x)))
    x = F.relu(self._bn_2(self._conv_trans_2(x)))
    return self._conv_trans_3(x)


class Binarizer(torch.autograd.Function):
  """1[m > t] forward, identity backward."""

  @staticmethod
  def forward(ctx, mask, threshold):
    return (mask > threshold).to(mask.dtype)

  @staticmethod
  def backward(ctx, grad):
    return grad, None


class TaskSolver(nn.Module):
  """Binarized channel mask on concat(q_image, q_audio), then the classification head."""

  def __init__(self, d: int, classes: int, r: int, layers: int, positions: int, fc_hidden: int,
               mask_scale: float = 1e-2, threshold: float = 5e-3):
    super().__init__()
    w = d // 2
    self.threshold = threshold
    self._conv1 = nn.Conv2d(2 * d, w, 3, 2, 1)
    self._bn_1 = nn.BatchNorm2d(w)
    self._conv2 = nn.Conv2d(w, w, 3, 2, 1)
    self._conv_drop = nn.Dropout()
    self._residual_stack = ResidualStack(w, max(r // 4, 1), layers)
    self._fc1 = nn.Linear(w * positions, fc_hidden)
    self._bn_2 = nn.BatchNorm1d(fc_hidden)
    self._fc2 = nn.Linear(fc_hidden, classes)
    self.private_shared_mask = nn.Parameter(torch.full((2 * d, 1, 1), mask_scale))

  def forward(self, x):
    x = x * Binarizer.apply(self.private_shared_mask, self.threshold)
    x = F.relu(self._bn_1(self._conv1(x)))
    x = self._residual_stack(self._conv_drop(self._conv2(x)))
    x = F.relu(self._bn_2(self._fc1(x.reshape(x.shape[0], -1))))
    return self.private_shared_mask.sum(), self._fc2(F.dropout(x, training=self.training))


class Model(nn.Module):
  """The proposed model (base_type 0), 'multimodal' mode."""

  def __init__(self, classes: int, h: int, r: int, layers: int, k: int, d: int, decay: float,
               positions: int, fc_hidden: int, commitment_cost: float = 0.25):
    super().__init__()
    self._encoder_image = Encoder(3, h, layers, r, max_pool=False)
    self._encoder_audio = Encoder(1, h, layers, r, max_pool=True)
    self._decoder_image = DecoderImage(d, 3, h, layers, r)
    self._decoder_audio = DecoderAudio(d, 1, h, layers, r)
    self._pre_vq_conv_image = nn.Conv2d(h, d, 1, 1)
    self._pre_vq_conv_audio = nn.Conv2d(h, d, 1, 1)
    if decay > 0:
      self._vq_vae_image = VectorQuantizerEMA(k, d, commitment_cost, decay)
      self._vq_vae_audio = VectorQuantizerEMA(k, d, commitment_cost, decay)
    else:
      self._vq_vae_image = VectorQuantizer(k, d, commitment_cost)
      self._vq_vae_audio = VectorQuantizer(k, d, commitment_cost)
    self._classifier = TaskSolver(d, classes, r, layers, positions, fc_hidden)

  def forward(self, image, audio):
    loss_i, q_i, perp_i = self._vq_vae_image(self._pre_vq_conv_image(self._encoder_image(image)))
    loss_a, q_a, perp_a = self._vq_vae_audio(self._pre_vq_conv_audio(self._encoder_audio(audio)))
    mask_sum, logits = self._classifier(torch.cat((q_i, q_a), dim=1))
    return (loss_i, loss_a, self._decoder_image(q_i), self._decoder_audio(q_a), mask_sum, logits,
            perp_i, perp_a)


def randomize(model: nn.Module, seed: int) -> nn.Module:
  """Random BN affine parameters and running statistics (so their conversion is tested)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
        m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
        m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
        m.running_var.copy_(1 + 0.2 * torch.rand(m.running_var.shape, generator=g))
  return model
