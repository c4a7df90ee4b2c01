r"""PMR on Kinetics-Sounds in BalanceBenchmark's setting (BB reports KS 67.11 ACC for PMR).

  python -m avjax.main --config configs/pmr_ks.py
  python -m avjax.main --config configs/pmr_ks.py:smoke   # tiny synthetic stand-in

The PMR authors released no Kinetics-Sounds run, so this follows GeWu-Lab/BalanceBenchmark @ 4c1482f
(configs/global_config.yaml, configs/trainer_config.yaml:40-46, trainer/PMR_trainer.py): BB's
prototype EMA from the second epoch on (variant 'balancebenchmark'), the binary rule, the same
10 % prototype pass. Needs kinetics_sounds built with its 'ogm_ge' config.
"""

from avjax import recipes
from avjax.config import apply_smoke, base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "pmr_ks"
  # BalanceBenchmark selects its checkpoint on the TEST split.
  recipes.audio_visual_input(c, "kinetics_sounds", num_frames=3)
  # init: BB: kaiming fan_out, BN gamma ~ N(1, 0.02) (resnet18_encoder.py).
  recipes.resnet18_pair(c, init="mmcosine")

  c.method.name = "pmr"
  c.method.variant = "balancebenchmark"
  c.method.alpha = 0.6  # BB trainer_config.yaml:40-46.
  c.method.momentum = 0.5  # momentum_coef 0.5.
  c.method.modulation_starts = 0  # Window 0-80: all 30 epochs.
  c.method.modulation_ends = 80
  c.method.prototype_fraction = 0.1  # PMR_trainer.py:233-234.
  c.method.coefficients = "binary"  # BB HEAD (59c3446 reverted 01458a1's continuous form).

  recipes.balancebenchmark_training(c)
  if arg == "smoke":
    apply_smoke(c)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
