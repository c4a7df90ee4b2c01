"""A PyTorch restatement of avjax's VAT pre-training (model 'vat' + method 'vat_pretrain').

Written from /work/shared/reference/vat.md (ALBEF's model_pretrain.py with video frames in the
place of images and audio in the place of text) and avjax's model structure (avjax/models/vat.py,
avjax/models/transformer.py), with avjax's module names so a small mapping (`load_avjax_params`)
copies avjax's parameters in. VAT's own code is unpublished, so this is the ALBEF recipe as
avjax states it:

  * encoders: pre-LN ViT blocks (LayerNorm eps 1e-6, exact GELU), attention through
    F.scaled_dot_product_attention; self-attention projects q, k, v with one fused Linear (timm's
    `qkv`), cross-attention projects q from the queries and k, v from the context with one Linear;
  * frame encoder: Conv2d patches of each frame, the T x P patch tokens of a clip as one sequence
    with one [CLS]; positions = spatial embedding (shared by the frames) + temporal embedding;
  * audio encoder: Conv2d patches of the (F, T) spectrogram, [CLS], learned positions;
  * fusion: audio tokens as queries: self-attention -> cross-attention over the frame tokens -> MLP;
  * losses: VAC (ALBEF's ITC: momentum features, queues, soft targets, learnable clamped
    temperature) and VAM (ALBEF's ITM: hard negatives drawn from the in-batch similarities);
  * training: momentum (EMA) copies of the encoders and projections updated before their forward,
    FIFO queues of momentum features, AdamW without decay on biases / LayerNorm weights, cosine
    learning rate (`make_optimizer`).

ALBEF draws one negative per example in a Python loop of torch.multinomial(...).item(); here one
batched torch.multinomial over the (B, B) weight matrix draws the same distribution without B
host syncs. Layout: frames (B, T, C, S, S), spectrograms (B, 1, F, T) (avjax: channels last).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

LN_EPSILON = 1e-6
TEMPERATURE_RANGE = (0.001, 0.5)


def _linear(cin: int, cout: int) -> nn.Linear:
  """timm ViT init: weight N(0, 0.02) truncated at +-2 std, bias 0."""
  layer = nn.Linear(cin, cout)
  nn.init.trunc_normal_(layer.weight, std=0.02)
  nn.init.zeros_(layer.bias)
  return layer


class Attention(nn.Module):
  """Multi-head attention; self-attention (fused `qkv`) or, with `cross`, queries from x and keys /
  values (fused `kv`) from a context. x: (B, N, D), context: (B, M, D) -> (B, N, D)."""

  def __init__(self, width: int, heads: int, cross: bool = False):
    super().__init__()
    self.heads, self.cross = heads, cross
    if cross:
      self.q = _linear(width, width)
      self.kv = _linear(width, 2 * width)
    else:
      self.qkv = _linear(width, 3 * width)
    self.out_proj = _linear(width, width)

  def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
    b, n, d = x.shape
    h, dh = self.heads, d // self.heads
    if self.cross:
      q = self.q(x).view(b, n, h, dh).transpose(1, 2)
      k, v = self.kv(context).view(b, context.shape[1], 2, h, dh).permute(2, 0, 3, 1, 4)
    else:
      q, k, v = self.qkv(x).view(b, n, 3, h, dh).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, Dh), scale 1 / sqrt(Dh).
    return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
  """Linear -> GELU (exact) -> Linear."""

  def __init__(self, width: int, hidden: int):
    super().__init__()
    self.fc1, self.fc2 = _linear(width, hidden), _linear(hidden, width)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.fc2(F.gelu(self.fc1(x)))


class EncoderBlock(nn.Module):
  """x <- x + SA(LN(x)); x <- x + MLP(LN(x))."""

  def __init__(self, width: int, heads: int, mlp_dim: int):
    super().__init__()
    self.norm1 = nn.LayerNorm(width, eps=LN_EPSILON)
    self.attn = Attention(width, heads)
    self.norm2 = nn.LayerNorm(width, eps=LN_EPSILON)
    self.mlp = Mlp(width, mlp_dim)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


class CrossBlock(nn.Module):
  """x <- x + SA(LN(x)); x <- x + CA(LN(x), context); x <- x + MLP(LN(x))."""

  def __init__(self, width: int, heads: int, mlp_dim: int):
    super().__init__()
    self.norm1 = nn.LayerNorm(width, eps=LN_EPSILON)
    self.self_attn = Attention(width, heads)
    self.norm2 = nn.LayerNorm(width, eps=LN_EPSILON)
    self.cross_attn = Attention(width, heads, cross=True)
    self.norm3 = nn.LayerNorm(width, eps=LN_EPSILON)
    self.mlp = Mlp(width, mlp_dim)

  def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    x = x + self.self_attn(self.norm1(x))
    x = x + self.cross_attn(self.norm2(x), context)
    return x + self.mlp(self.norm3(x))


class Encoder(nn.Module):
  """`depth` blocks and a final LayerNorm; `remat` recomputes each block in the backward pass."""

  def __init__(self, block: type, width: int, heads: int, mlp_dim: int, depth: int,
               remat: bool = False):
    super().__init__()
    self.blocks = nn.ModuleList([block(width, heads, mlp_dim) for _ in range(depth)])
    self.norm = nn.LayerNorm(width, eps=LN_EPSILON)
    self.remat = remat

  def forward(self, x: torch.Tensor, *context: torch.Tensor) -> torch.Tensor:
    for block in self.blocks:
      if self.remat and torch.is_grad_enabled():
        x = checkpoint(block, x, *context, use_reentrant=False)
      else:
        x = block(x, *context)
    return self.norm(x)


class FrameEncoder(nn.Module):
  """ViT over the frames of a clip: (B, T, C, S, S) -> tokens (B, 1 + T * P, D), [CLS] first."""

  def __init__(self, s: dict[str, Any]):
    super().__init__()
    d, p = s["width"], s["patch_size"]
    self.patch_embed = nn.Conv2d(3, d, p, stride=p)
    grid = (s["image_size"] // p) ** 2
    self.cls_token = nn.Parameter(nn.init.trunc_normal_(torch.empty(1, 1, d), std=0.02))
    self.pos_embed = nn.Parameter(nn.init.trunc_normal_(torch.empty(1, 1 + grid, d), std=0.02))
    self.time_embed = nn.Parameter(torch.zeros(1, s["num_frames"], d))
    self.encoder = Encoder(EncoderBlock, d, s["heads"], s["mlp_dim"], s["visual_layers"],
                           s["remat"])

  def forward(self, frames: torch.Tensor) -> torch.Tensor:
    b, t = frames.shape[:2]
    x = self.patch_embed(frames.flatten(0, 1)).flatten(2).transpose(1, 2)  # (B * T, P, D)
    x = x.reshape(b, t, -1, x.shape[-1]) + self.pos_embed[:, None, 1:] + self.time_embed[:, :, None]
    cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, -1, -1)
    return self.encoder(torch.cat([cls, x.flatten(1, 2)], 1))


class SpectrogramEncoder(nn.Module):
  """Transformer over spectrogram patches: (B, 1, F, T) -> tokens (B, 1 + N, D), [CLS] first."""

  def __init__(self, s: dict[str, Any]):
    super().__init__()
    d, (pf, pt), (f, t) = s["width"], s["audio_patch_size"], s["audio_size"]
    self.patch_embed = nn.Conv2d(1, d, (pf, pt), stride=(pf, pt))
    self.cls_token = nn.Parameter(nn.init.trunc_normal_(torch.empty(1, 1, d), std=0.02))
    self.pos_embed = nn.Parameter(
        nn.init.trunc_normal_(torch.empty(1, 1 + (f // pf) * (t // pt), d), std=0.02))
    self.encoder = Encoder(EncoderBlock, d, s["heads"], s["mlp_dim"], s["audio_layers"],
                           s["remat"])

  def forward(self, spec: torch.Tensor) -> torch.Tensor:
    x = self.patch_embed(spec).flatten(2).transpose(1, 2)  # (B, N, D), (f, t) row-major.
    cls = self.cls_token.expand(x.shape[0], -1, -1)
    return self.encoder(torch.cat([cls, x], 1) + self.pos_embed)


def settings(width: int = 128, heads: int = 4, mlp_dim: int = 512, visual_layers: int = 4,
             audio_layers: int = 2, fusion_layers: int = 2, embed_dim: int = 128,
             num_frames: int = 8, image_size: int = 224, patch_size: int = 16,
             audio_size: tuple[int, int] = (1024, 128),
             audio_patch_size: tuple[int, int] = (16, 16), remat: bool = False) -> dict[str, Any]:
  """VAT's sizes (defaults: avjax's 'small' preset at configs/vat_pretrain.py's input sizes)."""
  return dict(width=width, heads=heads, mlp_dim=mlp_dim, visual_layers=visual_layers,
              audio_layers=audio_layers, fusion_layers=fusion_layers, embed_dim=embed_dim,
              num_frames=num_frames, image_size=image_size, patch_size=patch_size,
              audio_size=tuple(audio_size), audio_patch_size=tuple(audio_patch_size), remat=remat)


