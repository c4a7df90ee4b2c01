"""Host memory allocator settings for XLA:CPU steps (Linux, glibc).

Every XLA:CPU step allocates its temporary buffers (gigabytes at paper batch sizes) and frees them
at the end. glibc serves allocations above its mmap threshold with fresh mmaps and unmaps them on
free, so each step page-faults its whole working set back in and the kernel zeroes it again: up to
a third of a CM-VQVAE step's CPU time was system time (docs/benchmarks.md, "Host memory"). The
tunables below keep freed blocks of up to 32 MiB (glibc's largest mmap threshold) in the heap and
never trim it, and back the heap with transparent huge pages (512x fewer faults for what is still
mapped afresh). They must be set before the process starts, so `avjax.main` (and the benchmark
scripts) re-execute themselves once with them unless GLIBC_TUNABLES is already set or
AVJAX_GLIBC_TUNABLES=off.
"""

from __future__ import annotations

import os
import sys
from typing import Mapping, Sequence

GLIBC_TUNABLES = ":".join((
    "glibc.malloc.hugetlb=1",  # madvise(MADV_HUGEPAGE) the heap (glibc >= 2.35; ignored before).
    "glibc.malloc.mmap_threshold=33554432",  # 32 MiB, glibc's maximum: more stays in the heap.
    "glibc.malloc.trim_threshold=137438953472",  # 128 GiB: freed memory is kept for the next step.
))
OPT_OUT = "AVJAX_GLIBC_TUNABLES"  # 'off': run with the environment as it is.


def reexec_command(environ: Mapping[str, str], orig_argv: Sequence[str],
                   libc: str) -> tuple[list[str], dict[str, str]] | None:
  """(argv, environment) to re-execute this process with GLIBC_TUNABLES, or None when it should
  run as it is: not glibc, tunables already chosen by the user (or by an earlier re-exec), or
  opted out."""
  if libc != "glibc" or "GLIBC_TUNABLES" in environ or environ.get(OPT_OUT, "") == "off":
    return None
  return [sys.executable, *orig_argv[1:]], {**environ, "GLIBC_TUNABLES": GLIBC_TUNABLES}


def libc_name() -> str:
  """'glibc' where the C library is glibc, else '' (musl, macOS, Windows)."""
  try:
    return os.confstr("CS_GNU_LIBC_VERSION").split()[0]
  except (AttributeError, ValueError, OSError, IndexError):
    return ""


def reexec_with_tunables() -> None:
  """Replaces this process by itself with GLIBC_TUNABLES set (same PID, argv and interpreter
  options); returns only when there is nothing to do. Call it first thing in a command's main."""
  command = reexec_command(os.environ, sys.orig_argv, libc_name())
  if command is not None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, command[0], command[1])
