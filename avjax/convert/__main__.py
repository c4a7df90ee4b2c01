r"""Converts a reference (OGM-GE / MMCosine / CM-VQVAE) PyTorch checkpoint into an avjax workdir.

  python -m avjax.convert --checkpoint model.pth --config configs/X.py[:arg] [--config.k=v ...] \
      --workdir OUT

  --checkpoint  a state dict saved with torch.save (.pth/.pt/...; needs PyTorch) or as .npz of the
                same names (no PyTorch needed). A 'model' / 'state_dict' entry (OGM-GE's saved dict)
                and DataParallel 'module.' prefixes are handled.
  --config      the experiment the checkpoint belongs to: fusion (and fusion_kwargs.form /
                .condition for film / gated), widths and dataset must describe the checkpoint's model.
  --workdir     a new (or empty) directory; existing runs are never overwritten.

Then: `python -m avjax.evaluate --workdir OUT` evaluates it; `python -m avjax.main --config (same)
--workdir OUT` fine-tunes from it with a fresh optimizer state.
"""

from __future__ import annotations

import logging

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from avjax.cli import fail, load_config, parse_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config (configs/*.py) describing the checkpoint's model.",
    lock_config=True)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Reference state dict: .pth (torch) or .npz.")
_WORKDIR = flags.DEFINE_string("workdir", None, "New avjax workdir to write.")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    fail(f"unexpected arguments {argv[1:]}; see python -m avjax.convert --help.")
  for name in ("checkpoint", "config", "workdir"):
    if not flags.FLAGS[name].present:
      fail(f"--{name} is required: python -m avjax.convert --checkpoint model.pth "
            "--config configs/X.py --workdir OUT")
  config = load_config(_CONFIG)
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("avjax").setLevel(logging.INFO)
  from avjax.convert import convert_checkpoint  # pylint: disable=import-outside-toplevel
  from avjax.convert.resnet_av import ConversionError  # pylint: disable=import-outside-toplevel
  from avjax.registry import ConfigError  # pylint: disable=import-outside-toplevel
  try:
    num_classes = convert_checkpoint(_CHECKPOINT.value, config, _WORKDIR.value)
  except (ConversionError, ConfigError, ValueError) as e:  # ValueError: a fusion rejecting its kwargs.
    fail(str(e))
  fusion = config.model.fusion
  kwargs = dict(config.model.fusion_kwargs)
  note = ""
  if (config.model.name == "av_resnet" and fusion in ("film", "gated")
      and kwargs.get("form", "ogm_ge") == "ogm_ge"):
    note = (f"\nNote: a state dict does not record which modality conditions the {fusion} fusion "
            f"(the reference's x_{'film' if fusion == 'film' else 'gate'}); the config's "
            f"condition={kwargs.get('condition') or 'audio'!r} is used.")
  model = f"{fusion} fusion" if config.model.name == "av_resnet" else f"{config.model.name} model"
  print(f"Converted {_CHECKPOINT.value} ({model}, {num_classes} classes) into "
        f"{_WORKDIR.value}.\nEvaluate: python -m avjax.evaluate --workdir {_WORKDIR.value}{note}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
