"""The leaderboard (avjax/leaderboard.py) on hand-made run folders: aggregation over seeds, the
paired test against the baseline, the derived imbalance / robustness numbers, test-selection marks
and the published numbers."""

import csv
import json
import math
import os

import numpy as np
import pytest
from scipy import stats

from avjax import leaderboard, sweep as sweep_lib

# (method, seed) -> (accuracy, only_audio, only_visual, shapley_a, shapley_v, rel_robust, gt_vis).
RUNS = {
    ("baseline", 0): (0.60, 0.70, 0.20, 0.9, 0.3, 0.40, 0.10),
    ("baseline", 1): (0.62, 0.72, 0.22, 0.9, 0.3, 0.42, 0.20),
    ("baseline", 2): (0.58, 0.68, 0.18, 0.9, 0.3, 0.38, 0.30),
    ("ogm_ge", 0): (0.66, 0.65, 0.35, 0.6, 0.6, 0.50, 0.40),
    ("ogm_ge", 1): (0.69, 0.66, 0.36, 0.6, 0.6, 0.52, 0.50),
    ("ogm_ge", 2): (0.65, 0.64, 0.34, 0.6, 0.6, 0.48, 0.60),
    ("mmcosine", 0): (0.70, 0.60, 0.40, 0.5, 0.5, 0.45, 0.5),
}


def _write_run(root, dataset, method, seed, values, selected_on="validation", label=""):
  acc, only_a, only_v, sh_a, sh_v, rel, gt_v = values
  name = f"{dataset}__concat__{label or method}__seed{seed}"
  run_dir = os.path.join(root, "runs", name)
  os.makedirs(run_dir)
  with open(os.path.join(run_dir, sweep_lib.SPEC_FILE), "w") as f:
    json.dump({"run": {"dataset": dataset, "method": method, "fusion": "concat", "seed": seed,
                       "experiment": "x.py", "overrides": [], "label": label}}, f)
  rows = [{"step": 10, "epoch": 0, "split": "val", "accuracy": 0.99},  # Not the reported row.
          {"step": 10, "epoch": 0, "split": "test", "checkpoint_step": 10,
           "selected_on": selected_on, "accuracy": acc, "macro_f1": acc - 0.05,
           "accuracy_only_audio": only_a,
           "accuracy_only_visual": only_v, "shapley_audio": sh_a, "shapley_visual": sh_v,
           "relative_robustness": rel, "robust_accuracy_missing_audio": only_v,
           "gt_accuracy_only_visual": gt_v, "gt_accuracy_only_audio": 0.9}]
  with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
    f.write("\n".join(json.dumps(r) for r in rows) + "\n")
  with open(os.path.join(run_dir, sweep_lib.STATUS_FILE), "w") as f:
    json.dump({"state": "done", "seconds": 900.0, "machine": "a CPU (2 cores)"}, f)
  with open(os.path.join(run_dir, sweep_lib.PROFILE_FILE), "w") as f:
    json.dump({"params": 2_000_000, "train_flops": 3e9, "step_ms": 12.0, "memory_mib": 100.0,
               "peak_memory_mib": None}, f)


@pytest.fixture
def sweep_dir(tmp_path):
  root = str(tmp_path / "sweep")
  for (method, seed), values in RUNS.items():
    _write_run(root, "cremad", method, seed, values)
  _write_run(root, "cremad", "ogm", 0, (0.9, 0.5, 0.5, 1, 1, 0.5, 0.5), selected_on="test")
  # A variant (the baseline under another label and settings): its own row, no published number.
  _write_run(root, "cremad", "baseline", 0, (0.5, 0.5, 0.5, 1, 1, 0.5, 0.5), label="baseline_long")
  with open(os.path.join(root, sweep_lib.PLAN_FILE), "w") as f:
    json.dump({"name": "hand", "baseline": "baseline", "excluded": {"vavl": "own model"},
               "command": "python -m avjax.sweep --config hand.py"}, f)
  return root


def test_aggregation_and_paired_test(sweep_dir):
  entries = {e["method"]: e for e in leaderboard.aggregate(leaderboard.load_runs(sweep_dir))}
  ogm_ge, base = entries["ogm_ge"], entries["baseline"]
  mean, std, n = ogm_ge["stats"]["accuracy"]
  assert n == 3 and mean == pytest.approx(2 / 3) and std == pytest.approx(np.std(
      [0.66, 0.69, 0.65], ddof=1))
  assert base["stats"]["gap"][0] == pytest.approx(0.5)  # 0.70 - 0.20 on average.
  assert ogm_ge["stats"]["shapley_audio_share"][0] == pytest.approx(0.5)
  assert base["stats"]["shapley_audio_share"][0] == pytest.approx(0.75)
  delta, p, pairs = leaderboard.paired_test({0: .66, 1: .69, 2: .65}, {0: .60, 1: .62, 2: .58})
  assert pairs == 3 and delta == pytest.approx(2 / 3 - 0.6)
  assert p == pytest.approx(stats.ttest_rel([.66, .69, .65], [.60, .62, .58]).pvalue)
  assert ogm_ge["stats"]["p"][0] == pytest.approx(p)
  assert math.isnan(entries["mmcosine"]["stats"]["p"][0])  # One pair: no test.
  # Weak modality: the baseline's lower masked-input accuracy (visual); weak-only accuracy.
  assert ogm_ge["weak"] == "visual" and ogm_ge["stats"]["weak_only"][0] == pytest.approx(0.5)
  assert entries["ogm"]["test_selected"] and not ogm_ge["test_selected"]


