r"""OGM-GE on CREMA-D (Peng et al., CVPR 2022), concatenation fusion.

  python -m avjax.main --config configs/ogm_ge_cremad.py
  python -m avjax.main --config configs/ogm_ge_cremad.py:smoke   # tiny synthetic stand-in, ~1 minute

Values follow GeWu-Lab/OGM-GE_CVPR2022 at HEAD 343dc1d (main.py and its README); the source of each is
noted next to it. Needs the crema_d dataset built with its 'ogm_ge' config (OGM-GE's audio front end:
22.05 kHz log-STFT (257, 188); 1 fps frames).
"""

from avjax import recipes
from avjax.config import apply_smoke, base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "ogm_ge_cremad"
  c.seed = 0  # main.py --random_seed 0.
  # The reference has train.csv / test.csv only and keeps the epoch with the best TEST accuracy.
  # num_frames: main.py --num_frame default 1 (T = 1).
  # image_size: dataset.py: RandomResizedCrop(224) train, Resize(224) test.
  recipes.audio_visual_input(c, "crema_d", num_frames=1, image_size=224)
  c.input.random_resized_crop = True
  c.input.crop_scale = (0.08, 1.0)  # torchvision RandomResizedCrop default scale.
  c.input.flip = True  # RandomHorizontalFlip.
  # fusion: README: --fusion_method concat. init: main.py applies weight_init.
  recipes.resnet18_pair(c, init="ogm_ge", fusion="concat")

  c.method.name = "ogm_ge"  # README: --modulation OGM_GE.
  c.method.alpha = 0.8  # README tip: alpha 0.8 for CREMA-D (0.1 for VGGSound).
  c.method.modulation_starts = 0  # README: --modulation_starts 0 (inclusive, 0-indexed epochs).
  c.method.modulation_ends = 50  # README: --modulation_ends 50 (inclusive).

  c.optimizer.name = "sgd"  # main.py: SGD (--optimizer adam is ignored).
  c.optimizer.learning_rate = 1e-3  # main.py --learning_rate 0.001.
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4  # On all parameters, added after the modulation.
  c.optimizer.schedule = "step"  # StepLR, stepped per epoch.
  c.optimizer.step_epochs = 70  # main.py --lr_decay_step 70.
  c.optimizer.gamma = 0.1  # main.py --lr_decay_ratio 0.1.
  # The reference runs DataParallel on 2 GPUs (BatchNorm statistics per 32 samples); avjax's
  # BatchNorm under jit sees the whole global batch of 64.
  c.train.batch_size = 64  # main.py --batch_size 64.
  c.train.num_epochs = 100  # main.py --epochs 100.
  if arg == "smoke":
    apply_smoke(c)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
