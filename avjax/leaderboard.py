r"""A sweep's leaderboard: `python -m avjax.leaderboard SWEEP_DIR [--out DIR]`.

Reads every run of a sweep (avjax/sweep.py: `runs/<name>/{sweep_run.json, metrics.jsonl,
config.json, profile.json}`) and writes `leaderboard.md`, `leaderboard.csv` and `leaderboard.png`
(to SWEEP_DIR unless --out). One row per dataset, fusion and method, each number the mean +- std
(sample std) over the seeds, from the run's final row (the test split, evaluated once at the
checkpoint its validation split selected):

  accuracy, macro_f1        the fused prediction.
  acc_audio, acc_visual     uni-modal accuracy, one definition for every method: the whole model
                            with the other modality masked out (evaluator `ablation`:
                            accuracy_only_<m>).
  gap                       acc_audio - acc_visual (the imbalance; 0 = balanced).
  shapley_audio_share       the audio's share of the fused prediction's Shapley value
                            (evaluator `contributions`: shapley_a / (shapley_a + shapley_v)).
  delta, p                  accuracy minus the baseline's, and the two-sided paired t-test over the
                            seeds both ran (the same seed: the same initialisation and data order).
  weak_only                 fused accuracy on the test examples only the weak modality carries
                            (evaluator `ground_truth`; weak = the modality with the lower baseline
                            acc_*; synthetic_av only).
  rel_robust, eff_robust    MultiBench's relative robustness (mean accuracy over the noise levels,
                            evaluator `robustness`) and effective robustness: its residual from
                            the least-squares line of relative robustness on clean accuracy over the
                            dataset's methods (> 0: more robust than its accuracy predicts).
  miss_audio, miss_visual   accuracy with that modality missing.
  params, GFLOPs, step_ms, memory_mib   avjax/sweep_profile.py (the first seed's run).
  reported                  published numbers (avjax/reported.py) for the dataset label.

Runs that selected on the test split (config.train.select_on='test') are marked with a dagger.
"""

from __future__ import annotations

import collections
import csv
import math
import os
import shlex
import sys
from typing import Any

import numpy as np

from avjax import reported, writers
from avjax import sweep as sweep_lib
from avjax import workdir as workdir_lib

MODALITIES = ("audio", "visual")
PERCENT = ("accuracy", "macro_f1", "acc_audio", "acc_visual", "gap", "shapley_audio_share",
           "weak_only", "rel_robust", "eff_robust", "miss_audio", "miss_visual", "delta")
COLUMNS = ("accuracy", "macro_f1", "acc_audio", "acc_visual", "gap", "shapley_audio_share",
           "delta", "p", "weak_only", "rel_robust", "eff_robust", "miss_audio", "miss_visual")
COST = ("params", "gflops", "step_ms", "memory_mib")


def final_row(workdir: str) -> dict[str, Any] | None:
  """The run's reported result: its last row with `checkpoint_step` (the final evaluation)."""
  if not os.path.exists(workdir_lib.metrics_file(workdir)):
    return None
  rows = [r for r in writers.read_metrics(workdir) if "checkpoint_step" in r]
  return rows[-1] if rows else None


def load_runs(sweep_dir: str) -> list[dict[str, Any]]:
  """Every finished run under `<sweep_dir>/runs`: its identity, final metrics and profile."""
  runs = []
  root = os.path.join(sweep_dir, "runs")
  for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
    run_dir = os.path.join(root, name)
    spec = sweep_lib.read_json(os.path.join(run_dir, sweep_lib.SPEC_FILE))
    row = final_row(run_dir)
    if spec is None or row is None:
      continue
    run = spec["run"]
    # A variant (a method under another label and settings) has no published number of its own.
    runs.append({"dataset": run["dataset"], "method": run.get("label") or run["method"],
                 "published_as": None if run.get("label") else run["method"],
                 "fusion": run["fusion"],
                 "seed": int(run["seed"]), "metrics": _derived(row),
                 "selected_on": row.get("selected_on", "validation"),
                 "profile": sweep_lib.read_json(os.path.join(run_dir, sweep_lib.PROFILE_FILE)),
                 "status": sweep_lib.read_json(os.path.join(run_dir, sweep_lib.STATUS_FILE)) or {}})
  return runs


def _derived(row: dict[str, Any]) -> dict[str, float]:
  """The leaderboard's per-run numbers from a final metrics row."""
  out = {k: row.get(k) for k in ("accuracy", "macro_f1")}
  for m in MODALITIES:
    out[f"acc_{m}"] = row.get(f"accuracy_only_{m}")
    out[f"miss_{m}"] = row.get(f"robust_accuracy_missing_{m}")
    out[f"gt_only_{m}"] = row.get(f"gt_accuracy_only_{m}")
  if out["acc_audio"] is not None and out["acc_visual"] is not None:
    out["gap"] = out["acc_audio"] - out["acc_visual"]
  shapley = [row.get(f"shapley_{m}") for m in MODALITIES]
  if None not in shapley and sum(shapley) > 0:
    out["shapley_audio_share"] = shapley[0] / sum(shapley)
  out["rel_robust"] = row.get("relative_robustness")
  return {k: float(v) for k, v in out.items() if isinstance(v, (int, float))}


