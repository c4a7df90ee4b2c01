"""avjax.evaluate's inputs: it reads another run's files and never changes or overwrites them."""

import os
import subprocess
import sys
import time

import pytest

from avjax.checkpoint import Checkpointer
from avjax.evaluate import load_workdir_config
from avjax.registry import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("read_only", [True, False])
def test_readers_leave_a_running_jobs_unfinished_save_alone(tmp_path, read_only):
  unfinished = tmp_path / "checkpoints" / "500.orbax-checkpoint-tmp-1234" / "state"
  unfinished.mkdir(parents=True)
  (unfinished / "blob").write_bytes(b"a save in progress")
  checkpointer = Checkpointer(str(tmp_path / "checkpoints"), keep=2, best_metric="accuracy",
                              best_mode="max", read_only=read_only)
  assert checkpointer.steps() == []
  # Evaluation and init_from read with read_only=True; the trainer (its own run) cleans up, in a
  # background thread that Orbax awaits only at its first save.
  deadline = time.monotonic() + (1 if read_only else 60)
  while unfinished.exists() and time.monotonic() < deadline:
    time.sleep(0.1)
  checkpointer.close()
  assert unfinished.exists() == read_only


def test_damaged_config_json_is_a_config_error(tmp_path):
  (tmp_path / "config.json").write_text('{"dataset": {')
  with pytest.raises(ConfigError, match="config.json is not valid JSON"):
    load_workdir_config(str(tmp_path))


def test_predictions_file_is_never_overwritten(tmp_path):
  existing = tmp_path / "predictions.npz"
  existing.write_bytes(b"earlier results")
  for target, expected in ((existing, "exists; choose another file"),
                           (tmp_path / "predictions", "exists; choose another file"),  # + .npz
                           (tmp_path / "no" / "p.npz", "does not exist; create it first")):
    result = subprocess.run(
        [sys.executable, "-m", "avjax.evaluate", f"--workdir={tmp_path}",
         f"--predictions={target}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and expected in result.stderr, result.stderr[-2000:]
  assert existing.read_bytes() == b"earlier results"


def test_config_json_in_another_encoding_is_a_config_error(tmp_path):
  (tmp_path / "config.json").write_bytes(b'{"name": "caf\xe9"}')  # Latin-1, not UTF-8.
  with pytest.raises(ConfigError, match="config.json is not valid JSON"):
    load_workdir_config(str(tmp_path))


@pytest.fixture(scope="module")
def tiny_run(data_dir, tmp_path_factory):
  """(workdir, config) of a one-epoch tiny run that writes the test split's prediction files."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  from avjax.train import train_and_evaluate  # pylint: disable=import-outside-toplevel
  from tests.helpers import tiny_config  # pylint: disable=import-outside-toplevel
  config = tiny_config(data_dir, **{"train.num_epochs": 1})
  config.evals.predictions = ml_collections.ConfigDict(dict(splits=("test",)))
  workdir = str(tmp_path_factory.mktemp("tiny_run"))
  train_and_evaluate(config, workdir)
  return workdir, config


def _stored_ids(config, split):
  """Each record's 'id' in `split`, in stored order, as TFDS reads them."""
  from avjax import data  # pylint: disable=import-outside-toplevel
  source = data.open_dataset(config.dataset, [split]).sources[split]
  return [source[i]["id"].decode() if isinstance(source[i]["id"], bytes) else source[i]["id"]
          for i in range(len(source))]


def test_unknown_split_names_the_flag_and_the_splits(tiny_run):
  from avjax.evaluate import evaluate_workdir  # pylint: disable=import-outside-toplevel
  for asked, hint in (("tests", r" Did you mean 'test'\?"), ("dev", "")):
    with pytest.raises(ConfigError, match=rf"^--split '{asked}': synthetic_av/audio_dominant has "
                                          rf"no such split.{hint} Its splits: "
                                          r"\['test', 'train', 'validation'\].$"):
      evaluate_workdir(tiny_run[0], split=asked)


def test_prediction_files_and_evaluate_carry_each_examples_id(tiny_run):
  import csv  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from avjax.evaluate import evaluate_workdir  # pylint: disable=import-outside-toplevel
  workdir, config = tiny_run
  stored = _stored_ids(config, "test")
  for mode in ("audiovisual", "acoustic", "visual"):
    for name in ("y_pred.csv", "y_true.csv"):
      rows = list(csv.reader(open(os.path.join(workdir, "predictions", "test", mode, name))))
      assert rows[0][:2] == ["index", "id"], rows[0]
      assert [(int(r[0]), r[1]) for r in rows[1:]] == list(enumerate(stored))
  assert stored[0].startswith("test_") and stored != sorted(stored)  # Clip names, not positions.
  _, _, predictions, _ = evaluate_workdir(workdir, split="validation")
  expected = _stored_ids(config, "validation")
  assert [expected[i] for i in predictions["index"]] == predictions["id"].tolist()
  assert predictions["id"].dtype.kind == "U" and len(np.unique(predictions["id"])) == len(expected)


@pytest.mark.parametrize("module,needle", [
    ("avjax.main", "python -m avjax.main --config configs/X.py"),
    ("avjax.evaluate", "python -m avjax.evaluate --workdir runs/demo --split validation"),
])
def test_help_exits_0_with_examples(module, needle):
  result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert needle in result.stdout and "--workdir" in result.stdout
