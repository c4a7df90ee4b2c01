r"""AMCo on CREMA-D (Zhou et al., ICASSP 2023) in BalanceBenchmark's form, concat fusion.

  python -m avjax.main --config configs/amco_cremad.py
  python -m avjax.main --config configs/amco_cremad.py:smoke   # tiny synthetic stand-in

The authors published no code; every value follows GeWu-Lab/BalanceBenchmark at 4c1482f
(configs/trainer_config.yaml AMCo block, configs/global_config.yaml), noted next to each. Data: the
'ogm_ge' build (log-STFT (257, 188), 1 fps frames; BB's CREMA-D front end is OGM-GE's). Two
documented changes from BB (docs/deviations.md): the mask is one (C,) row for the whole batch
(BB's (2, C) only works on two GPUs) and the extra C x C layer scores evaluation too
(config.method.eval_logit_map=False evaluates as BB, without it).
"""

from avjax.config import apply_smoke, base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "amco_cremad"
  c.seed = 42  # global_config.yaml:1.
  c.dataset.name = "crema_d"
  c.dataset.config = "ogm_ge"
  # BalanceBenchmark selects its checkpoint on the TEST split; avjax selects on a held-out fold of
  # train (avjax/protocol.py) and evaluates test once. --config.train.select_on=test reproduces the
  # reference's selection (rows labelled test).
  c.dataset.val_split = "heldout"
  c.dataset.test_split = "test"
  c.input.num_frames = 2  # BB configs/dataset_config.yaml CREMAD fps 2.
  c.input.image_size = 224
  c.input.random_resized_crop = True
  c.input.crop_scale = (0.08, 1.0)
  c.input.flip = True
  c.model.name = "av_resnet"
  c.model.fusion = "concat"  # BB's AMCo slices the concat head (avclassify_model.py:366-376).
  # BB: PyTorch-default Linear, kaiming(fan_out) conv, BN N(1, 0.02).
  c.model.av_resnet.init = "mmcosine"
  c.model.av_resnet.widths = (64, 128, 256, 512)  # ResNet-18 encoders.

  c.method.name = "amco"
  c.method.sigma = 0.5  # trainer_config.yaml AMCo sigma.
  c.method.eps = 0.3  # trainer_config.yaml AMCo eps.
  c.method.modulation_starts = 0  # trainer_config.yaml (inclusive, 0-indexed epochs).
  c.method.modulation_ends = 80
  c.method.eval_logit_map = True  # False: BB's evaluation without the C x C layer.

  c.optimizer.name = "adamw"  # global_config.yaml:42-44: AdamW lr 1e-3, weight decay 0.01.
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 0.01
  c.optimizer.schedule = "step"  # StepLR(10, 0.1) per epoch (global_config.yaml:46-48).
  c.optimizer.step_epochs = 10
  c.optimizer.gamma = 0.1
  c.train.batch_size = 32  # global_config.yaml:4.
  c.train.num_epochs = 30  # trainer_config.yaml:4.
  if arg == "smoke":
    apply_smoke(c)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
