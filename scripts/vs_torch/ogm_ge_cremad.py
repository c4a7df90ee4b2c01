"""OGM-GE on CREMA-D: two ResNet-18, audio (1, 257, 188), 224x224 frames, concat fusion, SGD 1e-3
(momentum 0.9, weight decay 1e-4), OGM-GE gradient modulation (alpha 0.8) with noise."""

from __future__ import annotations

from typing import Any, Callable

from benchlib import load_config
from vs_torch import common

NAME = "ogm_ge_cremad"
DESCRIPTION = " ".join(__doc__.split())
DEFAULT_BATCHES = (64,)
OPTIONS = {"frames": 1, "image_size": 224, "widths": (64, 128, 256, 512),
           "channels_last": True,  # PyTorch side only: channels_last model and inputs.
           "compute_dtype": "float32"}  # 'bfloat16': avjax mixed precision / torch.autocast.
TINY_OPTS = {"image_size": 32, "widths": (4, 8, 8, 8)}  # --tiny: a seconds-long check run.
NUM_CLASSES = 6
AUDIO_SHAPE = (257, 188)  # OGM-GE's CREMA-D log-STFT (freq, time).


def avjax_step(batch: int, opts: dict) -> Callable[[], Any]:
  """The trainer's jitted OGM-GE step on random inputs."""
  import numpy as np


  config = load_config("ogm_ge_cremad")
  config.model.av_resnet.widths = tuple(opts["widths"])
  config.input.num_frames, config.input.image_size = opts["frames"], opts["image_size"]
  config.train.batch_size = batch
  config.train.compute_dtype = opts["compute_dtype"]
  rng = np.random.default_rng(0)
  s = opts["image_size"]
  data = {
      "audio": rng.standard_normal((batch, *AUDIO_SHAPE, 1), np.float32),
      "visual": rng.standard_normal((batch, opts["frames"], s, s, 3), np.float32),
      "label": rng.integers(0, NUM_CLASSES, batch).astype(np.int32),
  }
  return common.avjax_train_step(config, NUM_CLASSES, data)


def torch_step(batch: int, opts: dict, compile_: bool, device: str) -> Callable[[], Any]:
  """The reference's OGM-GE training step (main.py): CE on the fused logits, backward, encoder
  conv gradients scaled by the OGM coefficients plus Gaussian noise of their std, SGD."""
  import torch
  import torch.nn.functional as F

  from tests.convert import torch_reference as ref

  torch.manual_seed(0)
  widths = list(opts["widths"])
  s = opts["image_size"]
  layout = common.torch_layout(opts, device)
  model = ref.AVClassifier(NUM_CLASSES, fusion="concat", widths=widths).to(device)
  model = model.to(memory_format=layout)
  opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
  audio = torch.randn(batch, 1, *AUDIO_SHAPE, device=device).to(memory_format=layout)
  visual = torch.randn(batch, 3, opts["frames"], s, s, device=device)
  label = torch.randint(0, NUM_CLASSES, (batch,), device=device)
  d = widths[-1]
  forward = torch.compile(model) if compile_ else model
  encoder_convs = {
      name: [p for n, p in module.named_parameters() if p.dim() == 4]
      for name, module in (("audio", model.audio_net), ("visual", model.visual_net))
  }

  def step():
    opt.zero_grad(set_to_none=True)
    with common.torch_autocast(opts, device):
      a_feat, v_feat, out = forward(audio, visual)
      weight, bias = model.fusion_module.fc_out.weight, model.fusion_module.fc_out.bias
      out_a = a_feat @ weight[:, :d].t() + bias / 2
      out_v = v_feat @ weight[:, d:].t() + bias / 2
    out, out_a, out_v = out.float(), out_a.float(), out_v.float()
    loss = F.cross_entropy(out, label)
    loss.backward()
    with torch.no_grad():
      score_a = F.softmax(out_a, 1).gather(1, label[:, None]).sum()
      score_v = F.softmax(out_v, 1).gather(1, label[:, None]).sum()
      ratio_v = score_v / score_a
      coeff = {"audio": torch.ones((), device=device), "visual": torch.ones((), device=device)}
      if ratio_v > 1:
        coeff["visual"] = 1 - torch.tanh(0.8 * torch.relu(ratio_v))
      else:
        coeff["audio"] = 1 - torch.tanh(0.8 * torch.relu(1 / ratio_v))
      for name, params in encoder_convs.items():
        for p in params:
          # The reference reads the std with .item(); kept on the device here (no host sync).
          p.grad = p.grad * coeff[name] + torch.randn_like(p.grad) * (p.grad.std() + 1e-8)
    opt.step()
    return loss.detach()

  return step
