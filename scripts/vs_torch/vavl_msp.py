"""VAVL on MSP-IMPROV features: wav2vec2 audio (600, 1024) and EfficientNet-B2 visual (360, 1408)
sequences with padding masks (3-6 s utterances), 3+3+2 Conformer blocks (dim 512), arousal /
valence / dominance, VAVL's three steps per batch (visual, acoustic, fusion), one Adam 5e-5 per
module (betas 0.95 / 0.999, L2 5e-7)."""

from __future__ import annotations

from typing import Any, Callable

from benchlib import load_config
from vs_torch import common

NAME = "vavl_msp"
DESCRIPTION = " ".join(__doc__.split())
DEFAULT_BATCHES = (9, 32)  # run_mspimprov.sh's batch and a larger one.
OPTIONS = {
    "audio_frames": 600,  # config.input.max_audio_frames: 12 s at wav2vec2's 50 Hz.
    "visual_frames": 360,  # config.input.max_visual_frames: 12 s at ~30 fps.
    "seconds": (3.0, 6.0),  # Utterance length range (uniform per example): the valid frames.
    "audio_dim": 1024, "visual_dim": 1408, "proj_dim": 50, "dim": 512, "heads": 8,
    "blocks": (3, 3, 2),  # Audio, visual, shared Conformer blocks.
    "head_hidden": (512, 256),
    "compute_dtype": "float32",  # 'bfloat16': avjax mixed precision / torch.autocast (as AMP).
    "remat": False,  # avjax side: recompute each Conformer block in the backward pass.
}
TINY_OPTS = {"audio_frames": 40, "visual_frames": 24, "seconds": (0.4, 0.7), "audio_dim": 32,
             "visual_dim": 24, "proj_dim": 8, "dim": 16, "heads": 2, "blocks": (1, 1, 1),
             "head_hidden": (16, 8)}
AUDIO_HZ, VIDEO_FPS = 50.0, 30.0  # wav2vec2 frame rate; MSP-IMPROV's video (~30 fps).
NUM_OUTPUTS = 3  # Arousal, valence, dominance ('dimensional').


def config_for(batch: int, opts: dict) -> Any:
  """configs/vavl_msp.py with the case's sizes."""
  config = load_config("vavl_msp")
  a, v, s = opts["blocks"]
  config.model.vavl.update(dict(
      audio_dim=opts["audio_dim"], visual_dim=opts["visual_dim"], proj_dim=opts["proj_dim"],
      dim=opts["dim"], heads=opts["heads"], audio_blocks=a, visual_blocks=v, shared_blocks=s,
      head_hidden=tuple(opts["head_hidden"]), remat=opts["remat"]))
  config.input.max_audio_frames = opts["audio_frames"]
  config.input.max_visual_frames = opts["visual_frames"]
  config.train.batch_size = batch
  config.train.compute_dtype = opts["compute_dtype"]
  return config


def make_data(batch: int, opts: dict) -> dict[str, Any]:
  """Random feature sequences padded to the configured maxima, as avjax.data.sequences pads them.

  Each example lasts U(seconds) s: round(s * 50) valid audio frames and round(s * 30) valid visual
  frames (capped at the maxima), then zeros with mask 0. Attributes U(0, 1) (B, 3). numpy arrays.
  """
  import numpy as np

  rng = np.random.default_rng(0)
  lo, hi = opts["seconds"]
  seconds = rng.uniform(lo, hi, batch)
  data = {}
  for m, rate in (("audio", AUDIO_HZ), ("visual", VIDEO_FPS)):
    frames = opts[f"{m}_frames"]
    valid = np.minimum(np.maximum(np.round(seconds * rate), 1), frames).astype(np.int64)
    mask = (np.arange(frames)[None, :] < valid[:, None]).astype(np.float32)
    values = rng.standard_normal((batch, frames, opts[f"{m}_dim"]), np.float32)
    data[m], data[f"{m}_mask"] = values * mask[..., None], mask
  data["attributes"] = rng.uniform(0.0, 1.0, (batch, NUM_OUTPUTS)).astype(np.float32)
  return data


def avjax_step(batch: int, opts: dict) -> Callable[[], Any]:
  """The trainer's jitted VAVL step (method vavl: visual, acoustic, fusion updates in one jit)."""
  return common.avjax_train_step(config_for(batch, opts), NUM_OUTPUTS, make_data(batch, opts))


