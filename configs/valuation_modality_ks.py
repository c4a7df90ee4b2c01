r"""Modality-level valuation and re-sampling on Kinetics-Sounds (Wei et al., CVPR 2024).

  python -m avjax.main --config configs/valuation_modality_ks.py
  python -m avjax.main --config configs/valuation_modality_ks.py:smoke   # tiny synthetic stand-in

As configs/valuation_ks.py (same data, model, optimizer and schedule: code/modality_level.py at HEAD
7ed12b0 takes the same arguments), with the modality-level method: after the warm-up, each epoch
valuates a random 20% of the training set, and adds int(d * N) copies of uniformly drawn examples
that train only the modality with the larger gap 1 - mean contribution, d = |gap_a - gap_v| * 2/3.
"""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "_valuation_ks", os.path.join(os.path.dirname(os.path.abspath(__file__)), "valuation_ks.py"))
_ks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_ks)


def get_config(arg: str | None = None):
  c = _ks.get_config()
  c.name = "valuation_modality_ks"
  c.method.name = "valuation_modality"  # modality_level.py --modulation modality.
  c.method.part_ratio = 0.2  # --part_ratio 0.2 (the subset Z valuated each epoch).
  c.method.alpha = 1.0  # --alpha 1.
  c.method.resample_fn = "linear"  # AV_KS_Dataset_modality_level(func='linear') default.
  if arg == "smoke":
    _ks.smoke(c)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
