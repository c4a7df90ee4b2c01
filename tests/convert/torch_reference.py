"""A PyTorch restatement of the reference AVClassifier (OGM-GE / MMCosine), written from the notes in
/work/shared/reference/ogm_ge_mmcosine.md, with the reference's module and parameter names.

  audio (B, 1, F, T) -> audio_net -> (B, D, h, w) -> mean over (h, w)        -> a (B, D)
  visual (B, C, T, H, W) -> fold to (B*T, C, H, W) -> visual_net -> (B, T, D, h, w)
                         -> mean over (T, h, w)                              -> v (B, D)
  fusion_module(a, v) -> (x_out, y_out, logits)  (what each reference fusion returns)

`unimodal_logits` computes the per-modality logits: the reference's definitions where it has them
(sum, concat-like slicing, cosine head) and avjax's documented ones for the asymmetric OGM-GE FiLM /
gated forms (docs/deviations.md), restated here independently of avjax.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
  """torchvision BasicBlock: conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU."""

  def __init__(self, in_ch: int, out_ch: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(out_ch)
    self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(out_ch)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = None
    if stride != 1 or in_ch != out_ch:
      self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False),
                                      nn.BatchNorm2d(out_ch))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return self.relu(out + identity)


class ResNet18(nn.Module):
  """ResNet-18 trunk without pool / fc. modality 'visual' folds (B, C, T, H, W) to (B*T, C, H, W)."""

  def __init__(self, modality: str, in_channels: int, widths: Sequence[int] = (64, 128, 256, 512)):
    super().__init__()
    self.modality = modality
    self.conv1 = nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(widths[0])
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    in_ch = widths[0]
    for i, width in enumerate(widths):
      stride = 1 if i == 0 else 2
      setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(in_ch, width, stride),
                                                   BasicBlock(width, width, 1)))
      in_ch = width

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    if self.modality == "visual":
      b, c, t, h, w = x.size()
      x = x.permute(0, 2, 1, 3, 4).contiguous().view(b * t, c, h, w)
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class SumFusion(nn.Module):
  def __init__(self, dim: int, n: int):
    super().__init__()
    self.fc_x, self.fc_y = nn.Linear(dim, n), nn.Linear(dim, n)

  def forward(self, x, y):
    return x, y, self.fc_x(x) + self.fc_y(y)


class ConcatFusion(nn.Module):
  def __init__(self, dim: int, n: int):
    super().__init__()
    self.fc_out = nn.Linear(2 * dim, n)

  def forward(self, x, y):
    return x, y, self.fc_out(torch.cat((x, y), dim=1))


class FiLM(nn.Module):
  """OGM-GE FiLM: x_film=True -> audio gives [gamma, beta], visual is modulated."""

  def __init__(self, dim: int, n: int, x_film: bool = True):
    super().__init__()
    self.dim, self.x_film = dim, x_film
    self.fc = nn.Linear(dim, 2 * dim)
    self.fc_out = nn.Linear(dim, n)

  def forward(self, x, y):
    film, to_be_film = (x, y) if self.x_film else (y, x)
    gamma, beta = torch.split(self.fc(film), self.dim, 1)
    return x, y, self.fc_out(gamma * to_be_film + beta)


class GatedFusion(nn.Module):
  """OGM-GE gated: x_gate=True -> sigmoid(fc_x(a)) gates fc_y(v)."""

  def __init__(self, dim: int, n: int, x_gate: bool = True):
    super().__init__()
    self.x_gate = x_gate
    self.fc_x, self.fc_y = nn.Linear(dim, dim), nn.Linear(dim, dim)
    self.fc_out = nn.Linear(dim, n)

  def forward(self, x, y):
    out_x, out_y = self.fc_x(x), self.fc_y(y)
    if self.x_gate:
      out = self.fc_out(torch.sigmoid(out_x) * out_y)
    else:
      out = self.fc_out(out_x * torch.sigmoid(out_y))
    return out_x, out_y, out


class SymFiLM(nn.Module):
  """MMCosine symmetric FiLM: each modality modulates the other; fc_out reads [x_new; y_new]."""

  def __init__(self, dim: int, n: int):
    super().__init__()
    self.dim = dim
    self.fc_x, self.fc_y = nn.Linear(dim, 2 * dim), nn.Linear(dim, 2 * dim)
    self.fc_out = nn.Linear(2 * dim, n)

  def forward(self, x, y):
    g_x, b_x = torch.split(self.fc_x(x), self.dim, 1)
    g_y, b_y = torch.split(self.fc_y(y), self.dim, 1)
    x_new, y_new = g_y * x + b_y, g_x * y + b_x
    return x_new, y_new, self.fc_out(torch.cat((x_new, y_new), 1))


class SymGated(nn.Module):
  """MMCosine symmetric gated fusion."""

  def __init__(self, dim: int, n: int):
    super().__init__()
    self.fc_x, self.fc_y = nn.Linear(dim, dim), nn.Linear(dim, dim)
    self.fc_out = nn.Linear(2 * dim, n)

  def forward(self, x, y):
    o_x, o_y = self.fc_x(x), self.fc_y(y)
    x_new, y_new = torch.sigmoid(o_y) * o_x, torch.sigmoid(o_x) * o_y
    return x_new, y_new, self.fc_out(torch.cat((x_new, y_new), 1))


def make_fusion(fusion: str, form: str, condition: str, dim: int, n: int) -> nn.Module:
  """The reference fusion module matching avjax's (fusion, form, condition)."""
  if fusion == "sum":
    return SumFusion(dim, n)
  if fusion == "concat":
    return ConcatFusion(dim, n)
  if fusion == "film":
    return SymFiLM(dim, n) if form == "mmcosine" else FiLM(dim, n, x_film=condition == "audio")
  if fusion == "gated":
    return SymGated(dim, n) if form == "mmcosine" else GatedFusion(dim, n, x_gate=condition == "audio")
  raise ValueError(f"unknown fusion {fusion!r}")


