r"""Sample-level modality valuation and re-sampling on MM-Debiased (Wei et al., CVPR 2024).

  python -m avjax.main --config configs/valuation_mmdebiased.py
  python -m avjax.main --config configs/valuation_mmdebiased.py:smoke   # synthetic_av 'debiased'

MM-Debiased (10 classes of VGGSound / Kinetics-400 clips chosen so that the helpful modality varies
per sample; training / validation / testing subsets) is the paper's own dataset; its repo ships
MM-Debiased.json but no loader for it, so the data follow the vggsound builder's 'mm_debiased' config
(OGM-GE's VGGSound front end: 16 kHz log-STFT of the whole clip, (129, 1251), 1 fps frames; the 5 s
audio crop is taken in the input pipeline) and the training settings are the repo's
(code/sample_level.py at HEAD 7ed12b0, as configs/valuation_ks.py).
"""

import importlib.util
import os

from avjax import recipes
from avjax.config import base_config

_spec = importlib.util.spec_from_file_location(  # The shared smoke stand-in.
    "_valuation_ks", os.path.join(os.path.dirname(os.path.abspath(__file__)), "valuation_ks.py"))
_ks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_ks)


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "valuation_mmdebiased"
  c.seed = 0  # sample_level.py --random_seed 0.
  # The json's 'validation' subset selects the checkpoint. dataset config: MM-Debiased.json:
  # 11,368 / 1,185 / 1,472 clips, 10 classes. num_frames: 3 frames per clip, the repo's pick_num.
  # frame_sampling: the repo's frame rule (one random frame per third; centres).
  # image_size: RandomResizedCrop(224) + flip; test Resize(224).
  recipes.audio_visual_input(c, "vggsound", num_frames=3, build_config="mm_debiased",
                             frame_sampling="ks", val_split="validation")
  c.input.audio_crop_seconds = 5.0  # OGM-GE's VGGSound recipe: a random 5 s window, (129, 626).
  c.input.crop_scale = (0.08, 1.0)
  recipes.resnet18_pair(c, init="ogm_ge")  # The repo's AVClassifier: two ResNet-18s, concat.

  c.method.name = "valuation_sample"  # Figure 1's sample-level variant (+1.49 over joint training).
  c.method.warmup_epochs = 5  # --warmup 5.
  c.method.value_fn = "size"  # v(S) = |S| * 1[correct].

  c.optimizer.name = "adam"  # --optimizer adam, lr 5e-5, betas (0.9, 0.999), weight decay 1e-4.
  c.optimizer.learning_rate = 5e-5
  c.optimizer.weight_decay = 1e-4
  c.optimizer.schedule = "step"  # StepLR(30, 0.1), stepped once per epoch.
  c.optimizer.step_epochs = 30
  c.optimizer.gamma = 0.1
  c.train.batch_size = 64  # --batch_size 64.
  c.train.num_epochs = 60  # --epochs 60.
  if arg == "smoke":
    _ks.smoke(c)  # synthetic_av 'debiased': per clip one modality carries the label.
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
