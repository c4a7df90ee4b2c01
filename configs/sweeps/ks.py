r"""Every registered method on Kinetics-Sounds (OGM-GE's lists and frames), 3 seeds, one recipe.

  python -m avjax.tfds build data_builders/kinetics_sounds --config=ogm_ge \
      --manual_dir=/path/to/kinetics_sounds
  python -m avjax.sweep --config configs/sweeps/ks.py [--launcher slurm]
  python -m avjax.leaderboard runs/sweeps/ks

Every run starts from configs/ogm_ge_ks.py (ResNet-18 encoders, concat fusion, SGD 1e-3, StepLR
70, 100 epochs, batch 64: OGM-GE's KS recipe) and takes its method's
own settings from configs/<method>_ks.py where that file exists (defaults otherwise). The
checkpoint is selected on a held-out 10% of the training split, disjoint by video (youtube_id)
(dataset.val_split='heldout'), and the test split is evaluated once; BalanceBenchmark's numbers,
selected on the test split, fill the leaderboard's "reported" column for comparison.
"""

import os

import ml_collections

from avjax.methods import METHODS
from avjax.sweep_plan import load_module, method_settings_from_configs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
chains = load_module(os.path.join(os.path.dirname(os.path.abspath(__file__)), "chains.py"))
EXCLUDED = {
    "vat_pretrain": "VAT's front end (Kaldi fbank (1024, 128), 8 frames at 224: mer2023's 'vat' "
                    "build) has no Kinetics-Sounds build; its recipe: configs/vat_pretrain.py",
    "vat_finetune": "fine-tunes vat_pretrain's transformer (configs/vat_mer.py), which has no "
                    "Kinetics-Sounds build here (see vat_pretrain)",
    "auxformer": "trains its own transformer on feature sequences (configs/auxformer_cremad.py)",
    "vavl": "trains its own Conformer model on feature sequences (configs/vavl_cremad.py)",
    "cmvqvae": "trains its own CM-VQVAE model (configs/cmvqvae_cremad.py)",
}


def get_config(arg: str | None = None):
  c = ml_collections.ConfigDict()
  c.name = "ks"
  c.experiment = "configs/ogm_ge_ks.py"
  c.baseline = "baseline"
  c.methods = chains.entries(METHODS.names())  # With the variants (configs/sweeps/chains.py).
  c.variants = chains.VARIANTS
  c.needs = chains.NEEDS
  c.excluded = EXCLUDED
  c.method_overrides = chains.with_settings(
      method_settings_from_configs("configs/{method}_ks.py", METHODS.names(), REPO))
  c.fusions = ("concat",)
  c.seeds = (0, 1, 2)
  c.datasets = {"ks": {}}
  c.overrides = {"evals": {"ablation": {}, "robustness": {}}}
  c.profile = True
  c.slurm = {"timeout_min": 600, "nodes": 1, "tasks_per_node": 1, "gpus_per_node": 1,
             "cpus_per_task": 16}
  if arg:
    raise ValueError(f"Unknown config argument {arg!r}; this sweep takes none.")
  return c
