r"""MLA on Kinetics-Sounds (Zhang et al., CVPR 2024): alternating uni-modal steps, shared head.

  python -m avjax.main --config configs/mla_ks.py
  python -m avjax.main --config configs/mla_ks.py:smoke   # tiny synthetic stand-in

The released code cannot run Kinetics-Sounds (its class count is a `pass` stub,
models/basic_model.py:19-26), so the data side is configs/ogm_ge_ks.py's (kinetics_sounds
'ogm_ge': Kaldi fbank (1024, 128), 3 frames at 1 fps) and the method and optimiser are the
CREMA-D run's (MLA-R main.py at ab6c184), as noted next to each value.
"""

from avjax import recipes
from avjax.config import apply_smoke, base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "mla_ks"
  c.seed = 0  # main.py:46.
  # The reference selects its checkpoint on the TEST split.
  recipes.audio_visual_input(c, "kinetics_sounds", num_frames=3)  # num_frames: 3 frames per clip.
  c.input.crop_scale = (0.08, 1.0)
  # fusion: one head shared by all modalities.
  # init: main.py:719 weight_init.
  recipes.resnet18_pair(c, fusion="shared_head", init="ogm_ge")

  c.method.name = "mla"
  c.method.variant = "original"
  c.method.inference = "entropy"  # --dynamic.
  c.method.audio_weight = 0.55  # main.py:968 (inference='fixed' only).

  c.optimizer.name = "sgd"  # main.py:749.
  c.optimizer.learning_rate = 1e-3
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.optimizer.schedule = "step"  # StepLR(70, 0.1) per epoch.
  c.optimizer.step_epochs = 70
  c.optimizer.gamma = 0.1
  c.train.batch_size = 64  # README.
  c.train.num_epochs = 100  # README.
  if arg == "smoke":
    apply_smoke(c)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
