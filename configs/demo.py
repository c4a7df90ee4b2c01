r"""Demo: joint training on synthetic_av/audio_dominant, small ResNet-18s, concat fusion.

  python -m avjax.main --config configs/demo.py            # minutes on a CPU: README, Timings
  python -m avjax.main --config configs/demo.py:smoke      # a minute or two

The dataset needs no download (it is built on first use). In `audio_dominant` the audio is easy and
the frames are informative but harder: the imbalance that balancing methods address.
"""

from avjax.config import apply_smoke, base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "demo"
  c.dataset.name = "synthetic_av"
  c.dataset.config = "audio_dominant"
  c.input.image_size = 48  # Training crops of the 64x64 stored frames.
  c.input.crop_scale = (0.5, 1.0)
  c.model.fusion = "concat"
  c.model.av_resnet.widths = (16, 32, 64, 128)
  c.method.name = "baseline"
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 0.0
  c.optimizer.schedule = "cosine"
  c.train.batch_size = 32
  c.train.num_epochs = 4
  c.train.log_every_steps = 10
  if arg == "smoke":
    apply_smoke(c)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
