"""VAT pre-training, 'small' preset (width 128, 4 heads, MLP 512, 4 visual / 2 audio / 2 fusion
layers, embed 128): 8 frames 224x224 (16x16 patches, 1569 frame tokens), fbank (1024, 128) (16x16
patches, 513 audio tokens); VAC with momentum encoders, queues 2048 and soft targets + VAM with hard
negatives; AdamW 1e-4 (wd 0.02, cosine to 1e-5); float32."""

from __future__ import annotations

from typing import Any, Callable

from benchlib import load_config
from vs_torch import common

NAME = "vat_small"
DESCRIPTION = " ".join(__doc__.split())
# The paper config trains at 64 (ALBEF's per-GPU batch). On a 2-core CPU a step of the small preset
# at the real input sizes costs ~50 GFLOP per clip (frame attention over 1569 tokens dominates), and
# avjax's XLA attention materialises the (B, 4, 1569, 1569) scores (no fused kernel on CPUs): peak
# memory ~5 GiB at batch 4, ~9 GiB at 8 (PyTorch's fused CPU SDPA: ~1.4 GiB at 4). 8 keeps a run of
# both sides to minutes and within a 24 GiB machine; 16 needs ~16 GiB on avjax's side. 8 divides
# the queue (2048).
DEFAULT_BATCHES = (8,)
OPTIONS = {
    "preset": "small",  # avjax.models.vat.PRESETS: 'small' or 'albef'.
    "frames": 8,  # configs/vat_pretrain.py: 8 frames at 224, 16x16 patches.
    "image_size": 224,
    "patch_size": 16,
    "audio_size": (1024, 128),  # Kaldi fbank (frames, bins) as the 'vat' dataset config stores it.
    "audio_patch_size": (16, 16),
    "queue_size": 2048,  # configs/vat_pretrain.py; must be a multiple of the batch.
    # The config's 'bfloat16' is a GPU setting; 'bfloat16' here runs avjax's mixed precision and
    # torch.autocast(bfloat16) around the PyTorch forward.
    "compute_dtype": "float32",
    # The config's remat=True is for the ALBEF preset's memory on a GPU; the small preset fits
    # without it. On: avjax rematerialises each layer, PyTorch uses torch.utils.checkpoint.
    "remat": False,
}
TINY_OPTS = {"frames": 2, "image_size": 32, "audio_size": (32, 32), "queue_size": 64}
STEPS_PER_EPOCH = 100  # common.avjax_train_step's: alpha's ramp and the cosine on both sides.


def _config(batch: int, opts: dict) -> Any:
  """configs/vat_pretrain.py at `opts`' sizes and batch (ConfigError if the queue does not take
  whole batches)."""
  from avjax.methods.vat import VATPretrain
  from avjax.models.vat import model_section

  config = load_config("vat_pretrain")
  config.model.vat = model_section(
      opts["preset"], patch_size=opts["patch_size"], audio_size=tuple(opts["audio_size"]),
      audio_patch_size=tuple(opts["audio_patch_size"]), remat=opts["remat"])
  config.input.num_frames, config.input.image_size = opts["frames"], opts["image_size"]
  config.method.queue_size = opts["queue_size"]
  config.train.batch_size = batch
  config.train.compute_dtype = opts["compute_dtype"]
  VATPretrain.validate(config)
  return config


def avjax_step(batch: int, opts: dict) -> Callable[[], Any]:
  """The trainer's jitted vat_pretrain step on random inputs."""
  import numpy as np


  config = _config(batch, opts)
  rng = np.random.default_rng(0)
  s = opts["image_size"]
  data = {
      "audio": rng.standard_normal((batch, *opts["audio_size"], 1), np.float32),
      "visual": rng.standard_normal((batch, opts["frames"], s, s, 3), np.float32),
  }
  return common.avjax_train_step(config, 1, data, steps_per_epoch=STEPS_PER_EPOCH)


def torch_step(batch: int, opts: dict, compile_: bool, device: str) -> Callable[[], Any]:
  """ALBEF's pre-training step on the restatement (tests/convert/torch_vat.py): clamp the
  temperature, EMA of the momentum encoders, VAC + VAM (one batched multinomial draw of the hard
  negatives), backward, fused AdamW + per-step cosine, enqueue. torch.compile wraps the loss
  (both forwards and the losses); the EMA, optimizer and enqueue stay eager."""
  import torch

  from avjax.models.vat import PRESETS
  from tests.convert import torch_vat as ref

  config = _config(batch, opts)
  torch.manual_seed(0)
  settings = ref.settings(**PRESETS[opts["preset"]], num_frames=opts["frames"],
                          image_size=opts["image_size"], patch_size=opts["patch_size"],
                          audio_size=opts["audio_size"], audio_patch_size=opts["audio_patch_size"],
                          remat=opts["remat"])
  method, oc = config.method, config.optimizer
  model = ref.VATPretrain(settings, queue_size=method.queue_size, momentum=method.momentum,
                          temperature=method.temperature).to(device)
  opt, sched = ref.make_optimizer(model, lr=oc.learning_rate, weight_decay=oc.weight_decay,
                                  total_steps=config.train.num_epochs * STEPS_PER_EPOCH,
                                  min_lr=method.min_learning_rate, fused=True)
  s = opts["image_size"]
  audio = torch.randn(batch, 1, *opts["audio_size"], device=device)
  visual = torch.randn(batch, opts["frames"], 3, s, s, device=device)
  loss_fn = torch.compile(model.pretrain_loss) if compile_ else model.pretrain_loss
  if opts["compute_dtype"] == "bfloat16":
    inner = loss_fn

    def loss_fn(*args):
      with torch.autocast(device, dtype=torch.bfloat16):
        return inner(*args)

  counter = [0]

  def step():
    alpha = torch.tensor(ref.ramped_alpha(method.alpha, counter[0], STEPS_PER_EPOCH),
                         device=device)
    counter[0] += 1
    return ref.train_step(model, opt, sched, audio, visual, alpha, loss_fn)[0]

  return step
