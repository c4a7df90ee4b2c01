r"""OGM-GE on AVE (Peng et al., CVPR 2022), concatenation fusion.

  python -m avjax.main --config configs/ogm_ge_ave.py
  python -m avjax.main --config configs/ogm_ge_ave.py:smoke   # tiny synthetic stand-in

GeWu-Lab/OGM-GE_CVPR2022 (HEAD 343dc1d) trains every dataset with the same main.py, so the optimiser
and schedule match configs/ogm_ge_cremad.py. Needs the ave dataset built with its 'ogm_ge' config
(OGM-GE's AVE audio: log PSD of 160000 samples, (257, 1004); 1 fps frames; 28 classes).
"""

from avjax import recipes
from avjax.config import apply_smoke, base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "ogm_ge_ave"
  c.seed = 0  # main.py --random_seed 0.
  # The reference trains on its train list and keeps the epoch with the best TEST accuracy; AVE
  # ships an official validation list (valSet.txt), which avjax uses for model selection instead.
  # dataset.py (AVE): 3 frames, frame i * (n // 3) + 1 of the 1 fps frames, the same in training
  # and test (frame_sampling 'ave': avjax.data.clips.ave_frame_indices).
  # image_size: RandomResizedCrop(224) + flip in training; Resize((224, 224)) in test.
  recipes.audio_visual_input(c, "ave", num_frames=3, frame_sampling="ave", val_split="validation",
                             image_size=224)
  c.input.random_resized_crop = True
  c.input.crop_scale = (0.08, 1.0)  # torchvision RandomResizedCrop default scale.
  c.input.flip = True  # RandomHorizontalFlip.
  # fusion: README: --fusion_method concat. init: main.py applies weight_init.
  recipes.resnet18_pair(c, init="ogm_ge", fusion="concat")

  c.method.name = "ogm_ge"  # README: --modulation OGM_GE.
  c.method.alpha = 0.1  # README default --alpha 0.1 (its tip names no AVE value).
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
