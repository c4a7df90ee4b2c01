r"""AMCo on Kinetics-Sounds (Zhou et al., ICASSP 2023) in BalanceBenchmark's form, concat fusion.

  python -m avjax.main --config configs/amco_ks.py
  python -m avjax.main --config configs/amco_ks.py:smoke   # tiny synthetic stand-in

The authors published no code; every value follows GeWu-Lab/BalanceBenchmark at 4c1482f
(configs/trainer_config.yaml AMCo block, configs/global_config.yaml), noted next to each. Data: the
'ogm_ge' build (Kaldi fbank (1024, 128), 1 fps frames). Two
documented changes from BB (docs/deviations.md): the mask is one (C,) row for the whole batch
(BB's (2, C) only works on two GPUs) and the extra C x C layer scores evaluation too
(config.method.eval_logit_map=False evaluates as BB, without it).
"""

from avjax import recipes
from avjax.config import apply_smoke, base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "amco_ks"
  # BalanceBenchmark selects its checkpoint on the TEST split.
  # num_frames: BB KineticsSounds: 3 frames per clip, as OGM-GE.
  recipes.audio_visual_input(c, "kinetics_sounds", num_frames=3)
  c.input.crop_scale = (0.08, 1.0)
  # fusion: BB's AMCo slices the concat head (avclassify_model.py:366-376).
  # init: BB: PyTorch-default Linear, kaiming(fan_out) conv, BN N(1, 0.02).
  recipes.resnet18_pair(c, init="mmcosine", fusion="concat")

  c.method.name = "amco"
  c.method.sigma = 0.5  # trainer_config.yaml AMCo sigma.
  c.method.eps = 0.3  # trainer_config.yaml AMCo eps.
  c.method.modulation_starts = 0  # trainer_config.yaml (inclusive, 0-indexed epochs).
  c.method.modulation_ends = 80
  c.method.eval_logit_map = True  # False: BB's evaluation without the C x C layer.

  recipes.balancebenchmark_training(c)
  if arg == "smoke":
    apply_smoke(c)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
