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
