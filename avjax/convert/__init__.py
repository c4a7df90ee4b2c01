"""Converting released PyTorch checkpoints of the reference AVClassifier into avjax workdirs.

  python -m avjax.convert --checkpoint model.pth --config configs/X.py[:arg] [--config.k=v] \
      --workdir OUT

writes `OUT/config.json` and `OUT/checkpoints/0/{state,meta}`: a TrainState with the converted
parameters and BatchNorm statistics, a fresh optimizer / method state and step 0, so
`python -m avjax.evaluate --workdir OUT` evaluates it and `python -m avjax.main --config ... --workdir
OUT` fine-tunes from it. Name and layout mapping: `avjax.convert.resnet_av` (OGM-GE / MMCosine
AVClassifier) and `avjax.convert.cmvqvae` (CM-VQVAE's model.py, chosen when config.model.name is
'cmvqvae' or the state dict has its names).
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil

import ml_collections

from avjax.convert.resnet_av import (Architecture, ConversionError, describe, infer_architecture,
                                     load_state_dict, nnx_to_state_dict, state_dict_to_nnx)
from avjax import workdir as workdir_lib
from avjax.convert import cmvqvae

log = logging.getLogger(__name__)

__all__ = ["Architecture", "ConversionError", "convert_checkpoint", "check_config", "describe",
           "infer_architecture", "load_state_dict", "nnx_to_state_dict", "state_dict_to_nnx"]


def _check_workdir(workdir: str) -> None:
  if os.path.exists(workdir) and (not os.path.isdir(workdir) or os.listdir(workdir)):
    raise ConversionError(f"{workdir} exists and is not empty; converting writes a new workdir. "
                          "Pass a new --workdir (or delete that one yourself).")


def dataset_num_classes(dcfg: ml_collections.ConfigDict) -> int | None:
  """The class count the configured dataset declares, without building or reading it (None when the
  builder is unknown here)."""
  overrides = dict(dcfg.get("build_overrides", {}) or {})
  if "num_classes" in overrides:
    return int(overrides["num_classes"])
  try:
    importlib.import_module(f"data_builders.{dcfg.name}")
  except ImportError:
    pass
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)  # TFDS warns about variant folders it will not read.
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    data_dir = os.path.expanduser(dcfg.data_dir) if dcfg.data_dir else None
    builder = tfds.builder(f"{dcfg.name}/{dcfg.config}", data_dir=data_dir)
    return int(builder.info.features["label"].num_classes)
  except Exception:  # pylint: disable=broad-except
    return None
  finally:
    absl_logger.setLevel(level)


def check_config(config: ml_collections.ConfigDict, arch: Architecture) -> int:
  """Checks the config's model against what the state dict says; returns the class count."""
  m = config.model
  if m.name != "av_resnet":
    raise ConversionError(f"Only config.model.name='av_resnet' converts, got {m.name!r}.")
  found = []
  form = m.fusion_kwargs.get("form", "ogm_ge") if m.fusion in ("film", "gated") else None
  if arch.fusion is not None and (arch.fusion, arch.form) != (m.fusion, form):
    fix = f"--config.model.fusion={arch.fusion}"
    if arch.form:
      fix += f" --config.model.fusion_kwargs.form={arch.form}"
    found.append(f"fusion {arch.fusion!r}" + (f" (form {arch.form!r})" if arch.form else "") +
                 f", config has {m.fusion!r}" + (f" (form {form!r})" if form else "") +
                 f" ({fix})")
  encoders = m.av_resnet
  if arch.widths is not None and tuple(arch.widths) != tuple(encoders.widths):
    found.append(f"widths {arch.widths}, config has {tuple(encoders.widths)} "
                 f"(--config.model.av_resnet.widths='{tuple(arch.widths)}')")
  if arch.visual_channels is not None and arch.visual_channels != encoders.visual_channels:
    found.append(f"{arch.visual_channels} visual input channels, config has "
                 f"{encoders.visual_channels} "
                 f"(--config.model.av_resnet.visual_channels={arch.visual_channels})")
  if arch.audio_channels not in (None, 1):
    found.append(f"{arch.audio_channels} audio input channels; avjax's audio encoder takes 1")
  if found:
    raise ConversionError("The checkpoint does not match the config: " + "; ".join(found) + ".")
  if not arch.num_classes:
    raise ConversionError("Cannot read the class count off the checkpoint's final layer "
                          "(fusion_module.fc_out / fc_x); is it the reference AVClassifier? "
                          f"It looks like: {_summary(arch)}.")
  expected = dataset_num_classes(config.dataset)
  if expected is not None and expected != arch.num_classes:
    raise ConversionError(
        f"The checkpoint's final layer has {arch.num_classes} classes but dataset "
        f"{config.dataset.name}/{config.dataset.config} has {expected}; check config.dataset.")
  return int(arch.num_classes)


