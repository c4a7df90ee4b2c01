"""avjax.convert without numerics against PyTorch: names, layouts, round trips, errors, workdirs."""

from __future__ import annotations

import sys

import jax
import numpy as np
import pytest
from flax import nnx

from avjax.convert import (ConversionError, convert_checkpoint, infer_architecture, load_state_dict,
                           nnx_to_state_dict, state_dict_to_nnx)
from avjax.convert.resnet_av import torch_name
from avjax.models.classifier import AVClassifier
from tests.helpers import tiny_config

WIDTHS = (8, 16, 16, 16)
N = 5
FUSIONS = [
    ("sum", {}),
    ("concat", {}),
    ("film", {"form": "ogm_ge"}),
    ("film", {"form": "mmcosine"}),
    ("gated", {"form": "ogm_ge", "condition": "visual"}),
    ("gated", {"form": "mmcosine"}),
]
IDS = ["sum", "concat", "film_ogm_ge", "film_mmcosine", "gated_ogm_ge", "gated_mmcosine"]


def _model(fusion: str = "concat", kwargs: dict | None = None, seed: int = 0,
           widths=WIDTHS) -> AVClassifier:
  return AVClassifier(num_classes=N, fusion=fusion, fusion_kwargs=kwargs or {}, widths=widths,
                      init="mmcosine", rngs=nnx.Rngs(seed))


def _random_state_dict(model: AVClassifier, seed: int = 1) -> dict[str, np.ndarray]:
  """The model's names and shapes with random values (BN statistics included)."""
  rng = np.random.default_rng(seed)
  out = {}
  for k, v in nnx_to_state_dict(model).items():
    value = rng.normal(size=v.shape).astype(np.float32)
    out[k] = np.abs(value) + 0.5 if k.endswith("running_var") else value
  return out


def _leaves(model: nnx.Module) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model))]


@pytest.mark.parametrize("fusion,kwargs", FUSIONS, ids=IDS)
def test_round_trip_is_exact(fusion, kwargs):
  source = _model(fusion, kwargs, seed=0)
  state_dict_to_nnx(source, _random_state_dict(source))  # Non-trivial BN statistics too.
  exported = nnx_to_state_dict(source)
  target = _model(fusion, kwargs, seed=1)
  state_dict_to_nnx(target, exported)
  for a, b in zip(_leaves(source), _leaves(target), strict=True):
    np.testing.assert_array_equal(a, b)
  again = nnx_to_state_dict(target)
  assert list(again) == list(exported)
  for k in exported:
    np.testing.assert_array_equal(again[k], exported[k])
  arch = infer_architecture(exported)
  assert (arch.fusion, arch.form) == (fusion, kwargs.get("form") if fusion in ("film", "gated")
                                      else None)
  assert (arch.num_classes, arch.widths, arch.audio_channels, arch.visual_channels) == (
      N, WIDTHS, 1, 3)


def test_names_and_layouts():
  model = _model("film", {"form": "ogm_ge"})
  sd = nnx_to_state_dict(model, num_batches_tracked=3)
  assert sd["audio_net.conv1.weight"].shape == (8, 1, 7, 7)
  assert sd["visual_net.conv1.weight"].shape == (8, 3, 7, 7)
  assert sd["visual_net.layer2.0.downsample.0.weight"].shape == (16, 8, 1, 1)
  assert sd["visual_net.layer2.0.downsample.1.running_var"].shape == (16,)
  assert sd["audio_net.layer1.1.bn2.num_batches_tracked"] == 3
  assert sd["fusion_module.fc.weight"].shape == (32, 16)  # Linear (out, in).
  assert sd["fusion_module.fc_out.weight"].shape == (N, 16)
  assert "audio_net.layer1.0.downsample.0.weight" not in sd  # Identity shortcut.
  kernel = np.asarray(model.audio_encoder.backbone.layer3[0].conv1.kernel[...])  # (kh, kw, I, O)
  np.testing.assert_array_equal(sd["audio_net.layer3.0.conv1.weight"][5, 2, 0, 1], kernel[0, 1, 2, 5])
  assert torch_name(("visual_encoder", "backbone", "layer4", 0, "down_bn", "mean")) == (
      "visual_net.layer4.0.downsample.1.running_mean")
  # 100 tensors per encoder plus its 20 BN counters; fc and fc_out weight and bias.
  assert len(sd) == 2 * (100 + 20) + 4


