r"""CML, Calibrating Multimodal Learning (Ma et al., ICML 2023), on Kinetics-Sounds.

  python -m avjax.main --config configs/cml_ks.py
  python -m avjax.main --config configs/cml_ks.py:smoke   # tiny synthetic stand-in

There is no official audio-visual code: the recipe is BalanceBenchmark's (GeWu-Lab/BalanceBenchmark
@ 4c1482f, configs/global_config.yaml and trainer_config.yaml; one recipe for every dataset). The
official code (QingyangZhang/CML) covers incomplete multi-view tabular data only. avjax runs the
intended loss by default (per-example hinge with the authors' trick-1 mask, a random modality
removed per example); config.method.variant='balancebenchmark' is BB's code as written (batch-sum
hinge, one modality per epoch, CE on the reduced logits, halved).
Data: OGM-GE's preprocessing of the 'kinetics_sounds' builder (config 'ogm_ge').
"""

from avjax import recipes
from avjax.config import apply_smoke, base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "cml_ks"
  # BalanceBenchmark selects its checkpoint on the TEST split.
  # num_frames: OGM-GE's Kinetics-Sounds front end (3 frames, 1 fps).
  recipes.audio_visual_input(c, "kinetics_sounds", num_frames=3)
  # fusion: BB's default fusion (its uni-modal slices exist only for concat).
  recipes.resnet18_pair(c, fusion="concat")

  c.method.name = "cml"
  c.method.variant = "intended"  # 'balancebenchmark': CML_trainer.py:170-201 as written.
  c.method.lam = 0.1  # trainer_config.yaml:32 (lam).

  recipes.balancebenchmark_training(c)
  if arg == "smoke":
    apply_smoke(c)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
