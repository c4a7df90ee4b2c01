r"""OGM-GE on VGGSound (Peng et al., CVPR 2022), concatenation fusion.

  python -m avjax.main --config configs/ogm_ge_vggsound.py
  python -m avjax.main --config configs/ogm_ge_vggsound.py:smoke   # tiny synthetic stand-in

GeWu-Lab/OGM-GE_CVPR2022 (HEAD 343dc1d) trains every dataset with the same main.py, so the optimiser
and schedule match configs/ogm_ge_cremad.py. Needs the vggsound dataset built with its 'ogm_ge' config,
which stores the 16 kHz log-STFT of the whole 10 s, (129, 1251), and 1 fps frames; the reference's
random 5 s crop, (129, 626), and its 3 frames are taken per example in the input pipeline
(avjax.data.clips.crop_time / random_frame_indices).
"""

from avjax import recipes
from avjax.config import apply_smoke, base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "ogm_ge_vggsound"
  c.seed = 0  # main.py --random_seed 0.
  # The reference has train / test only and keeps the epoch with the best TEST accuracy.
  # num_frames: 3 frames at 1 fps.
  # frame_sampling: sorted random frames in training (as intended), centres in test.
  # image_size: RandomResizedCrop(224) + flip; test Resize(224).
  recipes.audio_visual_input(c, "vggsound", num_frames=3, frame_sampling="random", image_size=224)
  c.input.audio_crop_seconds = 5.0  # A random 5 s of the stored 10 s spectrogram (centred in test).
  c.input.crop_scale = (0.08, 1.0)
  # fusion: README: --fusion_method concat.
  recipes.resnet18_pair(c, init="ogm_ge", fusion="concat")

  c.method.name = "ogm_ge"  # README: --modulation OGM_GE.
  c.method.alpha = 0.1  # README tip: alpha 0.1 for VGGSound.
  c.method.modulation_starts = 0  # README: --modulation_starts 0.
  c.method.modulation_ends = 50  # README: --modulation_ends 50.

  c.optimizer.name = "sgd"  # main.py: SGD lr 1e-3, momentum 0.9, weight decay 1e-4.
  c.optimizer.learning_rate = 1e-3
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.optimizer.schedule = "step"
  c.optimizer.step_epochs = 70  # StepLR(70, 0.1), stepped per epoch.
  c.optimizer.gamma = 0.1
  c.train.batch_size = 64  # main.py --batch_size 64.
  c.train.num_epochs = 100  # main.py --epochs 100.
  if arg == "smoke":
    apply_smoke(c)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
