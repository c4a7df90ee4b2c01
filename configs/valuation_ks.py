r"""Sample-level modality valuation and re-sampling on Kinetics-Sounds (Wei et al., CVPR 2024).

  python -m avjax.main --config configs/valuation_ks.py
  python -m avjax.main --config configs/valuation_ks.py:smoke   # tiny synthetic stand-in (debiased)

Values follow GeWu-Lab/Valuate-and-Enhance-Multimodal-Cooperation at HEAD 7ed12b0 (code/sample_level.py
arguments; the source of each is noted next to it). Needs the kinetics_sounds dataset built with its
'ogm_ge' config (Kaldi fbank (1024, 128), 1 fps frames; the valuation repo's loader uses the same
front end and frame rule). The method (avjax/methods/valuation.py) valuates every training example
after each epoch from the warm-up on and adds single-modality copies of the examples whose modality
contributes little; see docs/deviations.md for where avjax differs.
"""

import ml_collections

from avjax import recipes
from avjax.config import apply_smoke, base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "valuation_ks"
  c.seed = 0  # sample_level.py --random_seed 0.
  # The repo's loader has train / val / test lists but keeps the epoch with the best TEST
  # accuracy; avjax selects on validation (build the dataset with the validation list, or set
  # --config.dataset.val_split=test to reproduce the reference's selection).
  # num_frames: dataloader.py: pick_num = 3.
  # frame_sampling: t_i ~ U{i*seg+1 .. i*seg+seg} capped at 9 (train), centres (test).
  # image_size: RandomResizedCrop(224) + RandomHorizontalFlip; test Resize(224).
  recipes.audio_visual_input(c, "kinetics_sounds", num_frames=3, val_split="validation",
                             image_size=224)
  c.input.crop_scale = (0.08, 1.0)  # torchvision defaults.
  recipes.resnet18_pair(c, init="ogm_ge")  # models.py: two ResNet-18 encoders, concat fusion.

  c.method.name = "valuation_sample"  # sample_level.py --modulation sample.
  c.method.warmup_epochs = 5  # --warmup 5 (plain joint training; re-sampling from epoch 6).
  c.method.value_fn = "size"  # v(S) = |S| * 1[correct] (execute_modulation: value_all = 2.0).

  c.optimizer.name = "adam"  # --optimizer adam (HEAD; the first release used SGD lr 1e-3).
  c.optimizer.learning_rate = 5e-5  # --learning_rate 5e-05.
  c.optimizer.b1, c.optimizer.b2, c.optimizer.eps = 0.9, 0.999, 1e-8  # optim.Adam(betas, eps).
  c.optimizer.weight_decay = 1e-4  # Adam weight_decay 1e-4 (L2 added to the gradient).
  c.optimizer.schedule = "step"  # StepLR stepped once per epoch (the method counts epochs).
  c.optimizer.step_epochs = 30  # --lr_decay_step 30.
  c.optimizer.gamma = 0.1  # --lr_decay_ratio 0.1.
  c.train.batch_size = 64  # --batch_size 64.
  c.train.num_epochs = 60  # --epochs 60.
  if arg == "smoke":
    smoke(c)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c


def smoke(c):
  """The tiny stand-in (about a minute on a CPU): synthetic_av 'debiased' (per clip exactly one
  modality carries the label, the other is noise) at 3 classes with well visible targets, one
  16x16 frame, small ResNets, one warm-up epoch so the second epoch is re-sampled, Adam 2e-3 so the
  model learns within its 2 epochs; by then the per-sample contributions single out each clip's
  informative modality (tests/methods/test_valuation.py)."""
  apply_smoke(c)
  c.dataset.config = "debiased"
  c.dataset.val_split = "validation"
  c.dataset.build_overrides = ml_collections.ConfigDict(dict(
      num_train=384, num_validation=64, num_test=64, num_classes=3, num_frames=1,
      visual_visibility=(0.8, 1.0), pixel_noise=6.0))
  c.input.frame_sampling = "segment"
  c.input.audio_crop_seconds = 0.0
  c.input.num_frames = 1
  c.input.image_size = 16
  c.input.crop_scale = (0.5, 1.0)
  c.model.av_resnet.widths = (8, 8, 8, 8)
  c.method.warmup_epochs = 1
  c.optimizer.learning_rate = 2e-3
  c.optimizer.weight_decay = 0.0
  c.train.batch_size = 16
  return c
