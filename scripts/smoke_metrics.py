r"""Runs every experiment config's `:smoke` on one CPU device and prints its final metrics as JSON.

  python scripts/smoke_metrics.py --out /tmp/smoke_before.json [configs/ogm_ge_cremad.py ...]
  python scripts/smoke_metrics.py --compare /tmp/smoke_before.json /tmp/smoke_after.json

What a refactor must keep: each config's last validation row and its final (test) row, recorded
before and after, then compared key by key (bit-identical where the computation did not change).
Each run is a fresh `python -m avjax.main` process in its own temporary workdir (one device, XLA's
default flags), so results do not depend on the suite's settings.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Not an experiment with a `:smoke` final row of its own (it drives scripts/compare_balancing.py).
SKIP = ("compare_balancing.py",)


def smoke_rows(config_path: str) -> dict:
  """{'val': last validation row, 'final': the test (or final val) row, 'seconds': wall time}."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
  with tempfile.TemporaryDirectory() as workdir:
    tic = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "avjax.main", f"--config={config_path}:smoke",
         f"--workdir={workdir}/run", "--config.train.progress=False", "--compilation_cache=off"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - tic
    if proc.returncode != 0:
      return {"error": proc.stderr.strip().splitlines()[-1:], "seconds": seconds}
    with open(os.path.join(workdir, "run", "metrics.jsonl")) as f:
      rows = [json.loads(line) for line in f if line.strip()]
  vals = [r for r in rows if r["split"] == "val"]
  return {"val": vals[-1] if vals else None, "final": rows[-1], "seconds": seconds}


def compare(before_path: str, after_path: str) -> int:
  """Prints every metric that differs between two recordings; returns the number of differences."""
  with open(before_path) as f:
    before = json.load(f)
  with open(after_path) as f:
    after = json.load(f)
  differences = 0
  for name in sorted(set(before) | set(after)):
    old, new = before.get(name, {}), after.get(name, {})
    for part in ("val", "final"):
      a, b = old.get(part) or {}, new.get(part) or {}
      for key in sorted(set(a) | set(b)):
        if key in ("examples_per_sec",) or a.get(key) == b.get(key):
          continue
        differences += 1
        print(f"{name} {part} {key}: {a.get(key, '(absent)')} -> {b.get(key, '(absent)')}")
  print(f"{differences} difference(s) over {len(set(before) | set(after))} configs")
  return differences


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("configs", nargs="*", help="config files (default: all of configs/)")
  parser.add_argument("--out", help="JSON file to write (refuses to overwrite)")
  parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
  args = parser.parse_args()
  if args.compare:
    sys.exit(1 if compare(*args.compare) else 0)
  if args.out and os.path.exists(args.out):
    sys.exit(f"smoke_metrics: {args.out} exists; pass another --out (nothing is overwritten).")
  paths = args.configs or sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                                 if os.path.basename(p) not in SKIP)
  results = {}
  for path in paths:
    name = os.path.basename(path)
    results[name] = smoke_rows(os.path.abspath(path))
    print(f"{name}: {results[name].get('seconds', 0):.0f} s "
          f"{results[name].get('error') or (results[name]['final'] or {}).get('loss')}",
          file=sys.stderr, flush=True)
  text = json.dumps(results, indent=1, sort_keys=True)
  if args.out:
    with open(args.out + ".tmp", "w") as f:
      f.write(text)
    os.replace(args.out + ".tmp", args.out)
  else:
    print(text)


if __name__ == "__main__":
  main()
