r"""MMPareto on CREMA-D (Wei & Hu, ICML 2024), concatenation fusion, separate uni-modal heads.

  python -m avjax.main --config configs/mmpareto_cremad.py
  python -m avjax.main --config configs/mmpareto_cremad.py:smoke   # tiny synthetic stand-in

Values follow GeWu-Lab/MMPareto_ICML2024 at a339db3 (code/MMPareto.py, script/mmpareto.sh); the
source of each is noted next to it. The original reads Kaldi-fbank `.pt` audio and 2 frames per
clip (dataset/av_dataset.py:73,92); avjax has no such CREMA-D build, so this config uses the
'ogm_ge' build (log-STFT (257, 188), 1 fps frames) the repository's README names as the
preprocessing it follows. BalanceBenchmark's form: config.method.variant='balancebenchmark'.
"""

from avjax import recipes
from avjax.config import apply_smoke, base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "mmpareto_cremad"
  c.seed = 0  # MMPareto.py --random_seed 0.
  # The reference selects its checkpoint on the TEST split (MMPareto.py:316-319).
  # num_frames: av_dataset.py: 2 frames per clip.
  # image_size: RandomResizedCrop(224) + flip in training, Resize(224) in test.
  recipes.audio_visual_input(c, "crema_d", num_frames=2, image_size=224)
  c.input.random_resized_crop = True
  c.input.crop_scale = (0.08, 1.0)
  c.input.flip = True
  # fusion: models.py:133-184: Linear(1024, C) on the concatenation.
  recipes.resnet18_pair(c, init="ogm_ge", fusion="concat")

  c.method.name = "mmpareto"
  c.method.gamma = 1.5  # MMPareto.py:178 (hard-coded).
  c.method.variant = "original"  # 'balancebenchmark': BB's effective rule (docs/deviations.md).

  c.optimizer.name = "sgd"  # MMPareto.py:296: SGD lr 2e-3, momentum 0.9, weight decay 1e-4.
  c.optimizer.learning_rate = 2e-3
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.optimizer.schedule = "constant"  # StepLR(30, 0.1) is created (:301) but never stepped.
  c.train.batch_size = 64  # script/mmpareto.sh --batch_size 64.
  c.train.num_epochs = 50  # MMPareto.py --epochs 50.
  if arg == "smoke":
    apply_smoke(c)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
