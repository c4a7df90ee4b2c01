r"""InfoReg on Kinetics-Sounds (Huang, Wei, Yang, Hu, CVPR 2025), concatenation fusion.

  python -m avjax.main --config configs/inforeg_ks.py
  python -m avjax.main --config configs/inforeg_ks.py:smoke   # tiny synthetic stand-in

GeWu-Lab/InfoReg_CVPR2025 main.py (939b2ed) trains every dataset with the same argparse defaults
and the same hard-coded constants (0.95 / 0.1, audio assumed dominant); its Kinetics-Sounds
settings are not stated anywhere else (UNVERIFIED), so this config uses those defaults. Needs the
kinetics_sounds 'ogm_ge' build (3 frames).
"""

from avjax import recipes
from avjax.config import apply_smoke, base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "inforeg_ks"
  c.seed = 0  # main.py --random_seed 0.
  # The reference selects its checkpoint on the TEST split (main.py:863).
  # num_frames: main.py --use_video_frames 3.
  recipes.audio_visual_input(c, "kinetics_sounds", num_frames=3)
  c.input.crop_scale = (0.08, 1.0)
  # fusion: basic_model.py: Linear(1024, n_classes).
  # init: model.apply(weight_init).
  recipes.resnet18_pair(c, init="ogm_ge", fusion="concat")

  c.method.name = "inforeg"
  c.method.threshold = 0.05  # main.py:465,473.
  c.method.strength_audio = 0.95  # main.py: hard-coded, audio assumed dominant.
  c.method.strength_visual = 0.1
  c.method.window = 10
  c.method.window_modality = "audio"
  c.method.variant = "head"

  c.optimizer.name = "sgd"  # main.py: SGD lr 2e-3, momentum 0.9, weight decay 1e-4.
  c.optimizer.learning_rate = 2e-3
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.optimizer.schedule = "step"
  c.optimizer.step_epochs = 30  # StepLR(30, 0.1), stepped per epoch.
  c.optimizer.gamma = 0.1
  c.train.batch_size = 64  # main.py --batch_size 64.
  c.train.num_epochs = 50  # main.py --epochs 50.
  if arg == "smoke":
    apply_smoke(c)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
