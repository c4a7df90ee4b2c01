r"""MMCosine on CREMA-D (Xu et al., ICASSP 2023), concatenation fusion.

  python -m avjax.main --config configs/mmcosine_cremad.py
  python -m avjax.main --config configs/mmcosine_cremad.py:smoke   # tiny synthetic stand-in

Values follow GeWu-Lab/MMCosine_ICASSP23 at HEAD 00ba0a9 (main_CD.py argparse defaults); the source
of each is noted next to it. Needs the crema_d dataset built with its 'mmcosine' config (MMCosine's
audio front end: 16 kHz scipy spectrogram, z-scored, (257, 299); one frame per clip).
For FiLM / gated fusion set model.fusion_kwargs.form = 'mmcosine' (the symmetric variants) and, as
the author recommends (MMCosine issue #1), a larger method.scaling such as 50.
"""

from avjax import recipes
from avjax.config import apply_smoke, base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "mmcosine_cremad"
  c.seed = 0  # main_CD.py --random_seed 0.
  # The reference has train / test only and keeps the epoch with the best TEST accuracy.
  recipes.audio_visual_input(c, "crema_d", num_frames=1, build_config="mmcosine")  # T = 1.
  # fusion: main_CD.py --fusion_method concat.
  # init: MMCosine never calls weight_init (BN gamma ~ N(1, 0.02), torch Linear).
  recipes.resnet18_pair(c, init="mmcosine", fusion="concat")

  c.method.name = "mmcosine"  # main_CD.py --mmcosine True.
  c.method.scaling = 10.0  # main_CD.py --scaling 10.
  c.method.nce_weight = 0.0  # main_CD.py --lam 0 (NCE is only used in the supplementary).
  c.method.nce_temperature = 0.1  # NCELoss(temperature=0.1).

  c.optimizer.name = "sgd"  # main_CD.py --optimizer sgd.
  c.optimizer.learning_rate = 1e-3  # --learning_rate 0.001.
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.optimizer.schedule = "step"  # StepLR, stepped per epoch.
  c.optimizer.step_epochs = 100  # --lr_decay_step 100.
  c.optimizer.gamma = 0.1  # --lr_decay_ratio 0.1.
  c.train.batch_size = 32  # --batch_size 32.
  c.train.num_epochs = 200  # --epochs 200.
  if arg == "smoke":
    apply_smoke(c)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