class VATPretrain(nn.Module):
  """VAT for pre-training with its momentum copies and queues (ALBEF's pre-training module).

  Online: audio_encoder, visual_encoder, fusion_encoder, audio_proj / visual_proj (width ->
  embed_dim), itm_head (width -> 2), temp. Momentum (no gradient, EMA of the online weights):
  audio_encoder_m, visual_encoder_m, audio_proj_m, visual_proj_m. Buffers: audio_queue /
  visual_queue (Q, E) of momentum features (random unit vectors at first), queue_ptr.
  """

  def __init__(self, s: dict[str, Any], queue_size: int = 2048, momentum: float = 0.995,
               temperature: float = 0.07):
    super().__init__()
    self.momentum = momentum
    d = s["width"]
    self.audio_encoder = SpectrogramEncoder(s)
    self.visual_encoder = FrameEncoder(s)
    self.fusion_encoder = Encoder(CrossBlock, d, s["heads"], s["mlp_dim"], s["fusion_layers"],
                                  s["remat"])
    self.audio_proj = _linear(d, s["embed_dim"])
    self.visual_proj = _linear(d, s["embed_dim"])
    self.itm_head = _linear(d, 2)
    self.temp = nn.Parameter(torch.tensor(float(temperature)))
    self.momentum_pairs = [(name, name + "_m") for name in
                           ("audio_encoder", "visual_encoder", "audio_proj", "visual_proj")]
    for name, name_m in self.momentum_pairs:
      setattr(self, name_m, copy.deepcopy(getattr(self, name)).requires_grad_(False))
    unit = lambda: F.normalize(torch.randn(queue_size, s["embed_dim"]), dim=1)
    self.register_buffer("audio_queue", unit())
    self.register_buffer("visual_queue", unit())
    self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

  def online_parameters(self) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of everything the optimizer trains (the momentum copies excluded)."""
    return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

  def copy_params(self) -> None:
    """Momentum copies <- online weights (ALBEF's copy_params, after loading weights)."""
    with torch.no_grad():
      for name, name_m in self.momentum_pairs:
        for p_m, p in zip(getattr(self, name_m).parameters(), getattr(self, name).parameters()):
          p_m.copy_(p)

  @torch.no_grad()
  def momentum_update(self) -> None:
    """theta' <- m theta' + (1 - m) theta over the momentum pairs (one foreach lerp)."""
    online, target = [], []
    for name, name_m in self.momentum_pairs:
      online += list(getattr(self, name).parameters())
      target += list(getattr(self, name_m).parameters())
    torch._foreach_lerp_(target, online, 1.0 - self.momentum)

  @torch.no_grad()
  def enqueue(self, audio_feat_m: torch.Tensor, visual_feat_m: torch.Tensor) -> None:
    """FIFO: writes the batch's momentum features (B, E) at queue_ptr (Q a multiple of B)."""
    q, b = self.audio_queue.shape[0], audio_feat_m.shape[0]
    if q == 0:
      return
    rows = self.queue_ptr + torch.arange(b, device=audio_feat_m.device)
    self.audio_queue.index_copy_(0, rows, audio_feat_m)
    self.visual_queue.index_copy_(0, rows, visual_feat_m)
    self.queue_ptr.copy_((self.queue_ptr + b) % q)

  def embed(self, audio_tokens: torch.Tensor, visual_tokens: torch.Tensor, momentum: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised projections of the [CLS] tokens: (B, E) audio, (B, E) video."""
    suffix = "_m" if momentum else ""
    a = getattr(self, "audio_proj" + suffix)(audio_tokens[:, 0])
    v = getattr(self, "visual_proj" + suffix)(visual_tokens[:, 0])
    return F.normalize(a.float(), dim=-1), F.normalize(v.float(), dim=-1)  # float32 under autocast.

  def match(self, audio_tokens: torch.Tensor, visual_tokens: torch.Tensor) -> torch.Tensor:
    """Matching logits (N, 2) of N (audio, frame) token-sequence pairs (fused [CLS] -> head)."""
    return self.itm_head(self.fusion_encoder(audio_tokens, visual_tokens)[:, 0]).float()

  def pretrain_loss(self, audio: torch.Tensor, visual: torch.Tensor, alpha: torch.Tensor,
                    audio_queue: torch.Tensor, visual_queue: torch.Tensor,
                    negatives: tuple[torch.Tensor, torch.Tensor] | None = None
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VAC + VAM of one batch (momentum_update must have run first; enqueue afterwards).

    audio (B, 1, F, T), visual (B, T, 3, S, S), alpha () the ramped distillation weight, the
    queues (Q, E). `negatives` (neg_video (B,), neg_audio (B,)) replaces the random draw (tests).
    Returns (loss, {'vac', 'vam', 'audio_feat_m', 'visual_feat_m'}).
    """
    with torch.no_grad():
      a_m, v_m = self.embed(self.audio_encoder_m(audio), self.visual_encoder_m(visual), True)
    audio_tokens, visual_tokens = self.audio_encoder(audio), self.visual_encoder(visual)
    a, v = self.embed(audio_tokens, visual_tokens)
    vac, s_a2v, s_v2a = vac_loss(a, v, a_m, v_m, audio_queue, visual_queue, self.temp, alpha)
    b = a.shape[0]
    if negatives is None:
      negatives = sample_hard_negatives(s_a2v[:, :b], s_v2a[:, :b])
    pairs_a, pairs_v, labels = matching_pairs(audio_tokens, visual_tokens, *negatives)
    vam = F.cross_entropy(self.match(pairs_a, pairs_v), labels)
    return vac + vam, {"vac": vac, "vam": vam, "audio_feat_m": a_m, "visual_feat_m": v_m}


def vac_loss(a: torch.Tensor, v: torch.Tensor, a_m: torch.Tensor, v_m: torch.Tensor,
             audio_queue: torch.Tensor, visual_queue: torch.Tensor, temp: torch.Tensor,
             alpha: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
  """ALBEF's ITC with audio for text: online (B, E) features against [momentum batch; queue].

  Returns (loss, s_a2v (B, B + Q), s_v2a (B, B + Q)); soft targets alpha * softmax(momentum
  similarities) + (1 - alpha) * one-hot, without gradient. Float32 also under autocast (avjax
  computes its losses in float32 whatever the compute dtype).
  """
  with torch.autocast(a.device.type, enabled=False):
    return _vac_loss(a.float(), v.float(), a_m.float(), v_m.float(), audio_queue.float(),
                     visual_queue.float(), temp, alpha)


def _vac_loss(a, v, a_m, v_m, audio_queue, visual_queue, temp, alpha):
  with torch.no_grad():
    a_all = torch.cat([a_m, audio_queue], 0)
    v_all = torch.cat([v_m, visual_queue], 0)
    hard = torch.eye(a.shape[0], a_all.shape[0], device=a.device, dtype=a.dtype)
    y_v2a = alpha * F.softmax(v_m @ a_all.t() / temp, 1) + (1 - alpha) * hard
    y_a2v = alpha * F.softmax(a_m @ v_all.t() / temp, 1) + (1 - alpha) * hard
  s_v2a = v @ a_all.t() / temp
  s_a2v = a @ v_all.t() / temp
  loss_v2a = -(F.log_softmax(s_v2a, 1) * y_v2a).sum(1).mean()
  loss_a2v = -(F.log_softmax(s_a2v, 1) * y_a2v).sum(1).mean()
  return (loss_v2a + loss_a2v) / 2, s_a2v, s_v2a


def negative_weights(sim: torch.Tensor) -> torch.Tensor:
  """ALBEF's sampling weights: softmax(sim) row-wise with the diagonal set to 0. (B, B)."""
  w = F.softmax(sim.detach().float(), 1)
  return w.masked_fill(torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device), 0.0)


def sample_hard_negatives(sim_a2v: torch.Tensor, sim_v2a: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
  """(neg_video for each audio, neg_audio for each video): (B,) each, one multinomial draw per
  row of the (B, B) in-batch similarity weights."""
  with torch.no_grad():
    neg_video = torch.multinomial(negative_weights(sim_a2v), 1).squeeze(1)
    neg_audio = torch.multinomial(negative_weights(sim_v2a), 1).squeeze(1)
  return neg_video, neg_audio


def matching_pairs(audio_tokens: torch.Tensor, visual_tokens: torch.Tensor,
                   neg_video: torch.Tensor, neg_audio: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
  """The 3B pairs (true; (audio neg_audio[i], video i); (audio i, video neg_video[i])) of
  (B, N, D) token sequences and their labels [1] * B + [0] * 2B (avjax's order)."""
  b = audio_tokens.shape[0]
  audio = torch.cat([audio_tokens, audio_tokens[neg_audio], audio_tokens], 0)
  visual = torch.cat([visual_tokens, visual_tokens, visual_tokens[neg_video]], 0)
  labels = torch.cat([torch.ones(b, dtype=torch.long), torch.zeros(2 * b, dtype=torch.long)])
  return audio, visual, labels.to(audio_tokens.device)


def make_optimizer(model: VATPretrain, lr: float = 1e-4, weight_decay: float = 0.02,
                   total_steps: int = 3000, min_lr: float = 1e-5, fused: bool | None = None
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
  """AdamW (betas 0.9 / 0.999, eps 1e-8) with timm's rule, no decay on biases and other 1-D
  weights (LayerNorm), and a per-step cosine from lr to min_lr over total_steps."""
  decay, no_decay = [], []
  for name, p in model.online_parameters():
    (no_decay if p.ndim == 1 or name.endswith(".bias") else decay).append(p)
  groups = [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]
  opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=fused)
  sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps, eta_min=min_lr)
  return opt, sched


def ramped_alpha(alpha: float, step: int, steps_per_epoch: int) -> float:
  """ALBEF's alpha * min(1, i / len(loader)) during epoch 0 (`step` counts from 0)."""
  return alpha * min(1.0, step / max(steps_per_epoch, 1))


def train_step(model: VATPretrain, opt: torch.optim.Optimizer,
               sched: torch.optim.lr_scheduler.LRScheduler | None, audio: torch.Tensor,
               visual: torch.Tensor, alpha: torch.Tensor, loss_fn: Any = None
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
  """One pre-training step as ALBEF's train loop runs it: clamp the temperature, EMA of the
  momentum copies, VAC + VAM (`loss_fn`, default model.pretrain_loss; e.g. its torch.compile),
  backward, optimizer and scheduler step, enqueue the momentum features. Returns (loss, parts)."""
  with torch.no_grad():
    model.temp.clamp_(*TEMPERATURE_RANGE)
  model.momentum_update()
  loss, parts = (loss_fn or model.pretrain_loss)(audio, visual, alpha, model.audio_queue,
                                                 model.visual_queue)
  opt.zero_grad(set_to_none=True)
  loss.backward()
  opt.step()
  if sched is not None:
    sched.step()
  model.enqueue(parts["audio_feat_m"], parts["visual_feat_m"])
  return loss.detach(), parts


# ------------------------------------------------------------------------------ avjax weights
def _torch_name(path: tuple[str, ...]) -> str:
  """avjax's parameter path (blocks unstacked: 'blocks', i, ...) -> this module's name."""
  leaf = {"kernel": "weight", "scale": "weight"}.get(path[-1], path[-1])
  return ".".join([*path[:-1], leaf])


def avjax_to_state_dict(flat: dict[tuple[str, ...], np.ndarray]) -> dict[str, torch.Tensor]:
  """avjax's flat parameters {path: array} -> a state dict of the online modules.

  Stacked layers (leading depth axis) become blocks.<i>; Linear kernels (in, out) are transposed;
  conv kernels (kh, kw, cin, cout) -> (cout, cin, kh, kw); LayerNorm scale -> weight; q / k / v
  projections are concatenated into `qkv` (self-attention) or `q` + `kv` (cross-attention).
  """
  unstacked: dict[tuple[str, ...], np.ndarray] = {}
  for path, value in flat.items():
    path = tuple(str(p) for p in path)
    if "blocks" in path:
      i = path.index("blocks")
      for layer in range(value.shape[0]):
        unstacked[(*path[:i + 1], str(layer), *path[i + 1:])] = value[layer]
    else:
      unstacked[path] = value
  out: dict[str, np.ndarray] = {}
  fused: dict[tuple[str, ...], dict[str, np.ndarray]] = {}
  for path, value in unstacked.items():
    value = np.asarray(value, np.float32)
    if path[-1] == "kernel":
      value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
    if len(path) >= 2 and path[-2] in ("q_proj", "k_proj", "v_proj"):
      fused.setdefault(path[:-2], {})[f"{path[-2][0]}.{path[-1]}"] = value
      continue
    out[_torch_name(path)] = value
  for attn, parts in fused.items():
    prefix = ".".join(attn)
    for leaf, torch_leaf in (("kernel", "weight"), ("bias", "bias")):
      q, k, v = (parts[f"{c}.{leaf}"] for c in "qkv")
      if attn[-1] == "cross_attn":
        out[f"{prefix}.q.{torch_leaf}"] = q
        out[f"{prefix}.kv.{torch_leaf}"] = np.concatenate([k, v], 0)
      else:
        out[f"{prefix}.qkv.{torch_leaf}"] = np.concatenate([q, k, v], 0)
  return {k: torch.from_numpy(np.array(v, np.float32, order="C")) for k, v in out.items()}


def _copy_into(params: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> None:
  """params[name] <- state[name] for every name; both must hold the same names and shapes."""
  missing, unexpected = set(params) - set(state), set(state) - set(params)
  if missing or unexpected:
    raise KeyError(f"avjax -> torch VAT: missing {sorted(missing)}, "
                   f"unexpected {sorted(unexpected)}")
  with torch.no_grad():
    for name, value in state.items():
      if params[name].shape != value.shape:
        raise ValueError(f"{name}: torch {tuple(params[name].shape)} vs avjax {tuple(value.shape)}")
      params[name].copy_(value)


def load_avjax_params(model: VATPretrain, flat: dict[tuple[str, ...], np.ndarray],
                      momentum_flat: dict[tuple[str, ...], np.ndarray] | None = None) -> None:
  """Copies avjax's parameters (flat {path: array}) into the online modules, and the momentum
  parameters (vat_pretrain's method_state['momentum'], same paths) into the `_m` copies; without
  them the copies start equal to the online weights. Every parameter must be set."""
  _copy_into(dict(model.online_parameters()), avjax_to_state_dict(flat))
  if momentum_flat is None:
    model.copy_params()
    return
  state = {f"{k.split('.', 1)[0]}_m.{k.split('.', 1)[1]}": v
           for k, v in avjax_to_state_dict(momentum_flat).items()}
  momentum = {n: p for n, p in model.named_parameters() if not p.requires_grad}
  _copy_into(momentum, state)

