"""A PyTorch restatement of VAVL (net/avmodel.py) and its Conformer (sooftware/conformer layout),
written from /work/shared/reference/vavl_auxformer.md with the reference's module names.

One change, on purpose: the reference permutes the features to (T, B, D) before its batch-first
Conformer, so attention, relative positions and the depthwise conv run across the BATCH. Here the
Conformer gets (B, T, D): attention over time, as avjax (docs/deviations.md). Positions default to
the reference's (rel_pos='reference': sinusoids of absolute indices 0..T-1 through the relative
shift); rel_pos='transformer_xl' uses avjax's default (distances T-1..-(T-1)). Scores are divided
by sqrt(d_model).

Padding masks (B, T) (1 = frame) are optional everywhere (the reference has none); given, they act
as avjax's: padded keys get no attention, padded frames are zeroed before the depthwise conv and
left out of BatchNorm's batch statistics, and the shared encoder's time-mean reads valid frames
only. Without them the modules compute exactly the unmasked restatement.
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

  def forward(self, x, *args):
    return self.module(x, *args) * self.factor + x


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


def masked_batch_norm(bn: nn.BatchNorm1d, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
  """BatchNorm1d on x (B, C, T) with batch statistics over the valid frames of mask (B, T) only
  (training; running statistics updated as torch does, unbiased variance); eval: plain `bn`."""
  if not bn.training:
    return bn(x)
  m = mask[:, None, :].to(x.dtype)
  n = m.sum() * 1.0
  mean = (x * m).sum((0, 2)) / n
  var = ((x - mean[None, :, None]).square() * m).sum((0, 2)) / n
  with torch.no_grad():
    bn.num_batches_tracked.add_(1)
    bn.running_mean.mul_(1 - bn.momentum).add_(bn.momentum * mean)
    bn.running_var.mul_(1 - bn.momentum).add_(bn.momentum * var * n / (n - 1).clamp(min=1))
  scale = bn.weight * torch.rsqrt(var + bn.eps)
  return x * scale[None, :, None] + (bn.bias - mean * scale)[None, :, None]


class ConvModule(nn.Module):
  def __init__(self, d: int, kernel: int, p: float):
    super().__init__()
    self.sequential = nn.Sequential(nn.LayerNorm(d), Transpose(), PointwiseConv(d, 2 * d),
                                    nn.GLU(dim=1), DepthwiseConv(d, kernel), nn.BatchNorm1d(d),
                                    Swish(), PointwiseConv(d, d), nn.Dropout(p))

  def forward(self, x, mask=None):
    if mask is None:
      return self.sequential(x).transpose(1, 2)
    s = self.sequential
    y = s[3](s[2](s[1](s[0](x)))) * mask[:, None, :].to(x.dtype)  # (B, d, T), padding zeroed.
    y = masked_batch_norm(s[5], s[4](y), mask)
    return s[8](s[7](s[6](y))).transpose(1, 2)


class RelativeAttention(nn.Module):
  def __init__(self, d: int, heads: int, p: float, rel_pos: str = "reference"):
    super().__init__()
    if rel_pos not in ("reference", "transformer_xl"):
      raise ValueError(f"rel_pos={rel_pos!r}: 'reference' or 'transformer_xl'.")
    self.d, self.heads, self.dh, self.rel_pos = d, heads, d // heads, rel_pos
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

  def forward(self, x, mask=None):
    """x (B, T, d), mask (B, T) or None -> (B, T, d)."""
    b, t, _ = x.shape
    if self.rel_pos == "reference":  # Absolute indices through the shift (sooftware's version).
      positions = torch.arange(t, device=x.device)
    else:  # Relative distances T-1 .. -(T-1); the shift then keeps the first T columns.
      positions = torch.arange(t - 1, -t, -1, device=x.device)
    q = self.query_proj(x).view(b, t, self.heads, self.dh)
    k = self.key_proj(x).view(b, t, self.heads, self.dh).permute(0, 2, 1, 3)
    v = self.value_proj(x).view(b, t, self.heads, self.dh).permute(0, 2, 1, 3)
    pos = positional_encoding(positions, self.d).to(x.dtype)
    p = self.pos_proj(pos).view(1, -1, self.heads, self.dh)
    content = torch.matmul((q + self.u_bias).transpose(1, 2), k.transpose(2, 3))
    position = self.shift(torch.matmul((q + self.v_bias).transpose(1, 2), p.permute(0, 2, 3, 1)))
    scores = (content + position[..., :t]) / math.sqrt(self.d)
    if mask is not None:
      scores = scores.masked_fill(mask[:, None, None, :] <= 0, -1e9)
    attn = self.dropout(F.softmax(scores, -1))
    return self.out_proj(torch.matmul(attn, v).transpose(1, 2).reshape(b, t, self.d))


def positional_encoding(positions: torch.Tensor, d: int) -> torch.Tensor:
  """Sinusoids of (N,) positions -> (N, d): sin at even, cos at odd channels (sooftware's
  PositionalEncoding of absolute indices when positions = 0..N-1)."""
  div = torch.exp(torch.arange(0, d, 2, device=positions.device).float() *
                  -(math.log(10000.0) / d))
  angles = positions.float()[:, None] * div
  return torch.stack([torch.sin(angles), torch.cos(angles)], -1).reshape(len(positions), d)


class AttentionModule(nn.Module):
  def __init__(self, d: int, heads: int, p: float, rel_pos: str = "reference"):
    super().__init__()
    self.layer_norm = nn.LayerNorm(d)
    self.attention = RelativeAttention(d, heads, p, rel_pos)
    self.dropout = nn.Dropout(p)

  def forward(self, x, mask=None):
    return self.dropout(self.attention(self.layer_norm(x), mask))


class ConformerBlock(nn.Module):
  def __init__(self, d: int, heads: int, kernel: int, p: float, rel_pos: str = "reference"):
    super().__init__()
    self.sequential = nn.Sequential(
        Residual(FeedForward(d, p), 0.5), Residual(AttentionModule(d, heads, p, rel_pos)),
        Residual(ConvModule(d, kernel, p)), Residual(FeedForward(d, p), 0.5), nn.LayerNorm(d))

  def forward(self, x, mask=None):
    s = self.sequential
    return s[4](s[3](s[2](s[1](s[0](x), mask), mask)))


class Conformer(nn.Module):
  """VAVL's Conformer(input_dim, encoder_dim, num_encoder_layers): input projection + blocks."""

  def __init__(self, cin: int, d: int, layers: int, heads: int, kernel: int, p: float,
               rel_pos: str = "reference"):
    super().__init__()
    self.encoder = nn.Module()
    self.encoder.input_projection = nn.Sequential(Linear(cin, d), nn.Dropout(p))
    self.encoder.layers = nn.ModuleList([ConformerBlock(d, heads, kernel, p, rel_pos)
                                         for _ in range(layers)])

  def forward(self, x, mask=None):
    x = self.encoder.input_projection(x)
    for layer in self.encoder.layers:
      x = layer(x, mask)
    return x


