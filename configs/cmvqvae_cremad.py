r"""CM-VQVAE on CREMA-D (WACV 2024): VQ-VAEs and a learned complementary / contradictory mask.

  python -m avjax.main --config configs/cmvqvae_cremad.py
  python -m avjax.main --config configs/cmvqvae_cremad.py:smoke   # tiny synthetic stand-in, ~1 min
  python -m avjax.main --config configs/cmvqvae_cremad.py --config.model.cmvqvae.ablation=2

Values follow CyberAgentAILab/CM-VQVAE at HEAD 1f0b535 (CREMA-D/main.py L28-63, hard-coded there);
the source of each is noted next to it. Needs the crema_d dataset built with its 'cmvqvae' config
(44.1 kHz mel (256, 256) in dB; 31 frames around the centre, cropped, 128x128) and a validation
split: the reference selects the epoch with the lowest validation CE. A build that found OGM-GE's
train.csv / test.csv has no validation split; build with split_order=('speaker',) (or VAVL's
partition) and point dataset.config at that build, e.g. 'cmvqvae-split_orderspeaker'.

Ablations (model.cmvqvae.ablation, the reference's base_type): 0 proposed, 1 no VQ / reconstruction /
mask, 2 no mask, 3 no VQ / reconstruction (mask on the continuous features), 4 two ResNet-18s
(model.cmvqvae.widths) with an MLP head. model.cmvqvae.mode: 'multimodal', 'visual-only' (the reference's
'image-only') or 'audio-only'.
"""

import ml_collections

from avjax.config import apply_smoke, base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "cmvqvae_cremad"
  c.seed = 0  # The reference sets no seed.
  c.dataset.name = "crema_d"
  c.dataset.config = "cmvqvae"
  c.dataset.val_split = "validation"  # main.py: model selection on the validation split.
  c.dataset.test_split = "test"
  c.input.num_frames = 1  # datasets.py: one frame, random within +-15 of the centre (train).
  c.input.image_size = 128  # datasets.py: Resize(128, 128) (the build stores 128x128).
  c.input.random_resized_crop = False  # No augmentation besides the frame choice.
  c.input.flip = False
  c.input.mean = (0.0, 0.0, 0.0)  # ToTensor only: frames in [0, 1], not normalised.
  c.input.std = (1.0, 1.0, 1.0)
  c.model.name = "cmvqvae"
  c.model.cmvqvae = ml_collections.ConfigDict(dict(
      ablation=0,  # main.py base_type = 0 (the proposed model).
      widths=(64, 128, 256, 512),  # Ablation 4 only: torchvision ResNet-18's stage widths.
      mode="multimodal",  # main.py mode.
      num_hiddens=128,  # main.py num_hiddens.
      num_residual_hiddens=32,  # main.py num_residual_hiddens.
      num_residual_layers=2,  # main.py num_residual_layers.
      embedding_dim=64,  # main.py embedding_dim (D).
      num_embeddings=512,  # main.py num_embeddings (K).
      commitment_cost=0.25,  # main.py commitment_cost (beta).
      decay=0.99,  # main.py decay (> 0: the EMA quantizer).
      epsilon=1e-5,  # model.py VectorQuantizerEMA default (Laplace smoothing).
      mask_init="1s",  # main.py mask_init: every mask value = mask_scale.
      mask_scale=1e-2,  # main.py mask_scale.
      threshold_fn="binarizer",  # main.py threshold_fn.
      threshold=5e-3,  # main.py threshold None -> model.py DEFAULT_THRESHOLD 5e-3.
      latent_size=(32, 32),  # 256x256 audio / 8 and 128x128 frames / 4 (fc 32 * 8 * 8 = 2048).
      fc_hidden=256,  # model.py TaskSolver: Linear(2048, 256).
      dropout=0.5,  # model.py: nn.Dropout() / F.dropout defaults.
  ))

  c.method.name = "cmvqvae"
  c.method.mask_weight = 1e-4  # main.py: regularization=True, shared_loss * 0.0001.
  # Codebook, reconstruction and mask statistics and pictures (avjax/evaluators/cmvqvae.py).
  c.evals.cmvqvae = ml_collections.ConfigDict(dict(num_pictures=4))  # Examples per picture.

  c.optimizer.name = "adam"  # main.py: optim.Adam(model.parameters(), lr=learning_rate).
  c.optimizer.learning_rate = 1e-3  # main.py learning_rate.
  c.optimizer.weight_decay = 0.0  # torch Adam default.
  c.optimizer.schedule = "constant"  # No scheduler.
  c.train.batch_size = 128  # main.py batch_size.
  c.train.num_epochs = 50  # main.py num_epoch.
  c.train.best_metric = "loss"  # main.py: lowest mean validation CE.
  c.train.best_mode = "min"
  if arg == "smoke":
    apply_smoke(c)
    c.input.num_frames = 1
    c.input.image_size = 32  # 32x32 frames / 4 = 8 = 64x64 synthetic spectrogram / 8.
    c.model.cmvqvae.update(dict(widths=(8, 16, 32, 64), num_hiddens=16, num_residual_hiddens=8,
                                embedding_dim=8, num_embeddings=32, latent_size=(8, 8),
                                fc_hidden=32))
    c.evals.cmvqvae.num_pictures = 2
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
