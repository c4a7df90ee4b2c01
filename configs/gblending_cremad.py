r"""Online Gradient-Blending (Wang et al., CVPR 2020) on CREMA-D.

  python -m avjax.main --config configs/gblending_cremad.py
  python -m avjax.main --config configs/gblending_cremad.py:smoke   # tiny synthetic stand-in

G-Blending has no official code and the paper has no CREMA-D / Kinetics-Sounds runs: the recipe is
BalanceBenchmark's (GeWu-Lab/BalanceBenchmark @ 4c1482f: configs/global_config.yaml,
trainer_config.yaml:34-39, one recipe for every dataset), with separate uni-modal heads (the paper,
MultiBench) and the weights estimated on a held-out fold of the training split (BB uses the test
set). Each super-epoch is 10 estimation epochs (the throw-away copies train) then 10 epochs of the
model, so BB's 30 model epochs are 60 trainer epochs here (about 4x a baseline run's compute, as
BB).
Data: OGM-GE's preprocessing of the 'crema_d' builder (config 'ogm_ge').
"""

from avjax import recipes
from avjax.config import apply_smoke, base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "gblending_cremad"
  # BalanceBenchmark selects its checkpoint on the TEST split. The blending weights never see
  # validation or test (a held-out fold of train does).
  # num_frames: OGM-GE's CREMA-D front end (1 fps frames, T = 1).
  recipes.audio_visual_input(c, "crema_d", num_frames=1)
  # fusion: BB's default fusion; the paper's late fusion is a concat head.
  recipes.resnet18_pair(c, fusion="concat")

  c.method.name = "gblending"
  c.method.super_epoch = 10  # trainer_config.yaml:34-39 (method: online, super_epoch: 10).
  c.method.estimate_epochs = 10  # BB trains each copy super_epoch epochs (:306-376).

  recipes.balancebenchmark_training(c)  # StepLR(10, 0.1) per model epoch.
  c.train.num_epochs = 60  # trainer_config.yaml:4: 30 model epochs, plus 3 estimates of 10.
  if arg == "smoke":
    apply_smoke(c)
    c.method.super_epoch = 1  # One estimation epoch, then one model epoch.
    c.method.estimate_epochs = 1
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