class Branch(nn.Module):
  """Acoustic / Visual: Conv1d k=1 (no bias) then a Conformer, over TIME (B, T, D)."""

  def __init__(self, conv_name: str, conformer_name: str, cin: int, proj: int, d: int,
               layers: int, heads: int, kernel: int, p: float, rel_pos: str = "reference"):
    super().__init__()
    self.conv_name, self.conformer_name = conv_name, conformer_name
    setattr(self, conv_name, nn.Conv1d(cin, proj, 1, bias=False))
    setattr(self, conformer_name, Conformer(proj, d, layers, heads, kernel, p, rel_pos))

  def forward(self, x, mask=None):  # (B, T, cin), (B, T)
    y = getattr(self, self.conv_name)(x.transpose(1, 2)).transpose(1, 2)
    return getattr(self, self.conformer_name)(y, mask)


def masked_mean(x: torch.Tensor, mask=None) -> torch.Tensor:
  """Mean over time of x (B, T, D): all frames, or the valid ones of mask (B, T) (0 if none)."""
  if mask is None:
    return x.mean(dim=1)
  m = mask.to(x.dtype)[..., None]
  return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


class Shared(nn.Module):
  def __init__(self, d: int, layers: int, heads: int, kernel: int, p: float,
               rel_pos: str = "reference"):
    super().__init__()
    self.x_shared = Conformer(d, d, layers, heads, kernel, p, rel_pos)
    self.layer_norm = nn.LayerNorm(d)

  def forward(self, x, mask=None):
    return masked_mean(self.layer_norm(self.x_shared(x, mask) + x), mask)


class MLP(nn.Module):
  def __init__(self, cin: int, hidden: tuple[int, int], cout: int, p: float):
    super().__init__()
    self.projav1, self.projav2 = nn.Linear(cin, hidden[0]), nn.Linear(hidden[0], hidden[1])
    self.out_layer = nn.Linear(hidden[1], cout)
    self.p = p

  def forward(self, x):
    return self.out_layer(self.projav2(F.dropout(F.relu(self.projav1(x)), self.p, self.training)))


class VAVL(nn.Module):
  """The modelWrapper's modules under their attribute names (one state dict with prefixes).

  `p`: the Conformers' dropout; `head_p` the MLP heads' (the reference's --out_dropout; None: p).
  """

  def __init__(self, *, outputs: int, audio_dim: int, visual_dim: int, proj: int, d: int,
               heads: int, kernel: int, blocks: tuple[int, int, int], hidden: tuple[int, int],
               p: float = 0.0, head_p: float | None = None, rel_pos: str = "reference"):
    super().__init__()
    hp = p if head_p is None else head_p
    self.acoustic_model = Branch("conv_1d_a", "x_acoustic", audio_dim, proj, d, blocks[0], heads,
                                 kernel, p, rel_pos)
    self.visual_model = Branch("conv_1d_v", "x_visual", visual_dim, proj, d, blocks[1], heads,
                               kernel, p, rel_pos)
    self.shared_model = Shared(d, blocks[2], heads, kernel, p, rel_pos)
    self.MLP_a, self.MLP_v = MLP(d, hidden, outputs, hp), MLP(d, hidden, outputs, hp)
    self.MLP_rec_a = MLP(d, hidden, audio_dim, hp)
    self.MLP_rec_v = MLP(d, hidden, visual_dim, hp)
    self.weights = MLP(2 * d, hidden, outputs, hp)

  def forward(self, xa, xv, mask_a=None, mask_v=None):
    rep_a = self.shared_model(self.acoustic_model(xa, mask_a), mask_a)
    rep_v = self.shared_model(self.visual_model(xv, mask_v), mask_v)
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
