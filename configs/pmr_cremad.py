r"""PMR on CREMA-D (Fan et al., CVPR 2023), concatenation fusion.

  python -m avjax.main --config configs/pmr_cremad.py
  python -m avjax.main --config configs/pmr_cremad.py:smoke   # tiny synthetic stand-in

Values follow fanyunfeng-bit/Modal-Imbalance-PMR @ 3615e48 (main_Prototype_grad.py argparse and its
research log bash.sh, which is not a canonical recipe); the source of each is noted next to it.
The original reads a precomputed z-scored scipy spectrogram (data/CREMAD/audio_preprocessing.py;
the length it used is unclear); avjax's crema_d 'ogm_ge' front end is used here.
"""

from avjax import recipes
from avjax.config import apply_smoke, base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "pmr_cremad"
  c.seed = 0  # main_Prototype_grad.py:57 --random_seed 0.
  # The reference selects its checkpoint on the TEST split.
  # num_frames: bash.sh CREMA-D runs: --num_frame 3.
  recipes.audio_visual_input(c, "crema_d", num_frames=3)
  # init: utils/utils.py weight_init: kaiming_normal fan_out, xavier, BN 1 / 0.
  recipes.resnet18_pair(c, init="ogm_ge")

  c.method.name = "pmr"
  c.method.variant = "original"
  c.method.alpha = 2.0  # bash.sh CREMA-D concat runs (--alpha 2.0); argparse default 1.0.
  c.method.momentum = 0.0  # bash.sh: --momentum_coef 0.0 almost everywhere (argparse 0.2).
  c.method.modulation_starts = 0  # bash.sh CREMA-D concat: window 0-70.
  c.method.modulation_ends = 70
  c.method.prototype_fraction = 0.1  # :429-430: the first n_batches // 10 batches.
  c.method.coefficients = "binary"  # The released rule.
  c.method.entropy_weight = 0.0  # PER is not in the released code.

  c.optimizer.name = "sgd"  # :463-465: SGD momentum 0.9, wd 1e-4 (bash.sh also tries Adam).
  c.optimizer.learning_rate = 1e-3  # bash.sh --learning_rate 0.001 (argparse 1e-4).
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.optimizer.schedule = "step"  # StepLR(70, 0.1) per epoch (:44-45).
  c.optimizer.step_epochs = 70
  c.optimizer.gamma = 0.1
  c.train.batch_size = 64  # :36 --batch_size 64.
  c.train.num_epochs = 150  # :37 --epochs 150 (bash.sh checkpoints "epoch150").
  if arg == "smoke":
    apply_smoke(c)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
