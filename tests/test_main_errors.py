"""Errors that need the trainer mocked: out-of-device-memory turns into advice, not a traceback."""

import jax
import pytest
from absl import flags

from avjax import main as main_lib
from avjax import train


def test_out_of_memory_message_names_batch_size_and_fixes(monkeypatch, capsys, tmp_path):
  def exhausted(config, workdir):
    raise jax.errors.JaxRuntimeError(
        "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 12.00GiB.")

  monkeypatch.setattr(train, "train_and_evaluate", exhausted)
  flags.FLAGS(["avjax", "--config", "configs/demo.py:smoke", f"--workdir={tmp_path}"])
  try:
    with pytest.raises(SystemExit) as exit_info:
      main_lib.main(["avjax"])
  finally:
    flags.FLAGS.unparse_flags()
    flags.FLAGS.mark_as_parsed()
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert "Out of memory on the device with batch size 32" in err
  assert "--config.train.batch_size=16 --config.train.grad_accum_steps=2" in err
  assert "--config.model.remat=True" in err and "compute_dtype=bfloat16" in err
  assert "Traceback" not in err
