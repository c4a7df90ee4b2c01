r"""ReconBoost (Hua et al., ICML 2024) on CREMA-D, as huacong/ReconBoost train.py (@ 14ab57a).

The original starts from uni-modal pre-trained encoders (README: --use_pretrain); in avjax that is
a chain of runs through config.init_from, one command each:

  python -m avjax.main --config configs/unimodal_cremad.py:audio \
      --workdir runs/unimodal_cremad_audio
  python -m avjax.main --config configs/unimodal_cremad.py:visual \
      --workdir runs/unimodal_cremad_visual_on_audio --config.init_from=runs/unimodal_cremad_audio
  python -m avjax.main --config configs/reconboost_cremad.py --workdir runs/reconboost_cremad \
      --config.init_from=runs/unimodal_cremad_visual_on_audio

(the visual run trains only its own pathway, so it carries the trained audio encoder too; its
visual encoder starts from the same seed's initialisation as a run of its own). Without
init_from the encoders start from scratch, as in BalanceBenchmark.
`:balancebenchmark` gives BB's ReconBoost_trainer.py settings (variant='balancebenchmark'); `:smoke`
the tiny synthetic stand-in. Needs crema_d built with its 'ogm_ge' config (the original's CREMA-D
loader is OGM-GE's: STFT 512 / 353 over 3 s, one frame).
"""

from avjax import recipes
from avjax.config import apply_smoke, base_config


def get_config(arg: str | None = None):
  parts = arg.split("_") if arg else []
  if any(p not in ("balancebenchmark", "smoke") for p in parts):
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke', 'balancebenchmark', "
                     "'balancebenchmark_smoke' or nothing.")
  c = base_config()
  c.name = "reconboost_cremad"
  c.seed = 0  # train.py:93-98 (torch and random seeded with 0).
  # The reference selects its checkpoint on the TEST split (train.py:420-441).
  # num_frames: loaders/CramedDataset.py: one frame.
  recipes.audio_visual_input(c, "crema_d", num_frames=1)
  recipes.resnet18_pair(c)  # ResNet-18 encoders (512-d pooled); the method owns H and rho.

  c.method.name = "reconboost"
  c.method.variant = "original"
  c.method.weight1 = 5.0  # README, CREMA-D: --weight1 5.
  c.method.weight2 = 1.0  # README: --weight2 1.
  c.method.epochs_per_stage = 4  # train.py:59.
  c.method.correct_epochs = 4  # train.py:60.
  c.method.boost_rate_init = 1.0  # models/dynamic_net.py:33; train.py:57.
  c.method.head_hidden = 256  # models/dynamic_net.py:5-15: Linear(512, 256), ReLU, Linear(256, C).
  c.method.correction_lr_scale = 1.0  # e_lr / m_lr = 0.01 / 0.01 (train.py:64-65).

  c.optimizer.name = "sgd"  # A new SGD per phase (train.py:296-402), lr m_lr 0.01.
  c.optimizer.learning_rate = 0.01
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 5e-4
  c.optimizer.schedule = "step"  # x0.1 every 30 stages of 4 + 4 epochs (train.py:445-451).
  c.optimizer.step_epochs = 240
  c.optimizer.gamma = 0.1
  c.train.batch_size = 64  # train.py:56.
  c.train.num_epochs = 800  # 100 stages (the released CREMA-D checkpoint is from stage 99).
  if "balancebenchmark" in parts:  # BB trainer_config.yaml:70-76, global_config.yaml.
    c.name = "reconboost_cremad_bb"
    recipes.balancebenchmark_training(c)
    c.method.variant = "balancebenchmark"
    c.method.epochs_per_stage = 1  # T_epochs = 1 (ReconBoost_trainer.py:77-87).
    c.method.correct_epochs = 1
    c.method.boost_rate_init = 0.01  # avclassify_model.py:742.
    c.method.head_hidden = 0  # SharedHead: Linear(512, C) (fusion_arch.py:15-21).
    # One AdamW, never re-created; StepLR(10) per BB epoch = 4 avjax epochs (2 modalities x 2).
    c.optimizer.step_epochs = 40
    c.train.num_epochs = 120  # 30 BB epochs.
  if "smoke" in parts:
    apply_smoke(c)
    c.method.epochs_per_stage = 1
    c.method.correct_epochs = 1
  return c
