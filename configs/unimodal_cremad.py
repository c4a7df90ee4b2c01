r"""The uni-modal baseline on CREMA-D: one modality's encoder and head trained alone
(BalanceBenchmark's unimodalTrainer, balancemm/trainer/unimodal_trainer.py; README "Unimodal-1/2").

  python -m avjax.main --config configs/unimodal_cremad.py:audio \
      --workdir runs/unimodal_cremad_audio
  python -m avjax.main --config configs/unimodal_cremad.py:visual \
      --workdir runs/unimodal_cremad_visual
  python -m avjax.main --config configs/unimodal_cremad.py:visual_smoke   # tiny synthetic stand-in

The argument names the modality ('audio' when absent) and may add '_smoke'. These runs are the
teachers of configs/umt_cremad.py and, chained through config.init_from, the uni-modal
pre-training of configs/reconboost_cremad.py (see those files). Training settings are BB's, one for
every trainer and dataset (configs/global_config.yaml, configs/trainer_config.yaml at 4c1482f).
Needs crema_d built with its 'ogm_ge' config (BB's CREMA-D loader is OGM-GE's preprocessing).
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
  c.name = f"unimodal_cremad_{modality}"
  # BalanceBenchmark selects its checkpoint on the TEST split.
  # num_frames: OGM-GE's CREMA-D loader: one frame.
  recipes.audio_visual_input(c, "crema_d", num_frames=1)
  recipes.resnet18_pair(c)  # ResNet-18 encoders; the method adds the modality's own head.

  c.method.name = "unimodal"
  c.method.modality = modality  # BB: a model config holding only this encoder.

  recipes.balancebenchmark_training(c)
  if smoke:
    apply_smoke(c)
  return c
