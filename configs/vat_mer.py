r"""VAT fine-tuning on MER2023: six emotions + valence, momentum pseudo-targets (ALBEF model_ve).

  python -m avjax.main --config configs/vat_mer.py --config.init_from=runs/vat_pretrain
  python -m avjax.main --config configs/vat_mer.py:smoke   # tiny synthetic stand-in, CPU

Metrics: weighted_f1 (MER-SEMI) and mer_score = weighted_f1 - 0.25 * mse_valence (MER-MULTI /
MER-NOISE), plus accuracy and per-modality metrics. Needs mer2023 built with its 'vat' config; its
'attributes' (1,) is the valence (-5..5, as the labels). test1 / test2 exist only when their label
files were there at build time: evaluate them with
`python -m avjax.evaluate --workdir DIR --split test1`. See docs/vat.md for what is not known.
"""

from avjax.config import apply_smoke, base_config
from avjax.models.vat import model_section


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "vat_mer"
  c.seed = 0
  c.init_from = ""  # A vat_pretrain workdir (encoders are copied by parameter path and shape).
  c.dataset.name = "mer2023"
  c.dataset.config = "vat"
  c.dataset.val_split = "validation"  # Fold 0 of train-label.csv (no speaker ids in MER2023).
  c.dataset.test_split = ""  # 'test1' (MER-MULTI) / 'test2' (MER-NOISE) once their labels exist.
  c.input.num_frames = 8  # AcFormer: 8 frames at 224.
  c.input.image_size = 224
  c.input.random_resized_crop = True
  c.input.crop_scale = (0.5, 1.0)  # ALBEF fine-tuning crops (VAT's augmentation is unpublished).
  c.input.flip = True

  c.model.name = "vat_classifier"
  # remat: 8 x 196 frame tokens per clip; on one H100 at batch 32 (bfloat16) training takes ~10 GiB
  # with it and does not fit in 78 GiB without it.
  c.model.vat = model_section("albef", audio_size=(1024, 128), patch_size=16,
                              audio_patch_size=(16, 16), remat=True)  # As configs/vat_pretrain.py.

  c.method.name = "vat_finetune"
  c.method.momentum = 0.995  # ALBEF model_ve: m 0.995, alpha 0.4 (vat.md).
  c.method.alpha = 0.4
  c.task.name = "classification_regression"  # Six classes + valence (MER-MULTI).
  c.task.target_indices = (0,)  # mer2023 'attributes' = (valence,).
  c.task.targets = ("valence",)  # 'valence' enables mer_score.
  c.task.target_range = (-5.0, 5.0)  # MER2023 valence scale; sigmoid outputs mapped onto it.
  c.task.regression_loss = "mse"  # MER2023's baseline trains valence with MSE.
  c.task.regression_weight = 1.0  # Not published; CE + MSE as the MER2023 baseline.
  c.method.modality_weight = 0.0  # Per-modality heads as probes; the paper's blending is unpublished.
  c.method.min_learning_rate = 1e-6  # avjax's choice (not in the notes).

  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 2e-5  # Fine-tuning lr 1e-5 to 2e-5 (vat.md).
  c.optimizer.weight_decay = 0.02
  c.optimizer.schedule = "cosine"
  # float32 master weights, bfloat16 layers (cuDNN fused attention on GPUs); avjax's choice.
  c.train.compute_dtype = "bfloat16"
  c.train.batch_size = 32  # Not published.
  c.train.num_epochs = 20  # Not published.
  c.train.best_metric = "mer_score"
  c.train.best_mode = "max"
  if arg == "smoke":
    apply_smoke(c)
    c.train.compute_dtype = "float32"
    c.model.vat = model_section("small", width=32, heads=2, mlp_dim=64, visual_layers=1,
                                audio_layers=1, fusion_layers=1, embed_dim=16,
                                audio_size=(64, 64))  # As configs/vat_pretrain.py:smoke.
    c.task.target_indices = (1,)  # synthetic_av attributes: (arousal, valence, dominance).
    c.task.target_range = (0.0, 1.0)
    c.input.crop_scale = (0.5, 1.0)
    c.optimizer.learning_rate = 3e-4
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
