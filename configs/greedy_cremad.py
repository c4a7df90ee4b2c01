r"""Greedy / balanced multi-modal learning (Wu et al., ICML 2022) on CREMA-D: MMTM-coupled
ResNet-18s (model av_resnet_mmtm).

  python -m avjax.main --config configs/greedy_cremad.py
  python -m avjax.main --config configs/greedy_cremad.py:smoke   # tiny synthetic stand-in
  ... --config.method.variant=balancebenchmark   # BB's form: MMTM after layers 1-4, concat head

The paper and its code (nyukat/greedy_multimodal_learning @ a190e03, "GRD") have no CREMA-D run;
the method's own values (threshold, window, warm-up, MMTM places, per-branch heads) are GRD's and
the training harness is BalanceBenchmark's (GeWu-Lab/BalanceBenchmark @ 4c1482f, "BB"), the only
code that trains Greedy on CREMA-D (BB reports 66.48 / 66.54 ACC / F1 with its own variant).
Needs crema_d built with its 'ogm_ge' config (BB reads the OGM-GE preprocessing).
"""

from avjax.config import apply_smoke, base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "greedy_cremad"
  c.seed = 42  # BB configs/global_config.yaml:1.
  c.dataset.name = "crema_d"
  c.dataset.config = "ogm_ge"
  # BalanceBenchmark selects its checkpoint on the TEST split; avjax selects on a held-out fold of
  # train (avjax/protocol.py) and evaluates test once. --config.train.select_on=test reproduces the
  # reference's selection (rows labelled test).
  c.dataset.val_split = "heldout"
  c.dataset.test_split = "test"
  c.input.num_frames = 1  # OGM-GE's 1-fps, 1-frame CREMA-D input.
  c.input.image_size = 224
  c.input.crop_scale = (0.08, 1.0)
  c.model.name = "av_resnet_mmtm"
  c.model.fusion = "concat"  # BB's head (used by variant 'balancebenchmark' only).
  # BB: conv kaiming fan_out, BN gamma ~ N(1, 0.02), torch Linears.
  c.model.av_resnet.init = "mmcosine"
  c.model.av_resnet.widths = (64, 128, 256, 512)

  c.method.name = "greedy"
  c.method.variant = "original"  # GRD: MMTM after layers 2-4, per-branch heads, summed CE.
  c.method.threshold = 0.01  # GRD configs/training_guided.gin:14 (BB: 0.001).
  c.method.window = 5  # GRD training_guided.gin:15; BB trainer_config.yaml:61.
  c.method.warmup_epochs = 1  # GRD starting_epoch 2 (1-based) (training_guided.gin:16).
  c.method.mmtm_ratio = 4.0  # GRD src/model.py:58-60; BB avclassify_model.py:399-402.
  c.method.utilisation_every = 0  # The analysis pass is off (GRD runs it after training).

  c.optimizer.name = "adamw"  # BB global_config.yaml:29-30,42-44: AdamW 1e-3, wd 0.01.
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 0.01
  c.optimizer.schedule = "step"  # BB: StepLR(10, 0.1) per epoch (global_config.yaml:46-48).
  c.optimizer.step_epochs = 10
  c.optimizer.gamma = 0.1
  c.train.batch_size = 32  # BB global_config.yaml:4.
  c.train.num_epochs = 30  # BB trainer_config.yaml:4.
  if arg == "smoke":
    apply_smoke(c)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
