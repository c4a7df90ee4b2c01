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

from avjax import recipes
from avjax.config import apply_smoke, base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "umt_ks"
  # BalanceBenchmark selects its checkpoint on the TEST split.
  # num_frames: 3 frames per clip (datasets.md: BB picks 3).
  recipes.audio_visual_input(c, "kinetics_sounds", num_frames=3)
  # fusion: BB's BaseClassifier: concat head.
  # widths: ResNet-18, the teachers' encoders too.
  recipes.resnet18_pair(c, fusion="concat")

  c.method.name = "umt"
  c.method.teacher_audio = "runs/unimodal_ks_audio"  # The chain's first run.
  c.method.teacher_visual = "runs/unimodal_ks_visual"  # Its second.
  c.method.scaling = 10.0  # trainer_config.yaml:62-66 (alpha there is unused).
  c.method.variant = "intended"  # Eval-mode teachers; 'balancebenchmark': train-mode BN.

  recipes.balancebenchmark_training(c)
  if arg == "smoke":
    apply_smoke(c)
    c.method.teacher_audio = "runs/unimodal_ks_audio_smoke"  # configs/unimodal_ks.py's
    c.method.teacher_visual = "runs/unimodal_ks_visual_smoke"  # smoke runs' default workdirs.
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