def test_effective_robustness_is_the_residual_of_a_line_over_methods(sweep_dir):
  entries = leaderboard.aggregate(leaderboard.load_runs(sweep_dir))
  acc = np.array([e["stats"]["accuracy"][0] for e in entries])
  rel = np.array([e["stats"]["rel_robust"][0] for e in entries])
  slope, intercept = np.polyfit(acc, rel, 1)
  for e, a, r in zip(entries, acc, rel):
    assert e["stats"]["eff_robust"][0] == pytest.approx(r - (slope * a + intercept))
  assert sum(e["stats"]["eff_robust"][0] for e in entries) == pytest.approx(0.0, abs=1e-9)


def test_files_mark_test_selection_and_show_published_numbers(sweep_dir, tmp_path):
  paths = leaderboard.build(sweep_dir, str(tmp_path / "out"))
  text = open(paths["md"]).read()
  assert "| ogm † |" in text and "TEST split" in text
  assert "65.5 (BB)" in text and "60.1 (paper)" in text  # baseline on CREMA-D.
  assert "vavl: own model" in text
  assert "Sweep: `python -m avjax.sweep --config hand.py`" in text
  assert "9 of the 9 planned runs finished; 2.2 hours of run time" in text and "Machine: a CPU (2 cores)." in text
  assert "| ogm_ge | 3 | 66.7 ± 2.1 |" in text
  rows = {r["method"]: r for r in csv.DictReader(open(paths["csv"]))}
  assert float(rows["ogm_ge"]["accuracy_mean"]) == pytest.approx(2 / 3, abs=1e-5)
  assert rows["baseline"]["reported_accuracy_bb"] == "65.5"
  assert rows["baseline_long"]["accuracy_mean"] == "0.5" and not rows["baseline_long"][
      "reported_accuracy_bb"]
  assert os.path.getsize(paths["png"]) > 0


def test_empty_sweep_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="no finished runs"):
    leaderboard.build(str(tmp_path))


def test_a_partial_sweep_says_so(sweep_dir):
  runs = leaderboard.load_runs(sweep_dir)
  text = leaderboard.how_it_was_made(runs, {"runs": [f"r{i}" for i in range(len(runs) + 3)]})
  assert f"{len(runs)} of the {len(runs) + 3} planned runs finished (a partial sweep" in text


def test_how_it_was_made_names_both_commands(sweep_dir, tmp_path):
  leaderboard.main([sweep_dir, "--out", str(tmp_path)])
  text = open(tmp_path / "leaderboard.md").read()
  assert ("Sweep: `python -m avjax.sweep --config hand.py`; leaderboard: "
          f"`python -m avjax.leaderboard {sweep_dir} --out {tmp_path}`.") in text
  assert "\n\n## How this was made\n" in text  # A heading after a blank line.


def _write_pretraining_run(root):
  """A run whose final row has no accuracy (VAT's pre-training: matching metrics only)."""
  run_dir = os.path.join(root, "runs", "cremad__concat__vat_pretrain__seed0")
  os.makedirs(run_dir)
  with open(os.path.join(run_dir, sweep_lib.SPEC_FILE), "w") as f:
    json.dump({"run": {"dataset": "cremad", "method": "vat_pretrain", "fusion": "concat",
                       "seed": 0, "experiment": "x.py", "overrides": [], "label": ""}}, f)
  with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
    f.write(json.dumps({"step": 5, "epoch": 0, "split": "test", "checkpoint_step": 5,
                        "selected_on": "validation", "vam_accuracy": 0.7}) + "\n")


def test_runs_without_a_test_accuracy_are_named_not_ranked(sweep_dir, tmp_path):
  """A pre-training run (no class metrics) another entry starts from: no table row, no bar."""
  _write_pretraining_run(sweep_dir)
  entries = leaderboard.aggregate(leaderboard.load_runs(sweep_dir))
  assert "vat_pretrain" in {e["method"] for e in entries}
  assert "vat_pretrain" not in {e["method"] for e in leaderboard.ranked(entries)}
  text = open(leaderboard.build(sweep_dir, str(tmp_path))["md"]).read()
  assert "| vat_pretrain" not in text and "`needs`): vat_pretrain: cremad (concat)." in text


def test_a_sweep_whose_runs_report_no_accuracy_says_so(tmp_path):
  root = str(tmp_path / "sweep")
  _write_pretraining_run(root)
  with pytest.raises(FileNotFoundError, match="none of its 1 finished runs reports a test accuracy"):
    leaderboard.build(root)
