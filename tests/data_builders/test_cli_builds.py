"""All six new builders through `python -m avjax.tfds build` (the tfds CLI without TensorFlow) in
one process, from one manual folder holding the six downloads, every config of each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import tensorflow_datasets as tfds

from tests.data_builders import fixtures_av as fa

REPO = Path(__file__).resolve().parents[2]
# Examples per config from the fixtures (tests/data_builders/fixtures_av.py).
EXPECT = {'kinetics_sounds/ogm_ge': 6, 'vggsound/ogm_ge': 4, 'vggsound/mm_debiased': 5,
          'ave/ogm_ge': 6, 'ucf101/split1': 6, 'ucf101/split2': 6, 'ucf101/split3': 6,
          'mer2023/vat': 8, 'muse_mimic/vat': 5}


def test_cli_builds_every_config(tmp_path_factory, tmp_path):
  downloads = fa.downloads(tmp_path_factory.getbasetemp())
  manual = next(iter(downloads.values())).root.parent
  env = dict(os.environ, AVJAX_BUILD_WORKERS='0')
  result = subprocess.run(
      [sys.executable, '-m', 'avjax.tfds', 'build'] +
      [f'data_builders/{name}' for name in fa.MAKERS] +
      [f'--manual_dir={manual}', f'--data_dir={tmp_path}'],
      cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'ave00000006 [corrupt]' in result.stdout + result.stderr  # End-of-build summaries.
  for name, n in EXPECT.items():
    builder = tfds.builder(name, data_dir=str(tmp_path))
    assert builder.is_prepared(), name
    assert sum(s.num_examples for s in builder.info.splits.values()) == n, name
    report = builder.info.metadata['build_report']
    assert report['num_skipped'] >= 1 and report['skipped'][0]['files'] is not None, name
