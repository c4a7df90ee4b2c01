"""Test setup: 8 simulated CPU devices and fast-compiling XLA options (set before JAX is imported;
tests/xla_env.py), absl flags parsed for grain, one session-wide data directory so each tiny
synthetic dataset is built once, and one session-wide JAX compilation cache so each tiny program
is compiled once."""

import atexit
import os
import shutil
import tempfile

from tests.xla_env import xla_flags  # Imports no JAX.

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + xla_flags(devices=8)).strip()
# Made by the first process (pytest itself); its xdist workers and the training subprocesses of
# the tests inherit it, so a program compiled once (the tiny configs recur across files, and the
# fault-tolerance and preemption tests relaunch one run several times) is loaded afterwards, as
# `avjax.main`'s cache does for users. Not a user's cache: the suite starts cold every time.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="avjax-tests-jax-cache-")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)
  os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(1 << 30))  # Eviction's file lock.

import pytest  # noqa: E402
from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
  return str(tmp_path_factory.mktemp("tfds_data"))


# Files whose tests take minutes (training subprocesses, every benchmark case). `--dist loadfile`
# hands files to the workers in collection order, where these came last and left one worker
# finishing them alone; started first, the short files fill in around them.
_LONGEST_FIRST = ("test_fault_tolerance.py", "test_benchmark_vs_torch.py",
                  "methods/test_balancing_comparison.py", "test_multiprocess.py", "test_main.py",
                  "test_preemption.py", "methods/test_valuation.py", "methods/test_cmvqvae.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
  def rank(item: pytest.Item) -> int:
    path = item.path.as_posix()
    return next((i for i, name in enumerate(_LONGEST_FIRST) if path.endswith("tests/" + name)),
                len(_LONGEST_FIRST))
  items.sort(key=rank)  # Stable: the order within a file, and of the other files, is kept.
