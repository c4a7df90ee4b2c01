r"""OPM on Kinetics-Sounds (Wei, Hu, Du, Wen, T-PAMI 2024), concatenation fusion.

  python -m avjax.main --config configs/opm_ks.py
  python -m avjax.main --config configs/opm_ks.py:smoke   # tiny synthetic stand-in

Values follow GeWu-Lab/BML_TPAMI2024 @ 8db168f (code/config.py, code/main.py argparse,
code/scripts/train_opm.sh), whose code is written for Kinetics-Sounds; the source of each is noted
next to it. Needs kinetics_sounds built with its 'ogm_ge' config (BML reads its own HDF5 frames and
spectrograms; avjax's KS front end is OGM-GE's).
"""

from avjax import recipes
from avjax.config import apply_smoke, base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "opm_ks"
  c.seed = 0  # config.py random_seed 0.
  # The reference selects its checkpoint on the TEST split.
  # num_frames: config.py use_video_frames 3.
  # image_size: config.py sample_size 112.
  recipes.audio_visual_input(c, "kinetics_sounds", num_frames=3, image_size=112)
  # fusion: scripts/train_opm.sh --fusion_method concat.
  # init: main.py weight_init: kaiming_normal fan_out, xavier_normal, BN 1 / 0.
  recipes.resnet18_pair(c, init="ogm_ge", fusion="concat")

  c.method.name = "opm"
  c.method.variant = "original"
  c.method.q_base = 0.5  # scripts/train_opm.sh --q_base 0.5 (main.py default 0.5).
  c.method.lam = 0.5  # --lam 0.5.
  c.method.p_exe = 0.7  # --p_exe 0.7.
  c.method.modulation_starts = 6  # main.py:91 warm_up = epoch <= 5: no drop in epochs 0-5.
  c.method.modulation_ends = None

  c.optimizer.name = "adamw"  # main.py:267: AdamW(lr, weight_decay=0.01).
  c.optimizer.learning_rate = 5e-5  # config.py learning_rate.
  c.optimizer.weight_decay = 0.01
  c.optimizer.schedule = "step"  # StepLR(lr_decay_step 40, 0.1), stepped per epoch.
  c.optimizer.step_epochs = 40
  c.optimizer.gamma = 0.1
  c.train.batch_size = 32  # config.py batch_size 32.
  c.train.num_epochs = 100  # config.py epochs 100.
  if arg == "smoke":
    apply_smoke(c)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