def torch_step(batch: int, opts: dict, compile_: bool, device: str) -> Callable[[], Any]:
  """The reference's batch (train.py, modelWrapper.py) on the restatement, with avjax's masks:

    visual:   L = sum_k (1 - CCC_k)(MLP_v(rep_v)) + MSE(MLP_rec_v(rep_v), masked mean_t x_v),
              rep_v = Shared(Visual(x_v)); backward; step visual, shared, MLP_v, MLP_rec_v
    acoustic: the same with audio; step acoustic, shared, MLP_a, MLP_rec_a
    fusion:   encoders, shared, MLP_a / MLP_v in eval mode; L = sum_k (1 - CCC_k)(weights(rep_a,
              rep_v)); step the fusion head only

  with one torch Adam per module, as the reference. The fusion step's representations are computed
  under no_grad: the reference backpropagates into the frozen modules there and then drops those
  gradients (each is zeroed before its own module's next step), so the updates are the same.
  As avjax: float32 (the reference runs under CUDA AMP autocast), sequences padded to the config's
  maxima (the reference pads each batch to its longest utterance), positions config.model.vavl
  .rel_pos ('transformer_xl', 2T - 1 relative distances; the reference's scheme uses T).
  """
  import torch
  import torch.nn.functional as F

  from tests.convert import torch_conformer as ref

  torch.manual_seed(0)
  config = config_for(batch, opts)
  mc, oc = config.model.vavl, config.optimizer
  model = ref.VAVL(outputs=NUM_OUTPUTS, audio_dim=opts["audio_dim"], visual_dim=opts["visual_dim"],
                   proj=opts["proj_dim"], d=opts["dim"], heads=opts["heads"],
                   kernel=mc.kernel_size, blocks=tuple(opts["blocks"]),
                   hidden=tuple(opts["head_hidden"]), p=mc.dropout, head_p=mc.head_dropout,
                   rel_pos=mc.rel_pos).to(device)
  opt = {name: torch.optim.Adam(getattr(model, name).parameters(), lr=oc.learning_rate,
                                betas=(oc.b1, oc.b2), eps=oc.eps, weight_decay=oc.weight_decay)
         for name in ("acoustic_model", "visual_model", "shared_model", "MLP_a", "MLP_v",
                      "MLP_rec_a", "MLP_rec_v", "weights")}
  groups = {"visual": ("visual_model", "shared_model", "MLP_v", "MLP_rec_v"),
            "audio": ("acoustic_model", "shared_model", "MLP_a", "MLP_rec_a")}
  frozen = ("acoustic_model", "visual_model", "shared_model", "MLP_a", "MLP_v")
  data = {k: torch.from_numpy(v).to(device) for k, v in make_data(batch, opts).items()}
  y = data["attributes"]

  def ccc_loss(pred, target):
    """sum_k (1 - CCC_k) over the batch, population moments (VAVL's CCC_loss)."""
    mp, mt = pred.mean(0), target.mean(0)
    dp, dt = pred - mp, target - mt
    ccc = 2 * (dp * dt).mean(0) / (dp.square().mean(0) + dt.square().mean(0) + (mp - mt) ** 2)
    return (1 - ccc).sum()

  def unimodal_loss(branch, head, recon, x, mask):
    rep = model.shared_model(branch(x, mask), mask)
    with torch.no_grad():
      target = ref.masked_mean(x, mask)
    return ccc_loss(head(rep), y) + F.mse_loss(recon(rep), target)

  def visual_loss():
    return unimodal_loss(model.visual_model, model.MLP_v, model.MLP_rec_v, data["visual"],
                         data["visual_mask"])

  def audio_loss():
    return unimodal_loss(model.acoustic_model, model.MLP_a, model.MLP_rec_a, data["audio"],
                         data["audio_mask"])

  def fusion_loss():
    with torch.no_grad():
      reps = [model.shared_model(branch(data[m], data[f"{m}_mask"]), data[f"{m}_mask"])
              for branch, m in ((model.acoustic_model, "audio"), (model.visual_model, "visual"))]
    return ccc_loss(model.weights(torch.cat(reps, 1)), y)

  losses = {"visual": visual_loss, "audio": audio_loss, "fusion": fusion_loss}
  if compile_:
    losses = {k: torch.compile(f) for k, f in losses.items()}

  def update(loss_fn, names):
    for name in names:
      opt[name].zero_grad(set_to_none=True)
    with common.torch_autocast(opts, device):
      loss = loss_fn().float()
    loss.backward()
    for name in names:
      opt[name].step()
    return loss

  def step():
    model.train()  # modelWrapper.set_train.
    update(losses["visual"], groups["visual"])  # The reference's order: visual, acoustic, fusion.
    update(losses["audio"], groups["audio"])
    for name in frozen:
      getattr(model, name).eval()
    return update(losses["fusion"], ("weights",)).detach()

  return step
