"""Errors that need the trainer mocked: out-of-device-memory turns into advice, not a traceback."""

import jax
import pytest
from absl import flags

from avjax import main as main_lib
from avjax import train


@pytest.mark.parametrize("config,expected", [
    ("configs/demo.py:smoke", ("with batch size 32",
                               "--config.train.batch_size=16 --config.train.grad_accum_steps=2",
                               "--config.model.av_resnet.remat=True")),
    # VAVL takes no gradient accumulation; its recomputation lives in its own section.
    ("configs/vavl_msp.py:smoke", ("with batch size 16", "--config.train.batch_size=8, recomputation",
                                   "--config.model.vavl.remat=True")),
])
def test_out_of_memory_message_names_batch_size_and_fixes(monkeypatch, capsys, tmp_path, config,
                                                          expected):
  def exhausted(config, workdir):
    raise jax.errors.JaxRuntimeError(
        "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 12.00GiB.")

  monkeypatch.setattr(train, "train_and_evaluate", exhausted)
  flags.FLAGS(["avjax", "--config", config, f"--workdir={tmp_path}"])
  try:
    with pytest.raises(SystemExit) as exit_info:
      main_lib.main(["avjax"])
  finally:
    flags.FLAGS.unparse_flags()
    flags.FLAGS.mark_as_parsed()
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert "Out of memory on the device" in err
  assert all(text in err for text in expected), err
  assert "compute_dtype=bfloat16" in err
  assert "Traceback" not in err


def test_first_build_dataset_info_warning_is_dropped():
  import logging  # pylint: disable=import-outside-toplevel
  from avjax.cli import QuietFirstBuild  # pylint: disable=import-outside-toplevel
  record = lambda msg, *args: logging.LogRecord("absl", logging.WARNING, __file__, 1, msg, args,
                                                None)
  quiet = QuietFirstBuild()
  assert not quiet.filter(record("Variant folder %s has no %s", "/d/synthetic_av/x/1.0.0",
                                 "dataset_info.json"))
  assert quiet.filter(record("Variant folder %s is odd", "/d"))
  assert any(isinstance(f, QuietFirstBuild) for f in logging.getLogger("absl").filters)