def paired_test(values: dict[int, float], baseline: dict[int, float]) -> tuple[float, float, int]:
  """(mean difference, two-sided paired t-test p-value, pairs) over the seeds both have; p is nan
  with fewer than 2 pairs (and 1 or 0 when the differences do not vary)."""
  from scipy import stats  # pylint: disable=import-outside-toplevel
  seeds = sorted(set(values) & set(baseline))
  d = np.asarray([values[s] - baseline[s] for s in seeds], np.float64)
  if len(d) == 0:
    return math.nan, math.nan, 0
  if len(d) < 2:
    return float(d.mean()), math.nan, len(d)
  sd = d.std(ddof=1)
  if sd == 0:
    return float(d.mean()), 1.0 if d.mean() == 0 else 0.0, len(d)
  t = d.mean() / (sd / math.sqrt(len(d)))
  return float(d.mean()), float(2 * stats.t.sf(abs(t), len(d) - 1)), len(d)


def aggregate(runs: list[dict[str, Any]], baseline: str = "baseline") -> list[dict[str, Any]]:
  """One entry per (dataset, fusion, method): mean / std / seeds of every number, the paired test
  against `baseline`, weak-only accuracy, effective robustness, cost and reported numbers."""
  groups = collections.defaultdict(list)
  for run in runs:
    groups[(run["dataset"], run["fusion"], run["method"])].append(run)
  entries = []
  for (dataset, fusion, method), members in sorted(groups.items()):
    by_seed = collections.defaultdict(dict)
    for run in members:
      for key, value in run["metrics"].items():
        by_seed[key][run["seed"]] = value
    entry = {"dataset": dataset, "fusion": fusion, "method": method,
             "seeds": sorted(r["seed"] for r in members),
             "test_selected": any(r["selected_on"] == "test" for r in members),
             "by_seed": by_seed, "stats": {k: _mean_std(v) for k, v in by_seed.items()}}
    first = min(members, key=lambda r: r["seed"])["profile"] or {}
    entry["cost"] = {"params": first.get("params"), "step_ms": first.get("step_ms"),
                     "gflops": first["train_flops"] / 1e9 if first.get("train_flops") else None,
                     "memory_mib": first.get("peak_memory_mib") or first.get("memory_mib")}
    published = members[0].get("published_as", method)
    entry["reported"] = {k: reported.lookup(dataset, published, k) if published else {}
                         for k in ("accuracy", "macro_f1")}
    entries.append(entry)
  index = {(e["dataset"], e["fusion"], e["method"]): e for e in entries}
  for e in entries:
    base = index.get((e["dataset"], e["fusion"], baseline))
    if base is not None and e["method"] != baseline and "accuracy" in e["by_seed"]:
      delta, p, n = paired_test(e["by_seed"]["accuracy"], base["by_seed"].get("accuracy", {}))
      e["stats"]["delta"], e["stats"]["p"], e["pairs"] = (delta, math.nan, n), (p, math.nan, n), n
    weak = _weak_modality(base or e)
    if weak and f"gt_only_{weak}" in e["stats"]:
      e["stats"]["weak_only"], e["weak"] = e["stats"][f"gt_only_{weak}"], weak
  _effective_robustness(entries)
  return entries


def _mean_std(values: dict[int, float]) -> tuple[float, float, int]:
  v = np.asarray(list(values.values()), np.float64)
  return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan, len(v)


def _weak_modality(entry: dict[str, Any]) -> str | None:
  """The modality with the lower mean masked-input accuracy in `entry` (the baseline's)."""
  accs = {m: entry["stats"][f"acc_{m}"][0] for m in MODALITIES if f"acc_{m}" in entry["stats"]}
  return min(accs, key=accs.get) if len(accs) == len(MODALITIES) else None


def _effective_robustness(entries: list[dict[str, Any]]) -> None:
  """eff_robust: relative robustness minus the least-squares line (on clean accuracy, over the
  methods of the same dataset and fusion) at the method's accuracy; needs 3 methods."""
  groups = collections.defaultdict(list)
  for e in entries:
    if "rel_robust" in e["stats"] and "accuracy" in e["stats"]:
      groups[(e["dataset"], e["fusion"])].append(e)
  for members in groups.values():
    if len(members) < 3:
      continue
    acc = np.asarray([e["stats"]["accuracy"][0] for e in members])
    rel = np.asarray([e["stats"]["rel_robust"][0] for e in members])
    slope, intercept = np.polyfit(acc, rel, 1) if np.ptp(acc) > 0 else (0.0, rel.mean())
    for e, a, r in zip(members, acc, rel):
      e["stats"]["eff_robust"] = (float(r - (slope * a + intercept)), math.nan, len(members))


