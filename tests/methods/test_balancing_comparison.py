"""Every fusion trains with every balancing method; the paper configs load; balancing helps vision.

The full fusion x method matrix and the balancing-effect experiment are marked `slow` (they run in
the default suite and CI; deselect them locally with `-m "not slow"`).
"""

from __future__ import annotations

import importlib.util
import math
import pathlib
import subprocess
import sys
from types import ModuleType

import pytest

from avjax import writers
from avjax.config import validate
from avjax.train import train_and_evaluate
from tests.helpers import tiny_config
from tests.methods.common import config_module
from tests.xla_env import subprocess_env

ROOT = pathlib.Path(__file__).resolve().parents[2]
slow = [pytest.mark.slow]

PAPER_CONFIGS = ("ogm_ge_cremad", "mmcosine_cremad", "ogm_ge_ks", "ogm_ge_vggsound",
                 "compare_balancing")
FUSIONS = ("sum", "concat", "film", "gated")
METHOD_NAMES = ("baseline", "ogm", "ogm_ge", "mmcosine")
# Trained in the default suite (each fusion and each method at least once; baseline and ogm_ge with
# concat are trained by tests/test_train.py and the smoke test below); the rest are slow.
FAST_COMBOS = {("ogm", "sum"), ("ogm_ge", "film"), ("mmcosine", "gated")}


