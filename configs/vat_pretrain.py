r"""VAT pre-training (Ding et al., MER 2023 / MRAC 2023) in the ALBEF formulation, on MER2023 clips.

  python -m avjax.main --config configs/vat_pretrain.py --workdir runs/vat_pretrain
  python -m avjax.main --config configs/vat_pretrain.py:smoke   # tiny synthetic stand-in, CPU

Then fine-tune from it: configs/vat_mer.py / configs/vat_muse.py with
`--config.init_from=runs/vat_pretrain`. No VAT training code was published (docs/vat.md says what is
and is not known); values below come from ../shared/reference/vat.md (the VAT figure and ALBEF's
recipe) and are marked where avjax had to choose. Needs the mer2023 dataset built with its 'vat'
config (Kaldi fbank (1024, 128), 8 frames at 224: AcFormer's front end).
"""

from avjax.config import apply_smoke, base_config
from avjax.models.vat import model_section


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "vat_pretrain"
  c.seed = 0
  c.dataset.name = "mer2023"
  c.dataset.config = "vat"
  c.dataset.val_split = "validation"  # Held-out fold of train-label.csv (labels unused here).
  c.dataset.test_split = ""
  c.input.num_frames = 8  # AcFormer: 8 uniformly subsampled frames.
  c.input.image_size = 224  # AcFormer / ViT-B/16 at 224.
  c.input.random_resized_crop = True
  c.input.crop_scale = (0.2, 1.0)  # ALBEF pre-training crops (VAT's augmentation is unpublished).
  c.input.flip = True

  c.model.name = "vat"
  # Figure: 12 frame-encoder layers, 6 audio, 6 multimodal; widths as ALBEF (768, 12 heads, 256).
  # remat: 8 x 196 frame tokens per clip; on one H100 at batch 32 (bfloat16) training takes ~10 GiB
  # with it and does not fit in 78 GiB without it.
  c.model.vat = model_section("albef", audio_size=(1024, 128), patch_size=16,
                              audio_patch_size=(16, 16), remat=True)

  c.method.name = "vat_pretrain"
  c.evals = {"matching": {}}  # VAC / VAM on held-out clips; no classes in pre-training.
  c.method.momentum = 0.995  # EMA of encoders + projections, every step before the forward.
  c.method.alpha = 0.4  # Distillation weight, ramped over the first epoch.
  c.method.temperature = 0.07  # Learnable, clamped to [0.001, 0.5].
  # ALBEF uses 65,536 on 14M pairs. The queue must stay well below the training-set size, or a
  # clip's own earlier embeddings become its negatives: MER2023's ~2.7k training clips -> 2048.
  c.method.queue_size = 2048
  c.method.min_learning_rate = 1e-5  # Cosine to 1e-5.

  c.optimizer.name = "adamw"  # AdamW lr 1e-4, weight decay 0.02 (no decay on 1-D params).
  c.optimizer.learning_rate = 1e-4
  c.optimizer.weight_decay = 0.02
  c.optimizer.schedule = "cosine"
  c.optimizer.warmup_epochs = 0  # ALBEF warms up over 2000 steps; not known for VAT.
  # float32 master weights, bfloat16 layers (cuDNN fused attention on GPUs); avjax's choice.
  c.train.compute_dtype = "bfloat16"
  c.train.batch_size = 64  # ALBEF: 64 per GPU; VAT's batch is not published.
  c.train.num_epochs = 30  # ALBEF pre-training epochs; VAT's are not published.
  c.train.best_metric = "loss"  # vac_loss + vam_loss on the validation fold.
  c.train.best_mode = "min"
  if arg == "smoke":
    apply_smoke(c)
    c.train.compute_dtype = "float32"
    c.model.vat = model_section("small", width=32, heads=2, mlp_dim=64, visual_layers=1,
                                audio_layers=1, fusion_layers=1, embed_dim=16,
                                audio_size=(64, 64))  # synthetic_av spectrograms.
    c.method.queue_size = 64  # Two smoke batches.
    c.input.crop_scale = (0.5, 1.0)
    c.optimizer.learning_rate = 3e-4
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