class AVClassifier(nn.Module):
  """audio_net, visual_net, fusion_module; forward returns (x_out, y_out, fused logits)."""

  def __init__(self, n_classes: int, fusion: str = "concat", form: str = "ogm_ge",
               condition: str = "audio", widths: Sequence[int] = (64, 128, 256, 512),
               visual_channels: int = 3):
    super().__init__()
    self.fusion, self.form, self.condition = fusion, form, condition
    self.audio_net = ResNet18("audio", 1, widths)
    self.visual_net = ResNet18("visual", visual_channels, widths)
    self.fusion_module = make_fusion(fusion, form, condition, widths[-1], n_classes)

  def features(self, audio: torch.Tensor, visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a = self.audio_net(audio)
    v = self.visual_net(visual)
    _, c, h, w = v.size()
    v = v.view(a.size(0), -1, c, h, w).permute(0, 2, 1, 3, 4)
    a = torch.flatten(F.adaptive_avg_pool2d(a, 1), 1)
    v = torch.flatten(F.adaptive_avg_pool3d(v, 1), 1)
    return a, v

  def forward(self, audio: torch.Tensor, visual: torch.Tensor):
    a, v = self.features(audio, visual)
    return self.fusion_module(a, v)


def cosine(h: torch.Tensor, weight: torch.Tensor, scale: float) -> torch.Tensor:
  """MMCosine: s * <h / |h|, w_c / |w_c|>; weight (n, d) one class per row."""
  return scale * F.linear(F.normalize(h, dim=1), F.normalize(weight, dim=1))


def outputs(model: AVClassifier, audio: torch.Tensor, visual: torch.Tensor,
            cosine_scale: float | None = None) -> dict[str, torch.Tensor]:
  """Fused and per-modality logits {'logits', 'audio', 'visual'}, each (B, n)."""
  a, v = model.features(audio, visual)
  x_out, y_out, out = model.fusion_module(a, v)
  fm = model.fusion_module
  if model.fusion == "sum":
    if cosine_scale is not None:
      la, lv = cosine(a, fm.fc_x.weight, cosine_scale), cosine(v, fm.fc_y.weight, cosine_scale)
      return {"logits": la + lv, "audio": la, "visual": lv}
    return {"logits": out, "audio": fm.fc_x(a), "visual": fm.fc_y(v)}
  weight, bias = fm.fc_out.weight, fm.fc_out.bias
  if model.fusion == "concat" or model.form == "mmcosine":  # fc_out reads [x_out; y_out].
    d = weight.shape[1] // 2
    if cosine_scale is not None:
      la = cosine(x_out, weight[:, :d], cosine_scale)
      lv = cosine(y_out, weight[:, d:], cosine_scale)
      return {"logits": la + lv, "audio": la, "visual": lv}
    la = x_out @ weight[:, :d].t() + bias / 2
    lv = y_out @ weight[:, d:].t() + bias / 2
    return {"logits": out, "audio": la, "visual": lv}
  assert cosine_scale is None, "the asymmetric forms have no cosine head"
  # Asymmetric OGM-GE forms (avjax's definition): the conditioning modality c is scored by what it
  # alone puts into fc_out (FiLM: its shift beta; gated: its gate), the other one by its own vector
  # under the neutral modulation (FiLM: the feature itself; gated: its projection o_m), each + b/2.
  c_is_audio = model.condition == "audio"
  if model.fusion == "film":
    c_feat, m_feat = (a, v) if c_is_audio else (v, a)
    _, beta = torch.split(fm.fc(c_feat), fm.dim, 1)
    c_part, m_part = beta, m_feat
  else:
    c_part, m_part = ((torch.sigmoid(x_out), y_out) if c_is_audio
                      else (torch.sigmoid(y_out), x_out))
  l_c, l_m = F.linear(c_part, weight, bias / 2), F.linear(m_part, weight, bias / 2)
  la, lv = (l_c, l_m) if c_is_audio else (l_m, l_c)
  return {"logits": out, "audio": la, "visual": lv}


@torch.no_grad()
def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
  """Random weights everywhere, with non-trivial BN affine params and running statistics."""
  g = torch.Generator().manual_seed(seed)
  for m in model.modules():
    if isinstance(m, nn.Conv2d):
      fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
      m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_out) ** 0.5)
    elif isinstance(m, nn.BatchNorm2d):
      n = m.num_features
      m.weight.copy_(torch.empty(n).uniform_(0.6, 1.4, generator=g))
      m.bias.copy_(torch.randn(n, generator=g) * 0.1)
      m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
      m.running_var.copy_(torch.empty(n).uniform_(0.5, 2.0, generator=g))
      m.num_batches_tracked.fill_(7)
    elif isinstance(m, nn.Linear):
      bound = 1.0 / m.in_features ** 0.5
      m.weight.copy_(torch.empty(m.weight.shape).uniform_(-bound, bound, generator=g))
      m.bias.copy_(torch.empty(m.bias.shape).uniform_(-bound, bound, generator=g))
  return model
