"""Parallel clip processing: spawned worker processes, warmed up once each, with a progress bar.

Workers are started with 'spawn' (no fork of a process that may hold threads or JAX); each imports
the media stack and runs the librosa/numba warm-up once in its initializer, then processes many
clips.
Jobs are submitted in a bounded window (memory stays flat) and results come back as they finish;
the record order on disk does not depend on it (TFDS orders examples by a hash of their key). A
worker killed by a hard crash (a decoder segfault, the OOM killer) breaks the pool: the clips that
were in flight are retried one at a time in a fresh single worker, a clip that kills it again is
reported as 'worker_crash', and the pool is restarted for the rest.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import importlib
import multiprocessing
import sys
import time
from typing import Any, Callable, Iterable, Iterator

from tqdm.auto import tqdm

Job = tuple[str, dict[str, str | None]]  # (clip key, {role: path})
Result = tuple  # ('ok', parts) or ('bad', kind, message, files), as media.safe_process returns.
DEFAULT_TARGET = 'data_builders.common.media:safe_process'
_TARGETS: dict[str, Callable[..., Result]] = {}


def _resolve(target: str) -> Callable[..., Result]:
  """'package.module:function' -> the function (imported once per process)."""
  if target not in _TARGETS:
    module, _, name = target.partition(':')
    _TARGETS[target] = getattr(importlib.import_module(module), name)
  return _TARGETS[target]


@contextlib.contextmanager
def _main_not_reimported() -> Iterator[None]:
  """Hides __main__'s file / spec while workers start, so spawn does not re-run the caller's script
  in every worker (a plain `build(...)` script without an `if __name__ == '__main__'` guard would
  otherwise build again inside each worker). The workers never need __main__: jobs are plain data
  and the functions are named by module path."""
  main = sys.modules.get('__main__')
  saved = {k: main.__dict__[k] for k in ('__file__', '__spec__') if main and k in main.__dict__}
  try:
    if main is not None:
      main.__dict__.pop('__file__', None)
      main.__dict__['__spec__'] = None
    yield
  finally:
    if main is not None:
      main.__dict__.pop('__spec__', None)
      main.__dict__.update(saved)


def _init_worker(sys_path: list[str], target: str, warm_up: bool) -> None:
  """Worker initializer (module level, so spawn can pickle it): import path, target, warm-up."""
  for p in reversed(sys_path):
    if p not in sys.path:
      sys.path.insert(0, p)
  _resolve(target)
  if warm_up:
    from data_builders.common import media  # pylint: disable=g-import-not-at-top
    media.warm_up_once()


def _work(target: str, job: dict[str, str | None], spec: dict[str, Any]) -> Result:
  return _resolve(target)(job, spec)


class ClipRunner:
  """Runs `target(job, spec)` over jobs in `num_workers` processes (0: in this process).

  target: 'module:function' returning a Result and never raising for a bad clip (default
  media.safe_process). Use as a context manager; the pool starts on first use and is shut down on
  exit (also on errors and interrupts, cancelling queued work).
  """

  def __init__(self, spec: dict[str, Any], num_workers: int, name: str = '',
               target: str = DEFAULT_TARGET, warm_up: bool = True):
    self.spec = spec
    self.num_workers = max(0, int(num_workers))
    self.name = name
    self.target = target
    self.warm_up = warm_up
    self.seconds = 0.0
    self.clips = 0
    self._pool: cf.ProcessPoolExecutor | None = None

  def __enter__(self) -> ClipRunner:
    return self

  def __exit__(self, *exc: Any) -> None:
    self._pool = self._close(self._pool)

  @staticmethod
  def _close(pool: cf.ProcessPoolExecutor | None) -> None:
    if pool is not None:
      pool.shutdown(wait=True, cancel_futures=True)

  def _new_pool(self, workers: int) -> cf.ProcessPoolExecutor:
    return cf.ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context('spawn'),
        initializer=_init_worker, initargs=(list(sys.path), self.target, self.warm_up))

  def _submit(self, pool: cf.ProcessPoolExecutor, job: dict[str, str | None]) -> cf.Future:
    with _main_not_reimported():  # submit() starts the workers (lazily, for spawn).
      return pool.submit(_work, self.target, job, self.spec)

  def run(self, jobs: Iterable[Job], desc: str = '') -> Iterator[tuple[str, Result]]:
    """Yields (key, result) for every job, in completion order, with a progress bar."""
    jobs = list(jobs)
    start = time.perf_counter()
    bar = tqdm(total=len(jobs), desc=desc or self.name, unit=' clips', leave=False,
               disable=None)  # Shown on a terminal, silent when the output is piped.
    try:
      results = self._serial(jobs) if self.num_workers == 0 else self._parallel(jobs)
      for key, result in results:
        bar.update(1)
        self.clips += 1
        yield key, result
    finally:
      bar.close()
      self.seconds += time.perf_counter() - start

  def _serial(self, jobs: list[Job]) -> Iterator[tuple[str, Result]]:
    if self.warm_up:
      from data_builders.common import media  # pylint: disable=g-import-not-at-top
      media.warm_up_once()
    fn = _resolve(self.target)
    for key, job in jobs:
      yield key, fn(job, self.spec)

  def _parallel(self, jobs: list[Job]) -> Iterator[tuple[str, Result]]:
    pending = list(reversed(jobs))
    in_flight: dict[cf.Future, Job] = {}
    window = 4 * self.num_workers
    while pending or in_flight:
      if self._pool is None:
        self._pool = self._new_pool(self.num_workers)
      while pending and len(in_flight) < window:
        key, job = pending.pop()
        in_flight[self._submit(self._pool, job)] = (key, job)
      done, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
      suspects: list[Job] = []
      for future in done:
        key, job = in_flight.pop(future)
        try:
          result = future.result()
        except cf.process.BrokenProcessPool:
          suspects.append((key, job))
          continue
        yield key, result
      if suspects:  # A worker died: every clip still in flight is a suspect.
        suspects += list(in_flight.values())
        in_flight.clear()
        self._pool = self._close(self._pool)
        yield from self._retry(suspects)

  def _retry(self, suspects: list[Job]) -> Iterator[tuple[str, Result]]:
    """Suspects one at a time in a single fresh worker; one that kills it is a 'worker_crash'."""
    pool = None
    try:
      for key, job in sorted(suspects):
        pool = pool or self._new_pool(1)
        try:
          yield key, self._submit(pool, job).result()
        except cf.process.BrokenProcessPool:
          pool = self._close(pool)
          yield key, ('bad', 'worker_crash', 'the worker process died while decoding this clip '
                      '(segfault or out of memory), twice', [p for p in job.values() if p])
    finally:
      self._close(pool)
