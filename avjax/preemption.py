"""SIGTERM (what cluster schedulers send before preemption) as a flag checked between train steps.

The handler only sets a flag; the loop finishes the current step, writes a checkpoint and exits
cleanly, and the next start resumes. With several processes, all of them must stop at the same step:
`requested()` agrees across processes (any one signalled counts) and is cheap to call every step on
one host; on several it synchronises, so the loop asks at its logging interval and epoch ends. A
stop at an epoch's last step comes after that epoch's evaluation and checkpoint.
"""

from __future__ import annotations

import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils


class Preempted(Exception):
  """Training stopped at a preemption signal after saving a checkpoint."""


class PreemptionWatcher:
  """Installs a SIGTERM handler for the duration of training (a context manager)."""

  def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)):
    self._signals = signals
    self._flag = threading.Event()
    self._previous: dict[int, object] = {}

  def __enter__(self) -> "PreemptionWatcher":
    if threading.current_thread() is threading.main_thread():  # Signals need the main thread.
      for sig in self._signals:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def _handle(self, signum, frame) -> None:  # pylint: disable=unused-argument
    self._flag.set()

  def requested(self) -> bool:
    local = self._flag.is_set()
    if jax.process_count() == 1:
      return local
    flags = multihost_utils.process_allgather(np.array([local], np.int32))
    return bool(np.any(flags))