def test_prefixes_and_counters_are_handled():
  model = _model()
  sd = _random_state_dict(model)
  wrapped = {f"module.{k}": v for k, v in sd.items()}
  wrapped["module.audio_net.bn1.num_batches_tracked"] = np.int64(9)
  target = _model(seed=2)
  state_dict_to_nnx(target, wrapped)
  exported = nnx_to_state_dict(target)
  for k in sd:
    np.testing.assert_array_equal(exported[k], sd[k])


def test_missing_unexpected_and_mismatched_are_listed_and_nothing_changes():
  model = _model()
  sd = _random_state_dict(model)
  del sd["visual_net.layer3.1.bn1.running_var"]
  sd["fusion_module.fc_x.weight"] = np.zeros((N, 16), np.float32)
  sd["audio_net.layer2.0.conv1.weight"] = np.zeros((16, 8, 3, 5), np.float32)
  before = _leaves(model)
  with pytest.raises(ConversionError) as e:
    state_dict_to_nnx(model, sd)
  message = str(e.value)
  assert "missing from the checkpoint (1): visual_net.layer3.1.bn1.running_var" in message
  assert "unexpected in the checkpoint (1): fusion_module.fc_x.weight" in message
  assert ("audio_net.layer2.0.conv1.weight: checkpoint (16, 8, 3, 5), model (16, 8, 3, 3)"
          in message)
  for a, b in zip(before, _leaves(model)):
    np.testing.assert_array_equal(a, b)


def test_wrong_fusion_gets_a_hint():
  sd = _random_state_dict(_model("gated", {"form": "mmcosine"}))
  with pytest.raises(ConversionError, match="looks like: model.fusion='gated', "
                                            "model.fusion_kwargs.form='mmcosine'"):
    state_dict_to_nnx(_model("concat"), sd)


