r"""VAT fine-tuning on MuSe-Mimic: three continuous targets (sigmoid outputs, MSE), mean Pearson r.

  python -m avjax.main --config configs/vat_muse.py --config.init_from=runs/vat_pretrain
  python -m avjax.main --config configs/vat_muse.py:smoke   # tiny synthetic stand-in, CPU

Targets Approval, Disappointment, Uncertainty in [0, 1]; metric `pearson` = mean Pearson r over them
(official baseline 0.4727), with pearson_<target>, ccc_* and mse_* beside it. Needs muse_mimic
built with its 'vat' config (speaker-independent train / devel splits). See docs/vat.md.
"""

from avjax.config import apply_smoke, base_config
from avjax.models.vat import model_section


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "vat_muse"
  c.seed = 0
  c.init_from = ""  # A vat_pretrain workdir.
  c.dataset.name = "muse_mimic"
  c.dataset.config = "vat"
  c.dataset.val_split = "validation"  # The challenge's devel partition.
  c.dataset.test_split = ""  # Test labels are not public.
  c.input.num_frames = 8  # AcFormer front end, as mer2023.
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
  c.method.momentum = 0.995
  c.method.alpha = 0.4  # Momentum pseudo-targets for regression: avjax's extension (docs/vat.md).
  c.task.name = "regression"
  c.task.target_indices = (0, 1, 2)  # muse_mimic 'attributes' order.
  c.task.targets = ("approval", "disappointment", "uncertainty")
  c.task.target_range = (0.0, 1.0)  # Sigmoid outputs (vat.md).
  c.task.regression_loss = "mse"  # vat.md: MSE on the sigmoid outputs.
  c.method.modality_weight = 0.0
  c.method.min_learning_rate = 1e-6  # avjax's choice (not in the notes).

  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 2e-5  # Fine-tuning lr 1e-5 to 2e-5 (vat.md).
  c.optimizer.weight_decay = 0.02
  c.optimizer.schedule = "cosine"
  # float32 master weights, bfloat16 layers (cuDNN fused attention on GPUs); avjax's choice.
  c.train.compute_dtype = "bfloat16"
  c.train.batch_size = 32  # Not published.
  c.train.num_epochs = 20  # Not published.
  c.train.best_metric = "pearson"
  c.train.best_mode = "max"
  if arg == "smoke":
    apply_smoke(c)
    c.train.compute_dtype = "float32"
    c.model.vat = model_section("small", width=32, heads=2, mlp_dim=64, visual_layers=1,
                                audio_layers=1, fusion_layers=1, embed_dim=16,
                                audio_size=(64, 64))
    # synthetic_av's three attributes stand in for the three MuSe targets.
    c.task.targets = ("arousal", "valence", "dominance")
    c.input.crop_scale = (0.5, 1.0)
    c.optimizer.learning_rate = 3e-4
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
