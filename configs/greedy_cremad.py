r"""Greedy / balanced multi-modal learning (Wu et al., ICML 2022) on CREMA-D: MMTM-coupled
ResNet-18s (model av_resnet_mmtm).

  python -m avjax.main --config configs/greedy_cremad.py
  python -m avjax.main --config configs/greedy_cremad.py:smoke   # tiny synthetic stand-in
  ... --config.method.variant=balancebenchmark   # BB's form: MMTM after layers 1-4, concat head

The paper and its code (nyukat/greedy_multimodal_learning @ a190e03, "GRD") have no CREMA-D run;
the method's own values (threshold, window, warm-up, MMTM places, per-branch heads) are GRD's and
the training harness is BalanceBenchmark's (GeWu-Lab/BalanceBenchmark @ 4c1482f, "BB"), the only
code that trains Greedy on CREMA-D (BB reports 66.48 / 66.54 ACC / F1 with its own variant).
Needs crema_d built with its 'ogm_ge' config (BB reads the OGM-GE preprocessing).
"""

from avjax import recipes
from avjax.config import apply_smoke, base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "greedy_cremad"
  # BalanceBenchmark selects its checkpoint on the TEST split.
  # num_frames: OGM-GE's 1-fps, 1-frame CREMA-D input.
  recipes.audio_visual_input(c, "crema_d", num_frames=1)
  c.input.crop_scale = (0.08, 1.0)
  # fusion: BB's head (used by variant 'balancebenchmark' only).
  # init: BB: conv kaiming fan_out, BN gamma ~ N(1, 0.02), torch Linears.
  recipes.resnet18_pair(c, model="av_resnet_mmtm", init="mmcosine", fusion="concat")

  c.method.name = "greedy"
  c.method.variant = "original"  # GRD: MMTM after layers 2-4, per-branch heads, summed CE.
  c.method.threshold = 0.01  # GRD configs/training_guided.gin:14 (BB: 0.001).
  c.method.window = 5  # GRD training_guided.gin:15; BB trainer_config.yaml:61.
  c.method.warmup_epochs = 1  # GRD starting_epoch 2 (1-based) (training_guided.gin:16).
  c.method.mmtm_ratio = 4.0  # GRD src/model.py:58-60; BB avclassify_model.py:399-402.
  c.method.utilisation_every = 0  # The analysis pass is off (GRD runs it after training).

  recipes.balancebenchmark_training(c)
  if arg == "smoke":
    apply_smoke(c)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
