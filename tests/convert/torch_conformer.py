"""A PyTorch restatement of VAVL (net/avmodel.py) and its Conformer (sooftware/conformer layout),
written from /work/shared/reference/vavl_auxformer.md with the reference's module names.

One change, on purpose: the reference permutes the features to (T, B, D) before its batch-first
Conformer, so attention, relative positions and the depthwise conv run across the BATCH. Here the
Conformer gets (B, T, D): attention over time, as avjax (docs/deviations.md). Positions are the
reference's: sinusoids of absolute indices 0..T-1 through the relative shift, scores /
sqrt(d_model).
No padding (the reference has no masks).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Linear(nn.Module):
  """sooftware's Linear wrapper (the weight lives under `.linear`)."""

  def __init__(self, cin: int, cout: int, bias: bool = True):
    super().__init__()
    self.linear = nn.Linear(cin, cout, bias=bias)

  def forward(self, x):
    return self.linear(x)


class Residual(nn.Module):
  def __init__(self, module: nn.Module, factor: float = 1.0):
    super().__init__()
    self.module, self.factor = module, factor

  def forward(self, x):
    return self.module(x) * self.factor + x


class Swish(nn.Module):
  def forward(self, x):
    return x * torch.sigmoid(x)


class Transpose(nn.Module):
  def forward(self, x):
    return x.transpose(1, 2)


class PointwiseConv(nn.Module):
  def __init__(self, cin: int, cout: int):
    super().__init__()
    self.conv = nn.Conv1d(cin, cout, 1)

  def forward(self, x):
    return self.conv(x)


class DepthwiseConv(nn.Module):
  def __init__(self, channels: int, kernel: int):
    super().__init__()
    self.conv = nn.Conv1d(channels, channels, kernel, groups=channels, padding=(kernel - 1) // 2,
                          bias=False)

  def forward(self, x):
    return self.conv(x)


class FeedForward(nn.Module):
  def __init__(self, d: int, p: float):
    super().__init__()
    self.sequential = nn.Sequential(nn.LayerNorm(d), Linear(d, 4 * d), Swish(), nn.Dropout(p),
                                    Linear(4 * d, d), nn.Dropout(p))

  def forward(self, x):
    return self.sequential(x)


class ConvModule(nn.Module):
  def __init__(self, d: int, kernel: int, p: float):
    super().__init__()
    self.sequential = nn.Sequential(nn.LayerNorm(d), Transpose(), PointwiseConv(d, 2 * d),
                                    nn.GLU(dim=1), DepthwiseConv(d, kernel), nn.BatchNorm1d(d),
                                    Swish(), PointwiseConv(d, d), nn.Dropout(p))

  def forward(self, x):
    return self.sequential(x).transpose(1, 2)


class RelativeAttention(nn.Module):
  def __init__(self, d: int, heads: int, p: float):
    super().__init__()
    self.d, self.heads, self.dh = d, heads, d // heads
    self.query_proj, self.key_proj, self.value_proj = Linear(d, d), Linear(d, d), Linear(d, d)
    self.pos_proj = Linear(d, d, bias=False)
    self.out_proj = Linear(d, d)
    self.u_bias = nn.Parameter(torch.randn(heads, self.dh))
    self.v_bias = nn.Parameter(torch.randn(heads, self.dh))
    self.dropout = nn.Dropout(p)

  @staticmethod
  def shift(scores):
    b, h, t1, t2 = scores.shape
    padded = torch.cat([scores.new_zeros(b, h, t1, 1), scores], dim=-1)
    return padded.view(b, h, t2 + 1, t1)[:, :, 1:].reshape(b, h, t1, t2)

  def forward(self, x, pos):
    b, t, _ = x.shape
    q = self.query_proj(x).view(b, t, self.heads, self.dh)
    k = self.key_proj(x).view(b, t, self.heads, self.dh).permute(0, 2, 1, 3)
    v = self.value_proj(x).view(b, t, self.heads, self.dh).permute(0, 2, 1, 3)
    p = self.pos_proj(pos).view(1, t, self.heads, self.dh)
    content = torch.matmul((q + self.u_bias).transpose(1, 2), k.transpose(2, 3))
    position = self.shift(torch.matmul((q + self.v_bias).transpose(1, 2), p.permute(0, 2, 3, 1)))
    attn = self.dropout(F.softmax((content + position) / math.sqrt(self.d), -1))
    return self.out_proj(torch.matmul(attn, v).transpose(1, 2).reshape(b, t, self.d))


def positional_encoding(length: int, d: int) -> torch.Tensor:
  """Sinusoids of absolute positions 0..length-1 (sooftware's PositionalEncoding)."""
  pos = torch.arange(length, dtype=torch.float32)[:, None]
  div = torch.exp(torch.arange(0, d, 2).float() * -(math.log(10000.0) / d))
  pe = torch.zeros(length, d)
  pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
  return pe


