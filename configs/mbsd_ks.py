r"""MBSD self-distillation (as BalanceBenchmark cites it: Liu et al., WSDM 2023) on Kinetics-Sounds.

  python -m avjax.main --config configs/mbsd_ks.py
  python -m avjax.main --config configs/mbsd_ks.py:smoke   # tiny synthetic stand-in

There is no official audio-visual code: the recipe is BalanceBenchmark's (GeWu-Lab/BalanceBenchmark
@ 4c1482f, configs/global_config.yaml and trainer_config.yaml; one recipe for every dataset). avjax
runs the intended loss by default (KL on log-probabilities, detached sample weights, separate
uni-modal heads); config.method.variant='balancebenchmark' is BB's code as written (head slices).
Data: OGM-GE's preprocessing of the 'kinetics_sounds' builder (config 'ogm_ge').
"""

from avjax import recipes
from avjax.config import apply_smoke, base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "mbsd_ks"
  # BalanceBenchmark selects its checkpoint on the TEST split.
  # num_frames: OGM-GE's Kinetics-Sounds front end (3 frames, 1 fps).
  recipes.audio_visual_input(c, "kinetics_sounds", num_frames=3)
  # fusion: BB's default fusion (its uni-modal slices exist only for concat).
  recipes.resnet18_pair(c, fusion="concat")

  c.method.name = "mbsd"
  c.method.variant = "intended"  # 'balancebenchmark': MBSD_trainer.py:129-159 as written.

  recipes.balancebenchmark_training(c)
  if arg == "smoke":
    apply_smoke(c)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