def _cell(key: str, stat: tuple[float, float, int] | None) -> str:
  if stat is None or stat[0] is None or math.isnan(stat[0]):
    return "-"
  mean, std, _ = stat
  if key == "p":
    return f"{mean:.3f}"
  scale = 100.0 if key in PERCENT else 1.0
  text = f"{scale * mean:+.1f}" if key in ("delta", "gap", "eff_robust") else f"{scale * mean:.1f}"
  return text if math.isnan(std) else f"{text} ± {scale * std:.1f}"


def _cost_cell(key: str, value: Any) -> str:
  if value is None:
    return "-"
  return {"params": f"{value / 1e6:.2f}M", "gflops": f"{value:.2f}", "step_ms": f"{value:.0f}",
          "memory_mib": f"{value:.0f}"}[key]


def _reported_cell(entry: dict[str, Any]) -> str:
  parts = [f"{v:.1f} ({k})" for k, v in entry["reported"]["accuracy"].items()]
  return ", ".join(parts) or "-"


def is_ranked(entry: dict[str, Any]) -> bool:
  """Whether the entry has a test accuracy (a row of the tables and a bar of the plot)."""
  return "accuracy" in entry["stats"]


def ranked(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
  return [e for e in entries if is_ranked(e)]


def to_markdown(entries: list[dict[str, Any]], plan: dict[str, Any]) -> str:
  """leaderboard.md: a table per dataset / fusion, then the exclusions and the definitions."""
  lines = [f"# Leaderboard: {plan.get('name', 'sweep')}", "",
           "Mean ± std over seeds (%, the test split at the checkpoint the validation split "
           "selected). Definitions: avjax/leaderboard.py.", ""]
  if plan.get("description"):
    lines[2:2] = [plan["description"], ""]
  header = ["method", "seeds", *COLUMNS, *COST, "reported acc."]
  by_table = collections.defaultdict(list)
  for e in ranked(entries):
    by_table[(e["dataset"], e["fusion"])].append(e)
  for (dataset, fusion), members in by_table.items():
    weak = next((e["weak"] for e in members if "weak" in e), None)
    lines += [f"## {dataset} ({fusion} fusion)" + (f"; weak modality: {weak}" if weak else ""), "",
              "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for e in sorted(members, key=lambda e: -e["stats"].get("accuracy", (0,))[0]):
      name = e["method"] + (" †" if e["test_selected"] else "")
      cells = [name, str(len(e["seeds"]))] + [_cell(k, e["stats"].get(k)) for k in COLUMNS]
      cells += [_cost_cell(k, e["cost"].get(k)) for k in COST] + [_reported_cell(e)]
      lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
  if any(e["test_selected"] for e in entries):
    lines += ["† selected its checkpoint on the TEST split (config.train.select_on='test', a "
              "reference's protocol): optimistic, not comparable with the other rows.", ""]
  lines += ["![fused and uni-modal test accuracy per method](leaderboard.png)", ""]
  unranked = collections.defaultdict(list)
  for e in entries:
    if not is_ranked(e):
      unranked[e["method"]].append(f"{e['dataset']} ({e['fusion']})")
  if unranked:
    named = "; ".join(f"{m}: {', '.join(where)}" for m, where in sorted(unranked.items()))
    lines += ["Entries whose runs report no test accuracy are not ranked (e.g. a pre-training "
              f"that other entries start from: the sweep's `needs`): {named}.", ""]
  excluded = plan.get("excluded", {})
  if excluded:
    lines += ["## Not in this sweep", ""] + [f"- {k}: {v}" for k, v in excluded.items()] + [""]
  return "\n".join(lines)


def write_csv(path: str, entries: list[dict[str, Any]]) -> None:
  """One row per (dataset, fusion, method): <key>_mean / <key>_std for every number, cost, the
  published numbers."""
  keys = sorted({k for e in entries for k in e["stats"]})
  header = ["dataset", "fusion", "method", "seeds", "test_selected"]
  header += [f"{k}_{s}" for k in keys for s in ("mean", "std")] + list(COST)
  header += ["reported_accuracy_bb", "reported_accuracy_paper"]
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    for e in entries:
      row = [e["dataset"], e["fusion"], e["method"], " ".join(map(str, e["seeds"])),
             e["test_selected"]]
      for k in keys:
        stat = e["stats"].get(k, (None, None, 0))
        row += ["" if v is None or math.isnan(v) else f"{v:.6g}" for v in stat[:2]]
      row += ["" if e["cost"].get(k) is None else e["cost"][k] for k in COST]
      row += [e["reported"]["accuracy"].get("BB", ""), e["reported"]["accuracy"].get("paper", "")]
      writer.writerow(row)


def plot(path: str, entries: list[dict[str, Any]]) -> None:
  """Per dataset / fusion: fused and uni-modal accuracy per method (bars, std as error bars)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  entries = ranked(entries)
  tables = sorted({(e["dataset"], e["fusion"]) for e in entries})
  widest = max(sum((e["dataset"], e["fusion"]) == t for e in entries) for t in tables)
  fig, axes = plt.subplots(len(tables), 1, figsize=(max(6, widest * 0.45), 3.2 * len(tables)),
                           squeeze=False)
  for ax, table in zip(axes[:, 0], tables):
    members = sorted((e for e in entries if (e["dataset"], e["fusion"]) == table),
                     key=lambda e: -e["stats"]["accuracy"][0])  # The tables' order.
    x = np.arange(len(members))
    for i, (key, label) in enumerate((("accuracy", "fused"), ("acc_audio", "audio only"),
                                      ("acc_visual", "visual only"))):
      stat = [e["stats"].get(key, (np.nan, np.nan, 0)) for e in members]
      ax.bar(x + (i - 1) * 0.27, [100 * s[0] for s in stat], 0.27, label=label,
             yerr=[0 if math.isnan(s[1]) else 100 * s[1] for s in stat])
    ax.set_xticks(x, [e["method"] for e in members], rotation=30, ha="right")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{table[0]} ({table[1]})")
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def build(sweep_dir: str, out_dir: str | None = None, command: str = "") -> dict[str, str]:
  """Writes the three files; returns their paths. `command`: the leaderboard's own command line,
  printed next to the sweep's."""
  out_dir = out_dir or sweep_dir
  os.makedirs(out_dir, exist_ok=True)
  plan = sweep_lib.read_json(os.path.join(sweep_dir, sweep_lib.PLAN_FILE)) or {}
  runs = load_runs(sweep_dir)
  entries = aggregate(runs, plan.get("baseline", "baseline"))
  if runs and not ranked(entries):
    raise FileNotFoundError(f"{sweep_dir}: none of its {len(runs)} finished runs reports a test "
                            "accuracy (config.dataset.test_split with a classification task).")
  if not entries:
    raise FileNotFoundError(f"{sweep_dir} holds no finished runs (runs/<name>/metrics.jsonl with "
                            "a final row); run `python -m avjax.sweep` first.")
  paths = {k: os.path.join(out_dir, f"leaderboard.{k}") for k in ("md", "csv", "png")}
  with open(paths["md"], "w") as f:
    f.write(to_markdown(entries, plan) + "\n" + how_it_was_made(runs, plan, command))
  write_csv(paths["csv"], entries)
  plot(paths["png"], entries)
  return paths


def how_it_was_made(runs: list[dict[str, Any]], plan: dict[str, Any], command: str = "") -> str:
  """The section naming the sweep's command, its runs' total time and the machines they ran on."""
  seconds = sum(float(r["status"].get("seconds", 0.0)) for r in runs)
  machines = sorted({r["status"]["machine"] for r in runs if r["status"].get("machine")})
  lines = ["## How this was made", ""]
  leaderboard = command or "python -m avjax.leaderboard SWEEP_DIR"
  sweep = f"Sweep: `{plan['command']}`; l" if plan.get("command") else "L"
  lines.append(f"{sweep}eaderboard: `{leaderboard}`.")
  planned = len(plan.get("runs", [])) or len(runs)
  lines.append(f"{len(runs)} of the {planned} planned runs finished" + (
      " (a partial sweep: re-launch it to finish; finished runs are skipped)"
      if len(runs) < planned else "") + f"; {seconds / 3600:.1f} hours of run time in all (each "
      "run's own process: start-up, compilation, training, evaluation, profiling).")
  lines += [f"Machine: {m}." for m in machines]
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
  import argparse  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(prog="python -m avjax.leaderboard", description=__doc__.split(
      "\n")[0])
  parser.add_argument("sweep_dir")
  parser.add_argument("--out", default=None, help="Output folder (default: SWEEP_DIR).")
  args = parser.parse_args(argv)
  try:
    paths = build(args.sweep_dir, args.out,
                  command="python -m avjax.leaderboard " + shlex.join(argv))
  except FileNotFoundError as e:
    print(f"avjax: error: {e}", file=sys.stderr)
    sys.exit(2)
  print("\n".join(paths.values()))


if __name__ == "__main__":
  main(sys.argv[1:])
