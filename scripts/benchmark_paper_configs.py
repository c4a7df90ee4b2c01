r"""Time to first step, step time, FLOPs and memory of every paper config, at its own batch size.

  python scripts/benchmark_paper_configs.py [--configs ogm_ge_cremad,cmvqvae_cremad,...] \
      [--workdir /tmp/avjax_paper] [--steps 2] [--peak_tflops 989] [--max_batch] [--json out.json]

The real datasets are not needed: each config's builder runs on the test fixture of its download
(tests/data_builders/fixtures*.py: the real layouts, containers and preprocessing, short clips), so
every tensor has the shape the paper config trains on; splits smaller than a batch repeat their
examples. Each config is then measured by scripts/benchmark.py in a fresh process (a cold compile):
model init, lowering and compilation of the train step, the first step's execution, steady-state
step time, XLA's FLOP count and buffer sizes of the step, peak host RSS and, on an accelerator, its
peak device memory. `--max_batch` (for a GPU) doubles the batch until the device runs out of memory,
then bisects: the largest batch that runs one step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from benchlib import json_flag, load_config, write_json  # noqa: E402

PAPER_CONFIGS = ("ogm_ge_cremad", "mmcosine_cremad", "ogm_ge_ks", "ogm_ge_vggsound", "ogm_ge_ave",
                 "cmvqvae_cremad", "vavl_msp", "vavl_cremad", "auxformer_cremad", "valuation_ks",
                 "valuation_modality_ks", "valuation_mmdebiased", "vat_pretrain", "vat_mer",
                 "vat_muse")

# Builder variants a config's docstring asks for (CM-VQVAE selects on a validation split, which
# CREMA-D's OGM-GE split files lack: it builds the speaker split).
BUILD_VARIANTS = {"cmvqvae_cremad": {"split_order": ("speaker",)}}
# Overrides for what a fixture download lacks: Kinetics-Sounds' fixture has no validation list (the
# valuation configs' docstrings: select on test, as the reference does).
FIXTURE_OVERRIDES = {"valuation_ks": ["--config.train.select_on=test"],
                     "valuation_modality_ks": ["--config.train.select_on=test"]}

_CONFIGS = flags.DEFINE_list("configs", list(PAPER_CONFIGS), "configs/<name>.py to measure.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Fixture downloads and builds (kept for reuse; "
                               "default: a temporary directory).")
_STEPS = flags.DEFINE_integer("steps", 2, "Timed steps after the first (steady state).")
_OVERRIDES = flags.DEFINE_multi_string("override", [], "A config override for every config, e.g. "
                                       "--override=--config.train.compute_dtype=bfloat16.")
_PEAK = flags.DEFINE_float("peak_tflops", 0.0, "Device peak TFLOP/s (adds model FLOP utilisation).")
_RUN = flags.DEFINE_bool("run", True, "Run the steps (--norun: compile, FLOPs, memory only).")
_MAX_BATCH = flags.DEFINE_bool("max_batch", False, "Search the largest batch that fits (GPU).")
_JSON = json_flag(flags)


def prepare_download(builder: str, root: Path) -> Path:
  """The fixture download of `builder` under root (generated once); returns its manual_dir."""
  from tests.data_builders import fixtures as fx
  from tests.data_builders import fixtures_av as fa

  marker = root / builder / ".complete"
  if builder == "crema_d":
    manual = root / builder / "CREMA-D"
    if not marker.exists():
      crema = fx.make_crema_d(manual)
      fx.add_ogm_ge_splits(manual, crema.good)
      fx.add_vavl_crema_d(manual, crema.good)
      fx.add_features(manual, crema.good)
  elif builder == "msp_improv":
    manual = root / builder / "MSP-IMPROV"
    if not marker.exists():
      msp = fx.make_msp_improv(manual)
      fx.add_vavl_msp(manual, msp.good + list(msp.bad), partitions=(1,))
      fx.add_features(manual, sorted(msp.good))
  elif builder in fa.MAKERS:
    manual = root / builder / builder
    if not marker.exists():
      manual = fa.MAKERS[builder](manual).root
  else:
    raise app.UsageError(f"No fixture download for the {builder!r} builder.")
  marker.parent.mkdir(parents=True, exist_ok=True)
  marker.write_text(str(manual))
  return Path(marker.read_text())


def build_dataset(name: str, config: Any, root: Path) -> tuple[str, str]:
  """Builds the config's dataset from its fixture download; returns (TFDS data_dir, the built
  builder config's name)."""
  import importlib
  builder = config.dataset.name
  data_dir = root / "tfds"
  manual = prepare_download(builder, root / "downloads")
  module = importlib.import_module(f"data_builders.{builder}")
  built = module.build(config.dataset.config, data_dir=str(data_dir), manual_dir=str(manual),
                       num_workers=0, **BUILD_VARIANTS.get(name, {}))
  return str(data_dir), built.builder_config.name


