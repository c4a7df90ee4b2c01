r"""Modality-level valuation and re-sampling on UCF101, RGB + optical flow (Wei et al., CVPR 2024).

  python -m avjax.main --config configs/valuation_modality_ucf101.py
  python -m avjax.main --config configs/valuation_modality_ucf101.py --config.method.name=baseline
  python -m avjax.main --config configs/valuation_modality_ucf101.py:smoke  # synthetic RGB + flow

Needs the ucf101 dataset built (`python -m avjax.tfds build data_builders/ucf101 --config=split1
--manual_dir=...`, data_builders/ucf101/README.md). The two "modalities" are RGB frames (the
model's visual slot) and optical flow (its audio slot: a frame encoder with 2 input channels, so
every metric and contribution named `*_audio` is the flow's). The paper reports UCF101 for the
modality-level method (joint training 81.15, modality-level 83.46; RGB contributes ~1.43, flow
~0.57 at epoch 60), but the valuation repo's code at HEAD 7ed12b0 has no UCF101 loader: the method
and optimizer follow configs/valuation_modality_ks.py, the data handling BalanceBenchmark's UCF101
loader (3 of the 6 stored frames, Resize 224 without a random crop, horizontal flip; the flow at
the same frames, flipped with u negated). UCF101 has no validation split: no checkpoint is
selected and the last epoch is tested (the references select on test accuracy; set
--config.dataset.val_split=test to do the same).
"""

import importlib.util
import os



def _sibling(name: str):
  """The config module configs/<name>.py."""
  spec = importlib.util.spec_from_file_location(
      f"_{name}", os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


_modality_ks = _sibling("valuation_modality_ks")
_ks = _sibling("valuation_ks")


def get_config(arg: str | None = None):
  c = _modality_ks.get_config()
  c.name = "valuation_modality_ucf101"
  c.dataset.name = "ucf101"
  c.dataset.config = "split1"  # trainlist01 / testlist01.
  c.dataset.val_split = ""  # No validation split (see above).
  c.dataset.test_split = "test"
  c.input.num_frames = 3  # BalanceBenchmark: 3 of the 6 stored frames ...
  c.input.frame_sampling = "ks_no_short"  # ... one per third of the clip (centres in evaluation).
  c.input.image_size = 224  # Stored at 224x224: Resize(224) is the identity.
  c.input.random_resized_crop = False
  c.input.flip = True
  c.input.audio_source = "flow"  # Flow frames in the audio slot, cropped / flipped with the RGB.
  c.model.av_resnet.audio_encoder = "frames"  # ResNet-18 over each flow frame, pooled over time.
  c.model.av_resnet.audio_channels = 2  # (u, v).
  if arg == "smoke":
    smoke(c)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c


def smoke(c):
  """The KS smoke stand-in with synthetic_av's frames and their true optical flow (`flow=True`):
  the flow shows the moving shapes' outlines, so it tells apart only part of what the RGB does."""
  _ks.smoke(c)
  c.name = "valuation_modality_ucf101_smoke"
  c.dataset.config = "balanced"
  c.dataset.val_split = ""
  c.dataset.build_overrides.update(dict(num_frames=3, flow=True))
  c.input.num_frames = 2
  c.input.frame_sampling = "ks_no_short"
  return c
