r"""UMT (Uni-Modal Teacher; Du et al., ICML 2023) on Kinetics-Sounds, as BalanceBenchmark runs it
(balancemm/trainer/UMT_trainer.py; no official code exists). The chain, one command each:

  python -m avjax.main --config configs/unimodal_ks.py:audio \
      --workdir runs/unimodal_ks_audio
  python -m avjax.main --config configs/unimodal_ks.py:visual \
      --workdir runs/unimodal_ks_visual
  python -m avjax.main --config configs/umt_ks.py --workdir runs/umt_ks

The teachers are read from config.method.teacher_audio / teacher_visual (defaults: the workdirs
above; `--config.method.teacher_audio=DIR` points elsewhere). A missing teacher run stops the
student at its start with the command that trains it. `:smoke` is the tiny synthetic stand-in;
its teachers are the same commands with `:audio_smoke` / `:visual_smoke` and
`--config.method.teacher_audio=... --config.method.teacher_visual=...`.
Training settings are BB's (configs/global_config.yaml, trainer_config.yaml at 4c1482f). Needs
kinetics_sounds built with its 'ogm_ge' config.
"""

from avjax.config import apply_smoke, base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "umt_ks"
  c.seed = 42  # global_config.yaml:1.
  c.dataset.name = "kinetics_sounds"
  c.dataset.config = "ogm_ge"
  # BalanceBenchmark selects its checkpoint on the TEST split; avjax selects on a held-out fold of
  # train (avjax/protocol.py) and evaluates test once. --config.train.select_on=test reproduces the
  # reference's selection (rows labelled test).
  c.dataset.val_split = "heldout"
  c.dataset.test_split = "test"
  c.input.num_frames = 3  # 3 frames per clip (datasets.md: BB picks 3).
  c.input.frame_sampling = "ks"
  c.input.image_size = 224
  c.model.name = "av_resnet"
  c.model.fusion = "concat"  # BB's BaseClassifier: concat head.
  c.model.av_resnet.widths = (64, 128, 256, 512)  # ResNet-18, the teachers' encoders too.

  c.method.name = "umt"
  c.method.teacher_audio = "runs/unimodal_ks_audio"  # The chain's first run.
  c.method.teacher_visual = "runs/unimodal_ks_visual"  # Its second.
  c.method.scaling = 10.0  # trainer_config.yaml:62-66 (alpha there is unused).
  c.method.variant = "intended"  # Eval-mode teachers; 'balancebenchmark': train-mode BN.

  c.optimizer.name = "adamw"  # global_config.yaml:29,42-44: AdamW lr 1e-3, weight decay 0.01.
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 0.01
  c.optimizer.schedule = "step"  # StepLR(10, 0.1), stepped once per epoch (:45-48).
  c.optimizer.step_epochs = 10
  c.optimizer.gamma = 0.1
  c.train.batch_size = 32  # global_config.yaml:4.
  c.train.num_epochs = 30  # trainer_config.yaml:4.
  if arg == "smoke":
    apply_smoke(c)
    c.method.teacher_audio = "runs/unimodal_ks_audio_smoke"  # configs/unimodal_ks.py's
    c.method.teacher_visual = "runs/unimodal_ks_visual_smoke"  # smoke runs' default workdirs.
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
