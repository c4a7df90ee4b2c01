"""Stop requests checked between train steps: SIGTERM (what cluster schedulers send before
preemption) and Ctrl-C (SIGINT).

The handler only sets a flag; the loop finishes the current step, writes a checkpoint at that exact
position and exits cleanly with one line saying how to resume. A second Ctrl-C aborts at once (the
run then resumes from its last checkpoint). With several processes, all of them must stop at the
same step: `requested()` agrees across processes (any one signalled counts) and is cheap to call
every step on one host; on several it synchronises, so the loop asks at its logging interval and
epoch ends. A stop at an epoch's last step comes after that epoch's evaluation and checkpoint.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils

CTRL_C_EXIT = 130  # The shell's status for a process ended by Ctrl-C (128 + SIGINT).


class Preempted(Exception):
  """Training stopped at a stop request after saving a checkpoint; `by_user`: Ctrl-C."""

  def __init__(self, message: str, by_user: bool = False):
    super().__init__(message)
    self.by_user = by_user


class PreemptionWatcher:
  """Installs SIGTERM and SIGINT handlers for the duration of training (a context manager)."""

  def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)):
    self._signals = signals
    self._flag = threading.Event()
    self._previous: dict[int, object] = {}
    self.by_user = False  # Whether this process's request came from Ctrl-C.

  def __enter__(self) -> "PreemptionWatcher":
    if threading.current_thread() is threading.main_thread():  # Signals need the main thread.
      for sig in self._signals:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def _handle(self, signum, frame) -> None:  # pylint: disable=unused-argument
    if signum == signal.SIGINT:
      if self._flag.is_set():
        print("\navjax: second Ctrl-C: aborted without saving; the same command resumes from the "
              "last checkpoint.", file=sys.stderr, flush=True)
        os._exit(CTRL_C_EXIT)  # pylint: disable=protected-access
      self.by_user = True
      print("\navjax: Ctrl-C: stopping after this step and saving its exact position (press "
            "Ctrl-C again to abort at once).", file=sys.stderr, flush=True)
    self._flag.set()

  def reason(self) -> str:
    """How the stop was asked for, for the final message."""
    return "Ctrl-C" if self.by_user else "a preemption signal"

  def requested(self) -> bool:
    local = self._flag.is_set()
    if jax.process_count() == 1:
      return local
    flags = multihost_utils.process_allgather(np.array([local], np.int32))
    return bool(np.any(flags))
