r"""MMPareto on Kinetics-Sounds (Wei & Hu, ICML 2024), concatenation fusion, separate heads.

  python -m avjax.main --config configs/mmpareto_ks.py
  python -m avjax.main --config configs/mmpareto_ks.py:smoke   # tiny synthetic stand-in

GeWu-Lab/MMPareto_ICML2024 (a339db3) ships a CREMA-D script only; its README lists
Kinetics-Sounds and says the preprocessing follows OGM-GE. So the data side is
configs/ogm_ge_ks.py's (kinetics_sounds 'ogm_ge': Kaldi fbank (1024, 128), 3 frames at 1 fps)
and the method and optimiser are the CREMA-D script's (code/MMPareto.py), as noted next to each
value.
"""

from avjax import recipes
from avjax.config import apply_smoke, base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "mmpareto_ks"
  c.seed = 0  # MMPareto.py --random_seed 0.
  # The reference selects its checkpoint on the TEST split.
  # num_frames: OGM-GE's KS preprocessing: 3 frames per clip.
  recipes.audio_visual_input(c, "kinetics_sounds", num_frames=3)
  c.input.crop_scale = (0.08, 1.0)
  recipes.resnet18_pair(c, init="ogm_ge", fusion="concat")  # fusion: models.py:133-184.

  c.method.name = "mmpareto"
  c.method.gamma = 1.5  # MMPareto.py:178.
  c.method.variant = "original"

  c.optimizer.name = "sgd"  # MMPareto.py:296 (the CREMA-D script; no KS script is shipped).
  c.optimizer.learning_rate = 2e-3
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.optimizer.schedule = "constant"  # The created StepLR is never stepped.
  c.train.batch_size = 64  # script/mmpareto.sh.
  c.train.num_epochs = 50  # MMPareto.py --epochs 50.
  if arg == "smoke":
    apply_smoke(c)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
