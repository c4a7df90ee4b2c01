"""Test setup: 8 simulated CPU devices (set before JAX is imported), absl flags parsed for grain,
and one session-wide data directory so each tiny synthetic dataset is built once."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()

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
