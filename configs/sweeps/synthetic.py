r"""Every registered balancing method on two synthetic_av regimes, 3 seeds: the leaderboard's sweep.

  python -m avjax.sweep --config configs/sweeps/synthetic.py            # then:
  python -m avjax.leaderboard runs/sweeps/synthetic
  python -m avjax.sweep --config configs/sweeps/synthetic.py:small  # CPU size: docs/leaderboard.md

Runs start from configs/compare_balancing.py (the same model, optimiser, data order and number of
steps for every method; each method's settings from its section there) and differ only in the
method, the regime and the seed. Unlike that comparison, every run selects its checkpoint on
synthetic_av's validation split and evaluates the test split once (avjax/protocol.py).

  audio_dominant  audio easy, frames informative but harder: the visual encoder starves.
  debiased        per example exactly one modality carries the label: the examples only the weak
                  modality carries are the ground truth the leaderboard scores separately.

Entries: all of avjax.methods.METHODS plus the variants (a method again with other settings); an
entry whose config does not validate here would be excluded by the sweep with the ConfigError as
the reason. configs/sweeps/chains.py holds the variants, the architecture-level methods' models and
the chained runs (UMT's teachers, ReconBoost's pre-trained encoders, DI-MML's second stage), which
the sweep runs after what they need. The methods with their own recipe run it (EXPERIMENTS); VAT's
fine-tuning starts from the sweep's VAT pre-training run of the same regime and seed and classifies
(the pre-training itself has no test accuracy: the leaderboard names it without ranking it).
"""

import os

import ml_collections

from avjax.methods import METHODS
from avjax.sweep_plan import load_module

chains = load_module(os.path.join(os.path.dirname(os.path.abspath(__file__)), "chains.py"))

# Methods that bring their own model and recipe: their configs' synthetic_av stand-ins (:smoke),
# with this sweep's data, epochs and evaluators.
EXPERIMENTS = {
    "vavl": "configs/vavl_cremad.py:smoke",
    "auxformer": "configs/auxformer_cremad.py:smoke",
    "cmvqvae": "configs/cmvqvae_cremad.py:smoke",
    # VAT: contrastive pre-training on the sweep's clips, then fine-tuning as a classifier (the
    # MER recipe's :smoke model; synthetic_av has classes, so the task is classification alone).
    "vat_pretrain": "configs/vat_pretrain.py:smoke",
    "vat_finetune": "configs/vat_mer.py:smoke",
}
VAT_NEEDS = {"vat_finetune": {"init_from": "vat_pretrain"}}  # Fine-tuning starts from pre-training.
# CM-VQVAE's latent maps must agree across modalities: the synthetic 64 x 64 spectrograms encode to
# 8 x 8, so its frames stay 32 x 32 (the :small build's 16 x 16 frames resized), as in its :smoke.
SMALL_OVERRIDES = {"cmvqvae": {"input": {"image_size": 32}}}


def vat_overrides(sweep_evals) -> dict:
  """VAT's entries under the sweep's settings: pre-training drops the sweep's evaluators (they read
  class predictions; it keeps its own `matching`), fine-tuning classifies synthetic_av's classes
  (the MER recipe also regresses valence) and selects on accuracy."""
  return {"vat_pretrain": {"evals": {name: None for name in sweep_evals.keys()}},
          "vat_finetune": {"task": {"name": "classification", "targets": (), "target_indices": ()},
                           "train": {"best_metric": "accuracy", "best_mode": "max"}}}


def get_config(arg: str | None = None):
  c = ml_collections.ConfigDict()
  c.name = "synthetic"
  c.description = ("synthetic_av (600 training clips, 32x32 frames), ResNet widths 8-64, 20 "
                   "epochs; regimes audio_dominant and debiased.")
  c.experiment = "configs/compare_balancing.py"
  c.baseline = "baseline"
  c.methods = chains.entries(METHODS.names())
  c.experiments = EXPERIMENTS
  c.variants = chains.VARIANTS
  c.needs = {**chains.NEEDS, **VAT_NEEDS}
  c.fusions = ("concat",)
  c.seeds = (0, 1, 2)
  c.datasets = {
      "audio_dominant": {"dataset": {"config": "audio_dominant"}},
      "debiased": {"dataset": {"config": "debiased"}},
  }
  c.overrides = {
      "dataset": {"val_split": "validation", "test_split": "test",
                  "build_overrides": {"num_train": 600, "num_validation": 200, "num_test": 300,
                                      "image_size": 32}},
      "train": {"checkpoint_every_epochs": 1, "keep_checkpoints": 1, "eval_every_epochs": 1},
      # Uni-modal accuracy (masked input), robustness to noise / a missing modality, and the
      # accuracy on examples only one modality carries (synthetic_av's ground truth).
      "evals": {"ablation": {}, "robustness": {}, "ground_truth": {}},
  }
  vat = vat_overrides(c.overrides.evals)
  c.method_overrides = chains.with_settings(vat)
  c.profile = True
  c.slurm = {"timeout_min": 120, "nodes": 1, "tasks_per_node": 1, "gpus_per_node": 1,
             "cpus_per_task": 8}
  if arg == "small":  # CPU-sized (2 shared cores): what docs/leaderboard.md was produced with.
    c.description = ("Reduced size for a shared 2-core CPU: synthetic_av with 192 training / 64 "
                     "validation / 128 test clips, 16x16 frames, ResNet widths 4-8, 6 epochs of "
                     "batch 16 (the methods with their own models: their :smoke sizes): "
                     "small-sample numbers, for the protocol more than the ranking; step_ms is "
                     "one seed's, measured under varying load.")
    c.overrides["dataset"]["build_overrides"].update(num_train=192, num_validation=64, num_test=128,
                                                     image_size=16)
    c.overrides["train"].update(num_epochs=6, batch_size=16, log_every_steps=4)
    c.overrides["model"] = {"av_resnet": {"widths": (4, 8, 8, 8)}}
    c.overrides["input"] = {"image_size": 16}
    c.method_overrides = chains.with_settings({**SMALL_OVERRIDES, **vat})
  elif arg == "smoke":  # Seconds per run: tests and a first look.
    c.description = "Smoke size (1 epoch of 96 clips): checks the machinery, not the methods."
    c.seeds = (0, 1)
    c.overrides["dataset"]["build_overrides"].update(num_train=96, num_validation=32, num_test=32,
                                                     image_size=16)
    c.overrides["train"].update(num_epochs=1, batch_size=16, log_every_steps=2)
    c.overrides["model"] = {"av_resnet": {"widths": (4, 8, 8, 8)}}
    c.overrides["input"] = {"image_size": 16}
    c.method_overrides = chains.with_settings({**SMALL_OVERRIDES, **vat})
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'small', 'smoke' or nothing.")
  return c
