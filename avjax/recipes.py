"""Config recipes: the blocks that the paper configs (configs/<method>_<dataset>.py) share.

Each function sets one named block of a `base_config()` in place. A config calls it, then overrides
what its reference does differently, with the source next to the override; where a reference's
value is config-specific (its frame count, its fusion, its seed), the call site says where it
comes from.
"""

from __future__ import annotations

import ml_collections

from avjax.config import RESNET18_WIDTHS

KINETICS_SOUNDS = "kinetics_sounds"


def audio_visual_input(c: ml_collections.ConfigDict, dataset: str, num_frames: int, *,
                       build_config: str = "ogm_ge", image_size: int = 224,
                       frame_sampling: str | None = None, val_split: str = "heldout") -> None:
  """The data block of an audio-visual clip dataset: which records, which splits, which frames.

  Sets dataset.name / config (`dataset` built with `build_config`; 'ogm_ge' is OGM-GE's front end:
  its spectrograms and 1 fps frames), dataset.val_split / test_split ('test'), input.num_frames
  (frames per clip fed to the model), input.frame_sampling and input.image_size (224: the
  references' RandomResizedCrop(224) + flip in training, Resize(224) at test).

  Checkpoint selection: OGM-GE and the methods built on it, and BalanceBenchmark, keep the epoch
  with the best TEST accuracy. avjax's val_split='heldout' selects on a seeded, class-stratified 10%
  fold of train, disjoint by speaker / video where the records name one (CREMA-D's actor, the
  youtube_id of Kinetics-Sounds and VGGSound: dataset.heldout_group 'auto'; avjax/protocol.py),
  and evaluates the test split once (docs/deviations.md). `--config.train.select_on=test`
  reproduces the reference's selection (its rows are then labelled test). A dataset that ships its
  own validation split passes val_split='validation'.

  frame_sampling None: 'ks' on Kinetics-Sounds (OGM-GE's KS rule: a random frame per equal
  segment in training, capped at frame 9, segment centres at test, frame 1 for clips of <= 6 frames;
  avjax.data.clips.ks_frame_indices), otherwise input.frame_sampling stays as it is.
  """
  c.dataset.name = dataset
  c.dataset.config = build_config
  c.dataset.val_split = val_split
  c.dataset.test_split = "test"
  c.input.num_frames = num_frames
  if frame_sampling is None and dataset == KINETICS_SOUNDS:
    frame_sampling = "ks"
  if frame_sampling is not None:
    c.input.frame_sampling = frame_sampling
  c.input.image_size = image_size


def resnet18_pair(c: ml_collections.ConfigDict, *, model: str = "av_resnet",
                  fusion: str = "concat", init: str | None = None) -> None:
  """Two ResNet-18 encoders (audio spectrogram, frames) and a fusion: OGM-GE's model and its kin.

  Sets model.name (`model`: 'av_resnet', or a model built on its encoders such as 'av_resnet_mmtm'
  or 'av_resnet_aug'), model.fusion, model.av_resnet.widths = (64, 128, 256, 512) (ResNet-18, as
  every reference's encoders) and, when given, model.av_resnet.init: 'ogm_ge' (OGM-GE's
  weight_init: kaiming fan_out convs, BN 1 / 0) or 'mmcosine' (no weight_init: kaiming fan_out
  convs, BN gamma ~ N(1, 0.02); avjax/models/resnet.py). None leaves init as it is.
  """
  c.model.name = model
  c.model.fusion = fusion
  if init is not None:
    c.model.av_resnet.init = init
  c.model.av_resnet.widths = RESNET18_WIDTHS


def balancebenchmark_training(c: ml_collections.ConfigDict) -> None:
  """BalanceBenchmark's global training recipe, one for every method and dataset.

  GeWu-Lab/BalanceBenchmark @ 4c1482f, configs/global_config.yaml: seed 42 (:1); batch 32
  (eff_batch_size, :4); AdamW (:29) with lr 1e-3 (base_lr, used as is: utils/optimizer.py:17 never
  applies the linear scaling) and weight decay 0.01 (:42-44); StepLR(step 10, gamma 0.1) stepped
  once per epoch (:46-48); 30 epochs (configs/trainer_config.yaml:4). AdamW's betas and eps are
  base_config's (PyTorch's defaults). A config overrides what its trainer changes after the call.
  """
  c.seed = 42
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 0.01
  c.optimizer.schedule = "step"
  c.optimizer.step_epochs = 10
  c.optimizer.gamma = 0.1
  c.train.batch_size = 32
  c.train.num_epochs = 30