def measure(name: str, data: tuple[str, str], batch: int | None, steps: int,
            run: bool = True) -> dict[str, Any]:
  """scripts/benchmark.py on configs/<name>.py in a fresh process; its JSON results (or error)."""
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "r.json")
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "benchmark.py"),
           "--config", os.path.join(ROOT, "configs", f"{name}.py"),
           f"--config.dataset.data_dir={data[0]}", f"--config.dataset.config={data[1]}",
           "--steps", str(steps), "--warmup", "0",
           "--nopipeline", "--json", out, *FIXTURE_OVERRIDES.get(name, []), *_OVERRIDES.value]
    if not run:
      cmd.append("--norun")
    if batch:
      cmd.append(f"--config.train.batch_size={batch}")
    if _PEAK.value:
      cmd.append(f"--peak_tflops={_PEAK.value}")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
      lines = [l for l in (proc.stdout + proc.stderr).strip().splitlines() if l.strip()]
      return {"error": (lines[-1] if lines else "no output")[:300],
              "oom": "out of memory" in (proc.stdout + proc.stderr).lower()}
    with open(out) as f:
      return json.load(f)


def largest_batch(name: str, data: tuple[str, str], start: int) -> int:
  """Doubles from `start` until a step fails for memory, then bisects; the largest that ran."""
  ok, bad = 0, None
  batch = start
  while bad is None:
    r = measure(name, data, batch, 1)
    if "error" in r:
      if not r["oom"]:
        raise RuntimeError(f"{name} at batch {batch}: {r['error']}")
      bad = batch
    else:
      ok, batch = batch, batch * 2
  while bad - ok > max(1, ok // 16):  # Within ~6%.
    mid = (ok + bad) // 2
    r = measure(name, data, mid, 1)
    ok, bad = (mid, bad) if "error" not in r else (ok, mid)
  return ok


def _row(name: str, r: dict[str, Any]) -> str:
  if "error" in r:
    return f"{name:<22} failed: {r['error']}"
  x, mem = r["results"], r["results"].get("train_memory_mib") or {}
  n = lambda key, fmt: format(x[key], fmt) if x.get(key) is not None else "-"
  dev = (x.get("device_memory") or {}).get("peak_mib_in_use")
  flops = x.get("train_flops")
  return (f"{name:<22} {x['global_batch_size']:>5} {x['num_params'] / 1e6:>7.1f}M "
          f"{x['init_s']:>6.1f} {x['train_lower_s']:>6.1f} {x['train_compile_s']:>7.1f} "
          f"{n('first_step_s', '>7.2f'):>7} {n('time_to_first_step_s', '>7.1f'):>7} "
          f"{n('train_step_ms', '>9.1f'):>9} {n('train_examples_per_s', '>8.1f'):>8} "
          f"{(flops or 0) / 1e12:>7.3f} {mem.get('total', 0) / 1024:>7.2f} "
          f"{(dev or 0) / 1024:>6.2f} {x['peak_host_rss_mib'] / 1024:>6.2f}")


def main(argv: list[str]) -> None:
  del argv
  import tensorflow_datasets as tfds
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)
  tfds.disable_progress_bar()
  unknown = [n for n in _CONFIGS.value if not os.path.exists(os.path.join(ROOT, "configs",
                                                                           f"{n}.py"))]
  if unknown:
    raise app.UsageError(f"No configs/<name>.py for {unknown}.")
  tmp = None if _WORKDIR.value else tempfile.TemporaryDirectory()
  root = Path(_WORKDIR.value or tmp.name)
  header = (f"{'config':<22} {'batch':>5} {'params':>8} {'init':>6} {'lower':>6} {'compile':>7} "
            f"{'1st run':>7} {'to 1st':>7} {'ms/step':>9} {'ex/s':>8} {'TFLOP':>7} "
            f"{'XLA GiB':>7} {'dev GiB':>6} {'RSS GiB':>6}")
  print("seconds except where named; TFLOP per train step (XLA cost model); XLA GiB: the train "
        "step's buffers (args + outputs - donated + temps)\n" + header, flush=True)
  results = {}
  for name in _CONFIGS.value:
    config = load_config(name)
    data = build_dataset(name, config, root)
    r = measure(name, data, None, _STEPS.value, run=_RUN.value)
    if _MAX_BATCH.value and "error" not in r:
      r["max_batch"] = largest_batch(name, data, config.train.batch_size)
    results[name] = r
    print(_row(name, r) + (f"  max batch {r['max_batch']}" if "max_batch" in r else ""),
          flush=True)
  if r := next((v for v in results.values() if "machine" in v), None):
    m = r["machine"]
    print(f"machine: {m['cpu_model']} ({m['cpu_cores']} cores), {m['backend']} "
          f"{m['device_kind']}; jax {m['jax']}, flax {m['flax']}")
  if _JSON.value:
    write_json(_JSON.value, results, indent=2)
  if tmp:
    tmp.cleanup()


if __name__ == "__main__":
  app.run(main)
