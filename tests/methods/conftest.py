"""Fixtures of the chained methods' tests: tiny uni-modal runs trained once per session."""

from __future__ import annotations

import pytest

from avjax.train import train_and_evaluate
from tests.helpers import tiny_config


def unimodal_config(data_dir: str, modality: str, init_from: str = ""):
  """The tiny config of a one-epoch `unimodal` run (the teachers / pre-training of the chain)."""
  config = tiny_config(data_dir, **{"method.name": "unimodal", "train.num_epochs": 1})
  config.method.modality = modality
  config.init_from = init_from
  return config


@pytest.fixture(scope="session")
def unimodal_runs(data_dir, tmp_path_factory) -> dict[str, str]:
  """{'audio': workdir, 'visual': workdir}: one epoch each of the tiny config; the visual run
  starts from the audio run (config.init_from), so it also carries the trained audio encoder
  (ReconBoost's uni-modal pre-training is that run)."""
  root = tmp_path_factory.mktemp("unimodal_runs")
  runs = {m: str(root / m) for m in ("audio", "visual")}
  train_and_evaluate(unimodal_config(data_dir, "audio"), runs["audio"])
  train_and_evaluate(unimodal_config(data_dir, "visual", init_from=runs["audio"]),
                     runs["visual"])
  return runs