def _load(path: pathlib.Path) -> ModuleType:
  spec = importlib.util.spec_from_file_location(f"_avjax_test_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_config_validates_and_smoke_loads(name):
  module = config_module(name)
  full = module.get_config()
  validate(full)
  smoke = module.get_config("smoke")
  validate(smoke)
  assert smoke.dataset.name == "synthetic_av"
  assert smoke.train.num_epochs <= 2 and smoke.name.endswith("_smoke")
  with pytest.raises(ValueError, match="Unknown config argument"):
    module.get_config("nonsense")


def test_paper_config_values():
  c = config_module("ogm_ge_cremad").get_config()
  assert (c.dataset.name, c.dataset.config, c.model.fusion) == ("crema_d", "ogm_ge", "concat")
  assert (c.method.name, c.method.alpha, c.method.modulation_starts,
          c.method.modulation_ends) == ("ogm_ge", 0.8, 0, 50)
  assert (c.optimizer.name, c.optimizer.learning_rate, c.optimizer.momentum,
          c.optimizer.weight_decay, c.optimizer.step_epochs) == ("sgd", 1e-3, 0.9, 1e-4, 70)
  assert (c.train.batch_size, c.train.num_epochs, c.input.num_frames,
          c.input.image_size) == (64, 100, 1, 224)
  m = config_module("mmcosine_cremad").get_config()
  assert (m.dataset.config, m.method.name, m.method.scaling, m.model.av_resnet.init) == (
      "mmcosine", "mmcosine", 10.0, "mmcosine")
  assert (m.train.batch_size, m.train.num_epochs, m.optimizer.step_epochs,
          m.input.num_frames) == (32, 200, 100, 1)
  assert config_module("ogm_ge_vggsound").get_config().method.alpha == 0.1
  # The references select on their test split; avjax selects on a held-out fold of train
  # (docs/deviations.md) and keeps the reference's protocol behind train.select_on='test'.
  for name in ("ogm_ge_cremad", "mmcosine_cremad", "ogm_ge_ks", "ogm_ge_vggsound"):
    paper = config_module(name).get_config()
    assert (paper.dataset.val_split, paper.dataset.test_split, paper.train.select_on) == (
        "heldout", "test", "validation")


def _combo(method: str, fusion: str):
  marks = [] if (method, fusion) in FAST_COMBOS else slow
  return pytest.param(method, fusion, marks=marks, id=f"{method}-{fusion}")


@pytest.mark.parametrize("method,fusion", [_combo(m, f) for f in FUSIONS for m in METHOD_NAMES])
def test_fusion_method_trains_one_tiny_epoch(data_dir, tmp_path, method, fusion):
  config = tiny_config(data_dir, **{"method.name": method, "model.fusion": fusion,
                                    "train.num_epochs": 1, "train.batch_size": 32,
                                    "dataset.val_split": ""})
  if fusion in ("film", "gated"):  # MMCosine needs the symmetric forms; the others use OGM-GE's.
    config.model.fusion_kwargs.form = "mmcosine" if method == "mmcosine" else "ogm_ge"
  if method == "ogm_ge":
    config.mesh.data = 2  # The batch sums and per-tensor noise in a sharded step.
  workdir = str(tmp_path / "run")
  final = train_and_evaluate(config, workdir)
  for key in ("accuracy", "accuracy_audio", "accuracy_visual"):
    assert 0.0 <= final[key] <= 1.0
  train = [r for r in writers.read_metrics(workdir) if r["split"] == "train"][-1]
  assert math.isfinite(train["loss"]) and train["skipped_steps"] == 0
  if method.startswith("ogm"):
    assert 0.0 < train["ogm_coeff_audio"] <= 1.0 and 0.0 < train["ogm_coeff_visual"] <= 1.0
    assert min(train["ogm_coeff_audio"], train["ogm_coeff_visual"]) < 1.0  # In the window.
    assert train["ogm_ratio_visual"] > 0.0
  if method == "mmcosine":
    assert math.isfinite(train["loss_nce"])


def test_ogm_ge_cremad_smoke_trains(data_dir, tmp_path):
  config = config_module("ogm_ge_cremad").get_config("smoke")
  config.dataset.data_dir = data_dir
  config.train.progress = False
  workdir = str(tmp_path / "smoke")
  final = train_and_evaluate(config, workdir)
  assert 0.0 <= final["accuracy_visual"] <= 1.0
  rows = writers.read_metrics(workdir)
  train = [r for r in rows if r["split"] == "train"]
  assert len(train) == 2 and all("ogm_coeff_audio" in r for r in train)
  assert {r["split"] for r in rows} >= {"train", "val", "test"}


# Visual-only test accuracy (chance 1/6) of the jointly trained model, configs/compare_balancing.py,
# 20 epochs of 18 steps, measured on a 2-core CPU (seeds 0 / 1 / 2):
#   baseline 0.153 / 0.183 / 0.177, OGM-GE (alpha 0.8) 0.253 / 0.250 / 0.220,
#   MMCosine (s = 5) 0.293 / 0.307 / 0.277; a visual-only model reaches 0.50 (seed 0).
#   On a 2-core AVX2 VM (seed 0): baseline 0.197, OGM-GE 0.263, MMCosine 0.333; the same run in a
#   process with 1 CPU device instead of 8 (float sums split differently, the trajectories part):
#   0.237, 0.247, 0.323, i.e. the seed-0 OGM-GE gain is +0.07 or +0.01 from float noise alone.
# The MMCosine gain is large and stable; the OGM-GE gain is smaller, seed-dependent and sensitive
# to float noise (+0.01 to +0.10), so it gets a smaller margin and the test pins the setting it was
# measured in. One seed keeps the default suite's cost bounded.
SEEDS = (0,)
MARGINS = {"ogm_ge": 0.04, "mmcosine": 0.08}


@pytest.mark.slow
def test_balancing_raises_visual_accuracy(data_dir, tmp_path):
  script = _load(ROOT / "scripts" / "compare_balancing.py")
  visual = {m: [] for m in ("baseline", *MARGINS)}
  for seed in SEEDS:
    # Through the script's command line, with XLA's default optimisation (this test's minutes go
    # to running steps, which the suite's fast-compile flags slow down ~2.5x), and 8 CPU devices,
    # the setting the margins were measured in (mesh.data is 1 either way).
    root = tmp_path / f"seed{seed}"
    run = subprocess.run(
        [sys.executable, "scripts/compare_balancing.py", f"--root={root}",
         f"--methods={','.join(visual)}", f"--config.dataset.data_dir={data_dir}",
         "--config.train.progress=False", f"--config.seed={seed}"],
        cwd=ROOT, env=subprocess_env(devices=8, fast_compile=False), capture_output=True,
        text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    results = {m: script.final_metrics(str(root / m)) for m in visual}
    print(f"seed {seed}\n{script.format_table(results)}")
    assert results["baseline"]["accuracy"] > 0.9  # The audio alone solves the task.
    for method in visual:
      visual[method].append(results[method]["accuracy_visual"])
    for method in MARGINS:
      assert visual[method][-1] > visual["baseline"][-1], (seed, method, results)
  mean = {m: sum(v) / len(v) for m, v in visual.items()}
  for method, margin in MARGINS.items():
    assert mean[method] >= mean["baseline"] + margin, mean
