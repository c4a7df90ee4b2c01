r"""The uni-modal baseline on Kinetics-Sounds: one modality's encoder and head trained alone
(BalanceBenchmark's unimodalTrainer, balancemm/trainer/unimodal_trainer.py; README "Unimodal-1/2").

  python -m avjax.main --config configs/unimodal_ks.py:audio \
      --workdir runs/unimodal_ks_audio
  python -m avjax.main --config configs/unimodal_ks.py:visual \
      --workdir runs/unimodal_ks_visual
  python -m avjax.main --config configs/unimodal_ks.py:visual_smoke   # tiny synthetic stand-in

The argument names the modality ('audio' when absent) and may add '_smoke'. These runs are the
teachers of configs/umt_ks.py and, chained through config.init_from, the uni-modal
pre-training of configs/reconboost_ks.py (see those files). Training settings are BB's, one for
every trainer and dataset (configs/global_config.yaml, configs/trainer_config.yaml at 4c1482f).
Needs kinetics_sounds built with its 'ogm_ge' config (Kaldi fbank (1024, 128); 3 frames).
"""

from avjax import recipes
from avjax.config import apply_smoke, base_config

ARGS = ("audio", "visual", "smoke")


def parse_arg(arg: str | None) -> tuple[str, bool]:
  """'visual_smoke' -> ('visual', True); None -> ('audio', False)."""
  parts = arg.split("_") if arg else []
  if any(p not in ARGS for p in parts) or ("audio" in parts and "visual" in parts):
    raise ValueError(f"Unknown config argument {arg!r}; use 'audio' or 'visual', optionally with "
                     "'_smoke' (e.g. 'visual_smoke'), or 'smoke'.")
  return ("visual" if "visual" in parts else "audio"), "smoke" in parts


def get_config(arg: str | None = None):
  modality, smoke = parse_arg(arg)
  c = base_config()
  c.name = f"unimodal_ks_{modality}"
  # BalanceBenchmark selects its checkpoint on the TEST split.
  # num_frames: 3 frames per clip (datasets.md: BB's KS loader picks 3).
  recipes.audio_visual_input(c, "kinetics_sounds", num_frames=3)
  recipes.resnet18_pair(c)  # ResNet-18 encoders; the method adds the modality's own head.

  c.method.name = "unimodal"
  c.method.modality = modality  # BB: a model config holding only this encoder.

  recipes.balancebenchmark_training(c)
  if smoke:
    apply_smoke(c)
  return c