class AttentionModule(nn.Module):
  def __init__(self, d: int, heads: int, p: float):
    super().__init__()
    self.layer_norm = nn.LayerNorm(d)
    self.attention = RelativeAttention(d, heads, p)
    self.dropout = nn.Dropout(p)

  def forward(self, x):
    pos = positional_encoding(x.shape[1], x.shape[2])
    return self.dropout(self.attention(self.layer_norm(x), pos))


class ConformerBlock(nn.Module):
  def __init__(self, d: int, heads: int, kernel: int, p: float):
    super().__init__()
    self.sequential = nn.Sequential(
        Residual(FeedForward(d, p), 0.5), Residual(AttentionModule(d, heads, p)),
        Residual(ConvModule(d, kernel, p)), Residual(FeedForward(d, p), 0.5), nn.LayerNorm(d))

  def forward(self, x):
    return self.sequential(x)


class Conformer(nn.Module):
  """VAVL's Conformer(input_dim, encoder_dim, num_encoder_layers): input projection + blocks."""

  def __init__(self, cin: int, d: int, layers: int, heads: int, kernel: int, p: float):
    super().__init__()
    self.encoder = nn.Module()
    self.encoder.input_projection = nn.Sequential(Linear(cin, d), nn.Dropout(p))
    self.encoder.layers = nn.ModuleList([ConformerBlock(d, heads, kernel, p)
                                         for _ in range(layers)])

  def forward(self, x):
    x = self.encoder.input_projection(x)
    for layer in self.encoder.layers:
      x = layer(x)
    return x


class Branch(nn.Module):
  """Acoustic / Visual: Conv1d k=1 (no bias) then a Conformer, over TIME (B, T, D)."""

  def __init__(self, conv_name: str, conformer_name: str, cin: int, proj: int, d: int,
               layers: int, heads: int, kernel: int, p: float):
    super().__init__()
    self.conv_name, self.conformer_name = conv_name, conformer_name
    setattr(self, conv_name, nn.Conv1d(cin, proj, 1, bias=False))
    setattr(self, conformer_name, Conformer(proj, d, layers, heads, kernel, p))

  def forward(self, x):  # (B, T, cin)
    y = getattr(self, self.conv_name)(x.transpose(1, 2)).transpose(1, 2)
    return getattr(self, self.conformer_name)(y)


class Shared(nn.Module):
  def __init__(self, d: int, layers: int, heads: int, kernel: int, p: float):
    super().__init__()
    self.x_shared = Conformer(d, d, layers, heads, kernel, p)
    self.layer_norm = nn.LayerNorm(d)

  def forward(self, x):
    return self.layer_norm(self.x_shared(x) + x).mean(dim=1)


class MLP(nn.Module):
  def __init__(self, cin: int, hidden: tuple[int, int], cout: int, p: float):
    super().__init__()
    self.projav1, self.projav2 = nn.Linear(cin, hidden[0]), nn.Linear(hidden[0], hidden[1])
    self.out_layer = nn.Linear(hidden[1], cout)
    self.p = p

  def forward(self, x):
    return self.out_layer(self.projav2(F.dropout(F.relu(self.projav1(x)), self.p, self.training)))


class VAVL(nn.Module):
  """The modelWrapper's modules under their attribute names (one state dict with prefixes)."""

  def __init__(self, *, outputs: int, audio_dim: int, visual_dim: int, proj: int, d: int,
               heads: int, kernel: int, blocks: tuple[int, int, int], hidden: tuple[int, int],
               p: float = 0.0):
    super().__init__()
    self.acoustic_model = Branch("conv_1d_a", "x_acoustic", audio_dim, proj, d, blocks[0], heads,
                                 kernel, p)
    self.visual_model = Branch("conv_1d_v", "x_visual", visual_dim, proj, d, blocks[1], heads,
                               kernel, p)
    self.shared_model = Shared(d, blocks[2], heads, kernel, p)
    self.MLP_a, self.MLP_v = MLP(d, hidden, outputs, p), MLP(d, hidden, outputs, p)
    self.MLP_rec_a = MLP(d, hidden, audio_dim, p)
    self.MLP_rec_v = MLP(d, hidden, visual_dim, p)
    self.weights = MLP(2 * d, hidden, outputs, p)

  def forward(self, xa, xv):
    rep_a = self.shared_model(self.acoustic_model(xa))
    rep_v = self.shared_model(self.visual_model(xv))
    return {"logits": self.weights(torch.cat([rep_a, rep_v], 1)), "audio": self.MLP_a(rep_a),
            "visual": self.MLP_v(rep_v), "rep_audio": rep_a}


def randomize(model: nn.Module, seed: int) -> nn.Module:
  """Random weights and BatchNorm statistics (so eval mode tests the running statistics)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, tensor in model.state_dict().items():
      if name.endswith("num_batches_tracked"):
        continue
      if name.endswith("running_var"):
        tensor.copy_(0.5 + torch.rand(tensor.shape, generator=g))
      else:
        tensor.copy_(0.3 * torch.randn(tensor.shape, generator=g))
  return model