def test_npz_and_missing_torch(tmp_path, monkeypatch):
  sd = _random_state_dict(_model())
  np.savez(tmp_path / "m.npz", **{f"module.{k}": v for k, v in sd.items()})
  loaded = load_state_dict(str(tmp_path / "m.npz"))
  assert sorted(loaded) == sorted(sd)
  (tmp_path / "m.pth").write_bytes(b"not read")
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError.
  with pytest.raises(ConversionError, match="needs PyTorch, which is not installed"):
    load_state_dict(str(tmp_path / "m.pth"))
  with pytest.raises(ConversionError, match="does not exist"):
    load_state_dict(str(tmp_path / "nope.pth"))
  data = (tmp_path / "m.npz").read_bytes()
  (tmp_path / "cut.npz").write_bytes(data[:len(data) // 2])  # An interrupted download.
  with pytest.raises(ConversionError, match="cut.npz is not a readable .npz"):
    load_state_dict(str(tmp_path / "cut.npz"))


def test_torch_files(tmp_path):
  torch = pytest.importorskip("torch")
  sd = _random_state_dict(_model())
  tensors = {k: torch.from_numpy(v) for k, v in sd.items()}
  tensors["audio_net.bn1.num_batches_tracked"] = torch.tensor(4)
  # OGM-GE's saved dict: {'model': state_dict, ...}; bfloat16 tensors are widened.
  torch.save({"saved_epoch": 3, "fusion": "concat", "acc": 0.5, "model": tensors}, tmp_path / "a.pth")
  loaded = load_state_dict(str(tmp_path / "a.pth"))
  np.testing.assert_array_equal(loaded["fusion_module.fc_out.weight"],
                                sd["fusion_module.fc_out.weight"])
  torch.save({"fc.weight": torch.ones(2, 2, dtype=torch.bfloat16)}, tmp_path / "b.pth")
  assert load_state_dict(str(tmp_path / "b.pth"))["fc.weight"].dtype == np.float32
  torch.save({"model": object.__new__(_Pickled)}, tmp_path / "c.pth")  # Not weights_only-loadable.
  with pytest.raises(ConversionError, match="weights_only=True"):
    load_state_dict(str(tmp_path / "c.pth"))
  torch.save({"epoch": 3}, tmp_path / "d.pth")
  with pytest.raises(ConversionError, match="not a state dict of tensors"):
    load_state_dict(str(tmp_path / "d.pth"))


class _Pickled:
  pass


def test_convert_checks_config_and_workdir(tmp_path, data_dir):
  config = tiny_config(data_dir)  # synthetic_av: 6 classes, widths (4, 8, 8, 8), concat.
  model = AVClassifier(num_classes=6, fusion="concat", widths=(4, 8, 8, 8), rngs=nnx.Rngs(0))
  np.savez(tmp_path / "ok.npz", **nnx_to_state_dict(model))
  wide = _model()  # widths (8, 16, 16, 16), 5 classes.
  np.savez(tmp_path / "wide.npz", **nnx_to_state_dict(wide))
  with pytest.raises(ConversionError, match=r"widths \(8, 16, 16, 16\), config has \(4, 8, 8, 8\)"):
    convert_checkpoint(str(tmp_path / "wide.npz"), config, str(tmp_path / "w1"))
  config.model.av_resnet.widths = WIDTHS
  with pytest.raises(ConversionError, match="has 5 classes but dataset synthetic_av/"):
    convert_checkpoint(str(tmp_path / "wide.npz"), config, str(tmp_path / "w1"))
  assert not (tmp_path / "w1").exists()
  busy = tmp_path / "busy"
  busy.mkdir()
  (busy / "metrics.jsonl").write_text("{}\n")
  config.model.av_resnet.widths = (4, 8, 8, 8)
  with pytest.raises(ConversionError, match="exists and is not empty"):
    convert_checkpoint(str(tmp_path / "ok.npz"), config, str(busy))
  assert sorted(p.name for p in busy.iterdir()) == ["metrics.jsonl"]
  empty = tmp_path / "empty"
  empty.mkdir()
  assert convert_checkpoint(str(tmp_path / "ok.npz"), config, str(empty)) == 6
  assert sorted(p.name for p in empty.iterdir()) == ["checkpoints", "config.json"]
  assert sorted(p.name for p in (empty / "checkpoints").iterdir()) == ["0"]
  # The workdir restores as avjax.evaluate / avjax.train restore it.
  from avjax.checkpoint import Checkpointer, abstract_like
  from avjax.evaluate import load_workdir_config
  from avjax.methods import METHODS
  from avjax.models import build_model
  from avjax.optim import make_optimizer
  from avjax.steps import init_state
  saved = load_workdir_config(str(empty))
  assert tuple(saved.model.av_resnet.widths) == (4, 8, 8, 8)
  fresh = build_model(saved, 6)
  _, state = init_state(fresh, make_optimizer(saved.optimizer, 1, saved.train.num_epochs),
                        METHODS.get(saved.method.name)(saved), saved.seed)
  checkpointer = Checkpointer(str(empty / "checkpoints"), keep=2, best_metric="accuracy",
                              best_mode="max")
  restored, meta = checkpointer.restore(0, abstract_like(state))
  checkpointer.close()
  assert meta["epoch"] == 0 and meta["step_in_epoch"] == 0
  assert meta["converted_from"] == str(tmp_path / "ok.npz")
  assert int(restored.step) == 0
  expected = nnx.state(model, nnx.Param)
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(restored.params), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  _, _, stats = nnx.split(model, nnx.Param, ...)
  for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(restored.model_state), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
