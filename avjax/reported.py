"""Published numbers the leaderboard shows next to the reproduced ones ("reported" columns).

Each entry: (dataset, method, metric, value in %, source). `dataset` is the sweep's dataset label
(configs/sweeps/cremad.py: 'cremad', configs/sweeps/ks.py: 'ks', 'vggsound'); `method` the avjax
method name. BalanceBenchmark (BB) numbers are from its README's results table (transcribed in
/work/shared/reference/anchors.md: one seed, checkpoints selected on the TEST split, ResNet-18
encoders); papers' own numbers are from the reference notes named in each source. BB's method
names map onto avjax's by lower-casing ('Modality-valuation' -> valuation_sample, its sample-level
variant, as BB's trainer); BB's 'OGM' row is listed under 'ogm'.
"""

_BB = ("BalanceBenchmark README results table (GeWu-Lab/BalanceBenchmark @ 4c1482f, "
       "images/Results.jpeg)")

# BB: method -> (KS acc, KS F1, CREMA-D acc, CREMA-D F1, VGGSound acc, VGGSound F1).
_BB_TABLE = {
    "baseline": (65.63, 65.28, 65.50, 65.07, 48.08, 46.98),
    "mmcosine": (67.49, 67.09, 67.19, 67.34, 48.73, 47.66),
    "umt": (68.60, 68.43, 67.47, 67.75, 51.58, 50.48),
    "mbsd": (68.82, 68.28, 74.86, 75.48, 49.48, 47.99),
    "cml": (67.56, 67.22, 69.18, 69.57, 50.50, 49.30),
    "gblending": (68.82, 66.43, 71.59, 71.72, 51.41, 50.39),
    "mmpareto": (74.55, 74.21, 79.97, 80.57, 49.35, 48.48),
    "lfm": (66.37, 66.02, 70.02, 69.55, 47.45, 46.50),
    "ogm": (67.04, 66.95, 67.76, 68.02, 48.25, 47.16),
    "agm": (66.62, 65.88, 71.59, 72.11, 49.06, 47.70),
    "pmr": (67.11, 66.87, 67.19, 67.20, 50.38, 49.01),
    "relearning": (65.92, 65.48, 71.02, 71.46, 48.12, 47.04),
    "reconboost": (68.38, 67.68, 74.01, 74.52, 47.27, 46.26),
    "mla": (69.05, 68.75, 72.30, 72.66, 49.99, 48.62),
    "opm": (66.89, 66.44, 68.75, 69.00, 49.12, 48.24),
    "greedy": (66.82, 66.53, 66.48, 66.54, 48.65, 47.41),
    "amco": (70.54, 69.95, 73.30, 73.95, 49.05, 47.18),
    "valuation_sample": (68.01, 68.03, 75.85, 76.68, 48.25, 47.22),
}

# Papers' own numbers (accuracy, %), each with the note that records it.
PAPERS = [
    ("cremad", "ogm_ge", "accuracy", 61.9,
     "OGM-GE paper, concat (reference/ogm_ge_mmcosine.md 'Numbers users quote'; PMR's note)"),
    ("cremad", "mmcosine", "accuracy", 63.44,
     "MMCosine paper main table, Mid-concat with MMCosine (reference/mmcosine_voxceleb_ssw60.md "
     "4.1)"),
    ("cremad", "baseline", "accuracy", 60.08,
     "MMCosine paper main table, Mid-concat (reference/mmcosine_voxceleb_ssw60.md 4.1)"),
    ("cremad", "inforeg", "accuracy", 71.90,
     "InfoReg paper (tertiary, reference/methods_optimization.md 5)"),
    ("ks", "inforeg", "accuracy", 69.31,
     "InfoReg paper (tertiary, reference/methods_optimization.md 5)"),
]


def entries() -> list[tuple[str, str, str, float, str]]:
  """Every published number: (dataset, method, metric, value %, source)."""
  out = []
  for method, (ks, ks_f1, cd, cd_f1, vgg, vgg_f1) in _BB_TABLE.items():
    for dataset, acc, f1 in (("ks", ks, ks_f1), ("cremad", cd, cd_f1), ("vggsound", vgg, vgg_f1)):
      out.append((dataset, method, "accuracy", acc, _BB))
      out.append((dataset, method, "macro_f1", f1, _BB))
  return out + list(PAPERS)


def lookup(dataset: str, method: str, metric: str = "accuracy") -> dict[str, float]:
  """{'BB': value, 'paper': value} where published (values in %)."""
  out = {}
  for d, m, k, value, source in entries():
    if (d, m, k) == (dataset, method, metric):
      out["BB" if source == _BB else "paper"] = value
  return out
