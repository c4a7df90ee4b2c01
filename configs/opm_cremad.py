r"""OPM on CREMA-D (Wei, Hu, Du, Wen, T-PAMI 2024), concatenation fusion.

  python -m avjax.main --config configs/opm_cremad.py
  python -m avjax.main --config configs/opm_cremad.py:smoke   # tiny synthetic stand-in

GeWu-Lab/BML_TPAMI2024 @ 8db168f ships Kinetics-Sounds code only. OPM's settings are its defaults
(code/main.py argparse, scripts/train_opm.sh); the optimisation recipe is the authors' journal
CREMA-D one (BML issue #3: AdamW lr 1e-3, StepLR 20, batch 32, 100 epochs). Needs crema_d built
with its 'ogm_ge' config (OGM-GE's front end, which the BML authors' CREMA-D work uses).
"""

from avjax import recipes
from avjax.config import apply_smoke, base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "opm_cremad"
  c.seed = 0  # config.py random_seed 0.
  # The reference selects its checkpoint on the TEST split.
  recipes.audio_visual_input(c, "crema_d", num_frames=1)
  recipes.resnet18_pair(c, init="ogm_ge")  # init: main.py weight_init.

  c.method.name = "opm"
  c.method.variant = "original"
  c.method.q_base = 0.5  # main.py --q_base 0.5.
  c.method.lam = 0.5  # --lam 0.5.
  c.method.p_exe = 0.7  # --p_exe 0.7.
  c.method.modulation_starts = 6  # main.py:91 warm-up: no drop in epochs 0-5.
  c.method.modulation_ends = None

  c.optimizer.name = "adamw"  # Journal recipe (BML issue #3): AdamW lr 1e-3, wd 0.01 (main.py).
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 0.01
  c.optimizer.schedule = "step"  # StepLR(20, 0.1) per epoch.
  c.optimizer.step_epochs = 20
  c.optimizer.gamma = 0.1
  c.train.batch_size = 32
  c.train.num_epochs = 100
  if arg == "smoke":
    apply_smoke(c)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
