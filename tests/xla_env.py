"""XLA_FLAGS for the suite and the processes its tests launch (imports no JAX: conftest uses it first).

The suite's programs are tiny: XLA:CPU's LLVM optimisation, not running them, is most of a test's
time (a tiny OGM-GE ResNet-18 train step: ~45 s to compile at the default level, ~17 s with these
flags, ~1.3x slower to run). Numerics stay IEEE float32 either way (no fast math), and every
process of the suite uses the same flags, so runs a test compares are compiled alike.
"""

from __future__ import annotations

import os

FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
_DEVICE_COUNT = "--xla_force_host_platform_device_count"


def xla_flags(devices: int | None = None, fast_compile: bool = True) -> str:
  """FAST_COMPILE (unless `fast_compile` is False: XLA's defaults, for tests whose time goes to
  running, not compiling), plus `devices` simulated CPU devices when given (else one)."""
  flags = [FAST_COMPILE] if fast_compile else []
  return " ".join(flags + ([f"{_DEVICE_COUNT}={devices}"] if devices else []))


def subprocess_env(devices: int | None = None, fast_compile: bool = True,
                   **extra: str) -> dict[str, str]:
  """This environment for a child process, with `xla_flags(devices, fast_compile)` and `extra`."""
  return {**os.environ, "XLA_FLAGS": xla_flags(devices, fast_compile), **extra}