def _summary(arch: Architecture) -> str:
  parts = [f"{k}={v}" for k, v in vars(arch).items() if v is not None]
  return ", ".join(parts) or "nothing recognisable"


def convert_checkpoint(checkpoint: str, config: ml_collections.ConfigDict, workdir: str) -> int:
  """Converts a reference state dict into a new avjax workdir; returns the class count.

  Everything is checked before anything is written; on a failed write the new workdir is removed.
  """
  # Heavy imports here, so `--help` and argument errors stay fast.
  from avjax import config as config_lib  # pylint: disable=import-outside-toplevel
  from avjax.checkpoint import Checkpointer  # pylint: disable=import-outside-toplevel
  from avjax.methods import METHODS  # pylint: disable=import-outside-toplevel
  from avjax.models import build_model  # pylint: disable=import-outside-toplevel
  from avjax.steps import init_state  # pylint: disable=import-outside-toplevel

  workdir = os.path.abspath(workdir)
  _check_workdir(workdir)
  config = config_lib.validate(config)
  from avjax.convert import vavl  # pylint: disable=import-outside-toplevel
  # VAVL: the reference's model folder (one .pt per module) or one state dict of all modules.
  is_vavl = config.model.name == "vavl"
  state_dict = (vavl.load_checkpoint if is_vavl else load_state_dict)(checkpoint)
  if is_vavl:
    num_classes, fill, summary = (vavl.check_config(config, state_dict), vavl.state_dict_to_nnx,
                                  vavl.describe)
  elif config.model.name == "cmvqvae" or cmvqvae.is_cmvqvae(state_dict):  # CM-VQVAE's model.py.
    num_classes, fill, summary = (cmvqvae.check_config(config, state_dict),
                                  cmvqvae.state_dict_to_nnx, cmvqvae.describe)
  else:
    num_classes, fill, summary = (check_config(config, infer_architecture(state_dict)),
                                  state_dict_to_nnx, describe)
  method = METHODS.get(config.method.name)(config)
  model = build_model(config, num_classes, method.model_overrides())
  fill(model, state_dict)
  # The optimizer state's structure does not depend on the schedule's length: one step per epoch.
  tx = method.optimizer(1)
  _, state = init_state(model, tx, method, config.seed)

  created = not os.path.exists(workdir)
  try:
    workdir_lib.write_config(workdir, config)  # As avjax.train writes it.
    tc = config.train
    checkpointer = Checkpointer(workdir_lib.checkpoints(workdir), keep=tc.keep_checkpoints,
                                best_metric=tc.best_metric, best_mode=tc.best_mode)
    checkpointer.save(0, state, {"epoch": 0, "step_in_epoch": 0,
                                 "converted_from": os.path.abspath(checkpoint)}, None)
    checkpointer.wait()
    checkpointer.close()
  except BaseException:
    if created:
      shutil.rmtree(workdir, ignore_errors=True)
    else:  # It was empty before.
      for name in os.listdir(workdir):
        path = os.path.join(workdir, name)
        if os.path.isdir(path):
          shutil.rmtree(path)
        else:
          os.remove(path)
    raise
  log.info("Converted %s (%s) into %s.", checkpoint, summary(state_dict), workdir)
  return num_classes
