"""Tests for avjax.writers: metrics.jsonl, TensorBoard, summary table, plots, progress bars."""

from __future__ import annotations

import glob
import json
import os
import struct

import numpy as np
import pytest

from avjax import writers


def _read_tb_scalars(path: str) -> dict[str, list[tuple[int, float]]]:
  """Parses a TensorBoard event file (TFRecord framing of Event protos) into tag -> [(step, value)]."""
  from tensorboardX.proto import event_pb2

  out: dict[str, list[tuple[int, float]]] = {}
  with open(path, "rb") as f:
    data = f.read()
  pos = 0
  while pos < len(data):
    (length,) = struct.unpack("<Q", data[pos:pos + 8])
    record = data[pos + 12:pos + 12 + length]  # skip length + its crc
    pos += 12 + length + 4  # record + its crc
    event = event_pb2.Event.FromString(record)
    for v in event.summary.value:
      out.setdefault(v.tag, []).append((event.step, v.simple_value))
  return out


def test_writer_appends_across_instances_with_null_for_nan(tmp_path):
  w = writers.MetricWriter(tmp_path)
  w.write(10, 0, "train", {"loss": np.float32(1.5), "accuracy": 0.25})
  w.write(10, 0, "val", {"loss": float("nan"), "accuracy": np.float64(0.5), "examples": np.int64(7)})
  w.close()
  w.close()  # idempotent
  # a resumed run opens a new writer on the same workdir and continues the file
  with writers.MetricWriter(tmp_path) as w2:
    w2.write(20, 1, "val", {"loss": np.array(0.75), "accuracy": float("inf")})

  text = (tmp_path / "metrics.jsonl").read_text()
  assert "NaN" not in text and "Infinity" not in text
  lines = text.splitlines()
  assert len(lines) == 3
  rows = [json.loads(line) for line in lines]
  assert rows[0] == {"step": 10, "epoch": 0, "split": "train", "loss": 1.5, "accuracy": 0.25}
  assert rows[1]["loss"] is None and rows[1]["examples"] == 7
  assert rows[2] == {"step": 20, "epoch": 1, "split": "val", "loss": 0.75, "accuracy": None}
  assert list(rows[0])[:3] == ["step", "epoch", "split"]
  assert writers.read_metrics(tmp_path) == rows


def test_writer_accepts_jax_scalars(tmp_path):
  import jax.numpy as jnp

  with writers.MetricWriter(tmp_path) as w:
    w.write(1, 0, "train", {"loss": jnp.float32(2.0), "accuracy": jnp.asarray(0.5)})
  assert writers.read_metrics(tmp_path)[0]["loss"] == 2.0


def test_writer_rejects_bad_metrics(tmp_path):
  with writers.MetricWriter(tmp_path) as w:
    with pytest.raises(ValueError, match="scalar"):
      w.write(1, 0, "train", {"loss": np.ones(3)})
    with pytest.raises(ValueError, match="clash"):
      w.write(1, 0, "train", {"step": 3.0})


def test_writer_recovers_from_truncated_line(tmp_path):
  (tmp_path / "metrics.jsonl").write_text('{"step": 1, "epoch": 0, "split": "train", "loss": 1.0}\n{"step": 2, "ep')
  with writers.MetricWriter(tmp_path) as w:
    w.write(3, 0, "val", {"loss": 0.5})
  with pytest.warns(UserWarning, match="not valid JSON"):
    rows = writers.read_metrics(tmp_path)
  assert [r["step"] for r in rows] == [1, 3]


def test_tensorboard_event_files(tmp_path):
  with writers.MetricWriter(tmp_path) as w:
    w.write(5, 0, "train", {"loss": 1.25})
    w.write(5, 0, "val", {"accuracy": 0.5, "loss": float("nan")})
  train_files = glob.glob(str(tmp_path / "tensorboard" / "train" / "events.out.tfevents.*"))
  val_files = glob.glob(str(tmp_path / "tensorboard" / "val" / "events.out.tfevents.*"))
  assert len(train_files) == 1 and len(val_files) == 1
  assert _read_tb_scalars(train_files[0]) == {"loss": [(5, 1.25)]}
  val = _read_tb_scalars(val_files[0])
  assert val["accuracy"] == [(5, 0.5)]
  assert np.isnan(val["loss"][0][1])


def test_disabled_writer_is_a_noop(tmp_path):
  workdir = tmp_path / "run"
  w = writers.MetricWriter(workdir, enabled=False)
  w.write(1, 0, "train", {"loss": 1.0})
  w.close()
  assert not workdir.exists()
  assert writers.read_metrics(workdir) == []


ROWS = [
    {"step": 10, "epoch": 0, "split": "train", "loss": 2.0, "accuracy": 0.1},
    {"step": 10, "epoch": 0, "split": "val", "loss": 1.5, "accuracy": 0.25, "accuracy_audio": 0.2},
    {"step": 20, "epoch": 1, "split": "train", "loss": 1.0, "accuracy": 0.4},
    {"step": 20, "epoch": 1, "split": "val", "loss": 1.2, "accuracy": 0.5, "accuracy_audio": None},
    {"step": 20, "epoch": 1, "split": "test", "loss": 1.3, "accuracy": 0.4375},
]


def test_summary_table_contains_values():
  table = writers.summary_table(ROWS, keys=["accuracy", "accuracy_audio"])
  lines = table.splitlines()
  assert lines[0].split() == ["epoch", "split", "accuracy", "accuracy_audio"]
  assert len(lines) == 2 + 3  # header, rule, val@0, val@1, test@1 (no train rows)
  assert lines[2].split() == ["0", "val", "0.2500", "0.2000"]
  assert lines[3].split() == ["1", "val", "0.5000", "-"]
  assert lines[4].split() == ["1", "test", "0.4375", "-"]
  assert "train" not in table
  assert len({len(line) for line in lines}) == 1  # columns line up (numbers right-aligned)


def test_summary_table_default_keys_and_empty():
  table = writers.summary_table(ROWS)
  assert table.splitlines()[0].split() == ["epoch", "split", "loss", "accuracy", "accuracy_audio"]
  assert "1.3000" in table
  assert writers.summary_table([ROWS[0]]) == "(no val/test metrics)"


def test_plot_metrics_writes_png(tmp_path):
  with writers.MetricWriter(tmp_path) as w:
    for row in ROWS:
      w.write(row["step"], row["epoch"], row["split"],
              {k: v for k, v in row.items() if k not in ("step", "epoch", "split")})
  path = writers.plot_metrics(tmp_path)
  assert path == os.path.join(str(tmp_path), "metrics.png")
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  other = writers.plot_metrics(tmp_path, keys=["loss"], out="plots/loss.png")
  assert os.path.getsize(other) > 0


def test_plot_metrics_without_rows(tmp_path):
  path = writers.plot_metrics(tmp_path)
  assert os.path.exists(path)


def test_progress_bar(capsys):
  bar = writers.progress_bar(5, "train", disable=False)
  for _ in range(5):
    bar.update(1)
  assert bar.n == 5 and bar.total == 5 and not bar.leave and bar.dynamic_ncols
  bar.close()
  assert "train" in capsys.readouterr().err
  quiet = writers.progress_bar(3, "eval", disable=True, leave=True)
  quiet.update(3)
  quiet.close()
  assert capsys.readouterr().err == ""
