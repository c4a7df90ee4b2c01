r"""LFM, dynamically learning the modality gap (Yang et al., NeurIPS 2024), on CREMA-D.

  python -m avjax.main --config configs/lfm_cremad.py
  python -m avjax.main --config configs/lfm_cremad.py:smoke   # tiny synthetic stand-in

Values follow njustkmg/NeurIPS24-LFM @ ad44fa0 (data/crema.json, Crema_epoch_learnable.py).
The original's CREMA-D audio is tiled to 20 s (STFT (257, 1250)); avjax's 'ogm_ge' build is
OGM-GE's 3 s (257, 188) front end, so numbers are not directly comparable.
Data: OGM-GE's preprocessing of the 'crema_d' builder (config 'ogm_ge').
"""

from avjax import recipes
from avjax.config import apply_smoke, base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "lfm_cremad"
  c.seed = 0  # data/crema.json seed 0.
  # The reference selects its checkpoint on the TEST split. The alpha batch is another held-out fold
  # of TRAIN, never these splits.
  # num_frames: dataset/CREMA.py: one frame (fps 1).
  recipes.audio_visual_input(c, "crema_d", num_frames=1)
  # fusion: unused by the intended form (the separate heads' average classifies).
  # init: utils/tools.py:114-122: Kaiming (fan_out) convs, Xavier-normal linears.
  # widths: model/AudioVideo.py: ResNet-18 encoders.
  recipes.resnet18_pair(c, init="ogm_ge", fusion="concat")

  c.method.name = "lfm"
  c.method.schedule = "learnable"  # Crema_epoch_learnable.py ('fitted': Crema_epoch.py).
  c.method.variant = "intended"  # Separate heads, alpha (0.05, 0.95); BB: fused head, (0.95, 0.05).
  c.method.alignment = "mixture"  # Crema_epoch.py:38-45 as coded ('js': the true JS divergence).
  c.method.lr_alpha = 1e-4  # Crema_epoch_learnable.py:246.

  c.optimizer.name = "sgd"  # data/crema.json: SGD lr 1e-2, momentum 0.9, weight decay 1e-4.
  c.optimizer.learning_rate = 1e-2
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.optimizer.schedule = "step"  # StepLR(70, 0.1); the original steps it before each epoch, so its
  c.optimizer.step_epochs = 70  # first drop comes one epoch earlier (epoch 69, 0-indexed).
  c.optimizer.gamma = 0.1
  c.train.batch_size = 64  # data/crema.json.
  c.train.num_epochs = 200  # data/crema.json.
  if arg == "smoke":
    apply_smoke(c)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
