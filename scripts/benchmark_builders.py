r"""Clips per second of every audio-visual dataset builder on its test fixture.

  python scripts/benchmark_builders.py [--workers 0 2] [--clips 48] [--only ave vggsound/ogm_ge]

For each builder config it (1) generates the fixture download (tests/data_builders/fixtures*.py:
real containers, 1-2.2 s clips, small frames) in a temporary folder, (2) times a full build
(`<module>.build(config, ...)` in-process: planning, decoding, TFDS writing; tiny, so TFDS's fixed
costs weigh) and
(3) times the decoding alone at steady state: the builder's own plan and per-clip function
(ClipBuilder.PROCESS_TARGET) over --clips jobs (the fixture's clips repeated) in a ClipRunner with
each --workers count, after the workers have started and warmed up (best of --repeats passes).
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# pylint: disable=g-import-not-at-top,wrong-import-position
from data_builders.common import media
from data_builders.common.parallel import ClipRunner
from data_builders.common.report import BuildReport
from tests.data_builders import fixtures as fx
from tests.data_builders import fixtures_av as fa

# (label, package, config, fixture maker, how the fixture is generated).
CASES = [
    ('crema_d/ogm_ge', 'crema_d', 'ogm_ge', 'crema_d'),
    ('crema_d/cmvqvae', 'crema_d', 'cmvqvae', 'crema_d'),
    ('msp_improv/logmel_p1', 'msp_improv', 'logmel_p1', 'msp_improv'),
    ('kinetics_sounds/ogm_ge', 'kinetics_sounds', 'ogm_ge', 'kinetics_sounds'),
    ('vggsound/ogm_ge', 'vggsound', 'ogm_ge', 'vggsound'),
    ('vggsound/mm_debiased', 'vggsound', 'mm_debiased', 'vggsound'),
    ('ave/ogm_ge', 'ave', 'ogm_ge', 'ave'),
    ('ucf101/split1', 'ucf101', 'split1', 'ucf101'),
    ('mer2023/vat', 'mer2023', 'vat', 'mer2023'),
    ('muse_mimic/vat', 'muse_mimic', 'vat', 'muse_mimic'),
]


def make_fixture(name: str, root: Path) -> Path:
  """The fixture download of `name` under root; returns its folder."""
  if name == 'crema_d':
    return fx.make_crema_d(root / 'CREMA-D').root
  if name == 'msp_improv':
    return fx.make_msp_improv(root / 'MSP-IMPROV').root
  return fa.MAKERS[name](root / name).root


def decode_rate(module, config: str, manual: Path, workers: int, clips: int,
                repeats: int) -> float:
  """Steady-state clips/s of the builder's per-clip function over `clips` planned jobs, the best
  of `repeats` passes (on a shared machine the best pass is the least disturbed one)."""
  builder = module.Builder(config=config, data_dir=str(manual.parent.parent / 'unused'),
                           num_workers=workers)
  plan = builder._plan(manual, BuildReport('bench'))  # pylint: disable=protected-access
  jobs = [(c.key, c.files) for c in plan.clips]
  jobs = [(f'{k}#{i}', f) for i in range(-(-clips // len(jobs))) for k, f in jobs][:clips]
  spec = builder.builder_config.media_spec()
  with ClipRunner(spec, workers, target=builder.PROCESS_TARGET) as runner:
    warm = jobs[:max(1, workers)]  # Start and warm every worker first.
    list(runner.run(warm))
    seconds = float('inf')
    for _ in range(repeats):
      start = time.perf_counter()
      results = [r for _, r in runner.run(jobs)]
      seconds = min(seconds, time.perf_counter() - start)
  bad = sum(r[0] != 'ok' for r in results)
  if bad == len(results):
    raise RuntimeError(f'{config}: every clip failed: {results[0]}')
  return len(results) / seconds


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workers', type=int, nargs='+', default=[0, 2])
  parser.add_argument('--clips', type=int, default=48, help='jobs per decoding measurement')
  parser.add_argument('--repeats', type=int, default=3, help='decoding passes; the best counts')
  parser.add_argument('--only', nargs='*', default=[], help='labels (or packages) to run')
  args = parser.parse_args()
  import importlib
  logging.getLogger().setLevel(logging.ERROR)  # The end-of-build summaries, TFDS warnings.
  media.warm_up_once()  # librosa / numba compilation, before anything is timed.
  cpus = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  print(f'# {platform.processor() or platform.machine()}, {cpus} usable CPUs, Python '
        f'{platform.python_version()}, load {os.getloadavg()[0]:.2f}')
  head = ' | '.join(f'decode, {w} worker(s)' if w else 'decode, in-process' for w in args.workers)
  print(f'| builder/config | clips in fixture | full build (clips/s) | {head} |')
  print('|---|---|---|' + '---|' * len(args.workers))
  with tempfile.TemporaryDirectory() as tmp:
    made: dict[str, Path] = {}
    for label, package, config, fixture in CASES:
      if args.only and label not in args.only and package not in args.only:
        continue
      if fixture not in made:
        made[fixture] = make_fixture(fixture, Path(tmp) / 'downloads')
      module = importlib.import_module(f'data_builders.{package}')
      start = time.perf_counter()
      with contextlib.redirect_stdout(io.StringIO()):  # TFDS's progress lines.
        b = module.build(config, data_dir=str(Path(tmp) / 'tfds'), manual_dir=str(made[fixture]),
                         num_workers=0)
      seconds = time.perf_counter() - start
      report = b.info.metadata['build_report']
      n = sum(report['num_examples'].values()) + report['num_skipped']
      rates = [decode_rate(module, b.builder_config.name, made[fixture], w, args.clips,
                           args.repeats) for w in args.workers]
      print(f'| `{label}` | {n} | {n / seconds:.1f} | ' +
            ' | '.join(f'{r:.1f}' for r in rates) + ' |', flush=True)


if __name__ == '__main__':
  main()
