"""Parity of avjax's VAVL / Conformer with a PyTorch restatement of the reference
(tests/convert/torch_conformer.py, attention over time on both sides) on converted weights, and the
VAVL checkpoint import through `avjax.convert`: also of state dicts with exactly the key set the
original code saves (`original_shapes`), through `python -m avjax.convert` / `avjax.evaluate`."""

from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")

import data_builders.msp_improv as mi  # noqa: E402
from avjax.checkpoint import Checkpointer, abstract_like  # noqa: E402
from avjax.config import base_config  # noqa: E402
from avjax.convert import ConversionError, convert_checkpoint  # noqa: E402
from avjax.convert import vavl as convert_vavl  # noqa: E402
from avjax.models.vavl import VAVL  # noqa: E402
from avjax.steps import setup  # noqa: E402
from tests.convert import torch_conformer as ref  # noqa: E402
from tests.data_builders import fixtures as fx  # noqa: E402
from tests.helpers import run_cli  # noqa: E402

torch.set_num_threads(1)

DIMS = dict(audio_dim=12, visual_dim=10, proj_dim=6, dim=8, heads=2, kernel_size=5,
            audio_blocks=2, visual_blocks=1, shared_blocks=1, head_hidden=(8, 4))
apply = nnx.jit(lambda model, inputs: model(inputs))


def _torch_model(seed: int = 0) -> torch.nn.Module:
  return ref.randomize(ref.VAVL(outputs=3, audio_dim=12, visual_dim=10, proj=6, d=8, heads=2,
                                kernel=5, blocks=(2, 1, 1), hidden=(8, 4)), seed)


def _state_dict(model: torch.nn.Module) -> dict[str, np.ndarray]:
  return {k: v.numpy() for k, v in model.state_dict().items()}


def _inputs(seed: int = 0):
  rng = np.random.default_rng(seed)
  xa = rng.normal(size=(3, 7, 12)).astype(np.float32)
  xv = rng.normal(size=(3, 5, 10)).astype(np.float32)
  return xa, xv, {"audio": jnp.asarray(xa), "visual": jnp.asarray(xv)}


@pytest.fixture(scope="module")
def pair():
  torch_model = _torch_model()
  model = VAVL(num_outputs=3, inputs="features", rel_pos="reference", dropout=0.0,
               head_dropout=0.0, rngs=nnx.Rngs(3), **DIMS)
  convert_vavl.state_dict_to_nnx(model, _state_dict(torch_model))
  return torch_model, model


@pytest.mark.parametrize("train", [False, True])
def test_converted_vavl_matches_the_reference(pair, train):
  """Eval mode (BatchNorm running statistics) and train mode (batch statistics, no dropout)."""
  torch_model, model = pair
  torch_model.train(train)
  model.train() if train else model.eval()
  xa, xv, inputs = _inputs()
  with torch.no_grad():
    expected = torch_model(torch.from_numpy(xa), torch.from_numpy(xv))
  out = apply(nnx.clone(model), inputs)
  for name, got in (("logits", out.logits), ("audio", out.modality_logits["audio"]),
                    ("visual", out.modality_logits["visual"]),
                    ("rep_audio", out.features["audio"])):
    np.testing.assert_allclose(np.asarray(got), expected[name].numpy(), rtol=2e-4, atol=2e-5,
                               err_msg=name)
  torch_model.eval()


def test_state_dict_round_trip_loads_into_the_reference(pair):
  _, model = pair
  exported = convert_vavl.nnx_to_state_dict(model)
  missing, unexpected = _fresh_load(exported)
  assert not unexpected and all(n.endswith("num_batches_tracked") for n in missing)
  for name, value in _state_dict(_torch_model()).items():  # The weights `pair` converted.
    if not name.endswith("num_batches_tracked"):
      np.testing.assert_allclose(exported[name], value, rtol=0, atol=0, err_msg=name)


def _fresh_load(state_dict):
  fresh = _torch_model(seed=9)
  result = fresh.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in
                                  state_dict.items()}, strict=False)
  return result.missing_keys, result.unexpected_keys


def test_mismatch_lists_the_names():
  model = VAVL(num_outputs=3, inputs="features", rngs=nnx.Rngs(0), **DIMS)
  sd = _state_dict(_torch_model())
  sd.pop("weights.out_layer.bias")
  sd["acoustic_model.conv_1d_a.weight"] = np.zeros((6, 11, 1), np.float32)
  with pytest.raises(ConversionError,
                     match=r"missing from the checkpoint \(1\): weights.out_layer.bias") as e:
    convert_vavl.state_dict_to_nnx(model, sd)
  assert "acoustic_model.conv_1d_a.weight: checkpoint (6, 11, 1)" in str(e.value)


def test_convert_a_reference_model_folder(tmp_path):
  """The reference's per-module .pt files -> an avjax workdir whose checkpoint holds the weights."""
  torch_model = _torch_model(seed=1)
  folder = tmp_path / "reference"
  folder.mkdir()
  for prefix, filename in convert_vavl.FILES.items():
    torch.save(getattr(torch_model, prefix).state_dict(), folder / filename)
  c = base_config()
  c.dataset.name = "msp_improv"
  c.dataset.config = "features_p1"
  c.model.name = "vavl"
  c.model.vavl = ml_collections.ConfigDict(dict(inputs="features", rel_pos="reference", **DIMS))
  c.method.name = "vavl"
  c.task.name = "regression"
  c.task.targets = ("arousal", "valence", "dominance")
  c.model.vavl.heads = 4
  with pytest.raises(ConversionError, match="heads=2"):
    convert_checkpoint(str(folder), c, str(tmp_path / "bad"))
  c.model.vavl.heads = 2
  assert convert_checkpoint(str(folder), c, str(tmp_path / "out")) == 3
  state = setup(c, 3).state
  ckpt = Checkpointer(os.path.join(tmp_path, "out", "checkpoints"), keep=1, best_metric="loss",
                      best_mode="min")
  restored, _ = ckpt.restore(0, abstract_like(state))
  ckpt.close()
  kernel = restored.params["fusion"]["out"]["kernel"][...]
  np.testing.assert_array_equal(np.asarray(kernel),
                                torch_model.weights.out_layer.weight.detach().numpy().T)


# ------------------------------------------------------------- the original's saved key set


def original_shapes(outputs: int, audio_dim: int = 1024, visual_dim: int = 1408, proj: int = 50,
                    d: int = 512, heads: int = 8, kernel: int = 31, blocks=(3, 3, 2),
                    hidden=(512, 256), max_len: int = 10000) -> dict[str, tuple[int, ...]]:
  """Every name and shape in the state dicts that ilucasgoncalves/VAVL (c128439) saves, read off
  net/avmodel.py, net/modelWrapper.py and conformer/*.py (not avjax's exporter), with the module
  attribute of modelWrapper as prefix. The defaults are the original's sizes (hidden: its MLPs'
  hidden_2 = 512, hidden_1 = 256; outputs: --output_num)."""
  shapes: dict[str, tuple[int, ...]] = {}

  def linear(name: str, cin: int, cout: int, bias: bool = True) -> None:
    shapes[f"{name}.weight"] = (cout, cin)
    if bias:
      shapes[f"{name}.bias"] = (cout,)

  def layer_norm(name: str) -> None:
    shapes[f"{name}.weight"] = shapes[f"{name}.bias"] = (d,)

  def conformer(prefix: str, cin: int, layers: int) -> None:  # conformer/model.py Conformer.
    enc = f"{prefix}.encoder"  # ConformerEncoder.
    # Conv2dSubampling(1, encoder_dim): Conv2d(1, D, 3, 2), ReLU, Conv2d(D, D, 3, 2), ReLU. Built
    # (encoder.py:143), never called (forward starts at input_projection).
    shapes[f"{enc}.conv_subsample.sequential.0.weight"] = (d, 1, 3, 3)
    shapes[f"{enc}.conv_subsample.sequential.0.bias"] = (d,)
    shapes[f"{enc}.conv_subsample.sequential.2.weight"] = (d, d, 3, 3)
    shapes[f"{enc}.conv_subsample.sequential.2.bias"] = (d,)
    linear(f"{enc}.input_projection.0.linear", cin, d)  # Sequential(Linear wrapper, Dropout).
    for i in range(layers):
      block = f"{enc}.layers.{i}.sequential"  # ConformerBlock: 4 residual units, LayerNorm.
      for unit in (0, 3):  # FeedForwardModule: LayerNorm, Linear, Swish, Dropout, Linear, Dropout.
        layer_norm(f"{block}.{unit}.module.sequential.0")
        linear(f"{block}.{unit}.module.sequential.1.linear", d, 4 * d)
        linear(f"{block}.{unit}.module.sequential.4.linear", 4 * d, d)
      mhsa = f"{block}.1.module"  # MultiHeadedSelfAttentionModule.
      shapes[f"{mhsa}.positional_encoding.pe"] = (1, max_len, d)  # A persistent buffer.
      layer_norm(f"{mhsa}.layer_norm")
      for name in ("query_proj", "key_proj", "value_proj"):
        linear(f"{mhsa}.attention.{name}.linear", d, d)
      linear(f"{mhsa}.attention.pos_proj.linear", d, d, bias=False)
      shapes[f"{mhsa}.attention.u_bias"] = shapes[f"{mhsa}.attention.v_bias"] = (heads, d // heads)
      linear(f"{mhsa}.attention.out_proj.linear", d, d)
      conv = f"{block}.2.module.sequential"  # ConformerConvModule: LayerNorm, Transpose,
      layer_norm(f"{conv}.0")  # pointwise, GLU, depthwise (no bias), BatchNorm1d, Swish,
      shapes[f"{conv}.2.conv.weight"] = (2 * d, d, 1)  # pointwise, Dropout.
      shapes[f"{conv}.2.conv.bias"] = (2 * d,)
      shapes[f"{conv}.4.conv.weight"] = (d, 1, kernel)
      for name in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{conv}.5.{name}"] = (d,)
      shapes[f"{conv}.5.num_batches_tracked"] = ()
      shapes[f"{conv}.7.conv.weight"] = (d, d, 1)
      shapes[f"{conv}.7.conv.bias"] = (d,)
      layer_norm(f"{block}.4")

  def mlp(prefix: str, cin: int, cout: int) -> None:  # MLP / MLP_reconst_* / MultitaskFusion.
    linear(f"{prefix}.projav1", cin, hidden[0])
    linear(f"{prefix}.projav2", hidden[0], hidden[1])
    linear(f"{prefix}.out_layer", hidden[1], cout)

  shapes["acoustic_model.conv_1d_a.weight"] = (proj, audio_dim, 1)  # Conv1d k=1, no bias.
  conformer("acoustic_model.x_acoustic", proj, blocks[0])
  shapes["visual_model.conv_1d_v.weight"] = (proj, visual_dim, 1)
  conformer("visual_model.x_visual", proj, blocks[1])
  conformer("shared_model.x_shared", d, blocks[2])
  layer_norm("shared_model.layer_norm")
  for prefix in ("MLP_a", "MLP_v", "MLP_av"):
    mlp(prefix, d, outputs)
  mlp("MLP_rec_a", d, audio_dim)
  mlp("MLP_rec_v", d, visual_dim)
  mlp("weights", 2 * d, outputs)
  return shapes


def original_state_dict(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
  """Random values of those shapes (positive running variances; the unread positional encodings
  as broadcast zeros, so the original's (1, 10000, 512) buffers cost no memory)."""
  rng = np.random.default_rng(seed)
  out = {}
  for name, shape in shapes.items():
    if name.endswith("num_batches_tracked"):
      out[name] = np.array(7, np.int64)
    elif name.endswith(".pe"):
      out[name] = np.broadcast_to(np.float32(0), shape)
    else:
      value = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.1)
      out[name] = np.abs(value) + 0.5 if name.endswith("running_var") else value
  return out


# Tiny sizes, with the original's feature widths and block counts (3, 3, 2): its exact key set.
TINY = dict(audio_dim=1024, visual_dim=1408, proj_dim=6, dim=8, heads=2, kernel_size=5,
            audio_blocks=3, visual_blocks=3, shared_blocks=2, head_hidden=(8, 4))


ENCODERS = ("acoustic_model.x_acoustic", "visual_model.x_visual", "shared_model.x_shared")
SUBSAMPLING = [f"{encoder}.encoder.conv_subsample.sequential.{i}.{leaf}"
               for encoder in ENCODERS for i in (0, 2) for leaf in ("weight", "bias")]
# The skipped tensors as the log line names them.
IGNORED_LINE = ", ".join(
    f"{encoder}.encoder.conv_subsample.sequential.{{0.bias,0.weight,2.bias,2.weight}}"
    for encoder in sorted(ENCODERS))


def test_original_state_dict_at_the_original_sizes_imports(caplog):
  """The original configuration (avjax's VAVL defaults, the sizes of configs/vavl_msp.py) from a
  state dict with the original's names and shapes: every avjax variable filled, the never-used
  tensors skipped and named in one line."""
  shapes = original_shapes(outputs=3)
  assert len(SUBSAMPLING) == 12 and all(name in shapes for name in SUBSAMPLING)
  assert shapes["shared_model.x_shared.encoder.conv_subsample.sequential.2.weight"] == (
      512, 512, 3, 3)
  state_dict = original_state_dict(shapes)
  model = nnx.eval_shape(lambda: VAVL(num_outputs=3, inputs="features", rel_pos="reference",
                                      rngs=nnx.Rngs(0)))
  with caplog.at_level(logging.INFO, logger="avjax.convert.vavl"):
    convert_vavl.state_dict_to_nnx(model, state_dict)
  [record] = [r for r in caplog.records if r.name == "avjax.convert.vavl"]
  message = record.getMessage()
  assert "\n" not in message and message.startswith("Ignored 18 checkpoint tensors")
  assert IGNORED_LINE in message
  assert "MLP_av.{out_layer.bias,out_layer.weight,projav1.bias,projav1.weight" in message
  assert "net/modelWrapper.py builds MLP_av but never calls it" in message
  skipped = [n for n in shapes if n in SUBSAMPLING or n.startswith("MLP_av.")
             or n.endswith(("num_batches_tracked", ".pe"))]
  assert len(skipped) == 12 + 6 + 2 * 8  # Subsampling, MLP_av, a counter and an encoding per block.
  filled = jax.tree.leaves(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat)))
  assert len(filled) == len(shapes) - len(skipped)
  assert all(isinstance(x, jax.Array) for x in filled)  # None left abstract.
  block = "visual_model.x_visual.encoder.layers.2.sequential"
  np.testing.assert_array_equal(  # Depthwise (D, 1, k) -> (k, 1, D).
      model.visual_encoder.conformer.blocks[2].conv.depthwise.kernel[...][:, 0, :],
      state_dict[f"{block}.2.module.sequential.4.conv.weight"][:, 0, :].T)
  np.testing.assert_array_equal(model.shared.conformer.blocks[1].attn.u_bias[...],
                                state_dict["shared_model.x_shared.encoder.layers.1.sequential.1."
                                           "module.attention.u_bias"])
  np.testing.assert_array_equal(model.fusion.out.kernel[...],
                                state_dict["weights.out_layer.weight"].T)


def test_original_key_set_with_other_unexpected_or_missing_keys_still_fails():
  shapes = original_shapes(outputs=3, proj=6, d=8, heads=2, kernel=5, hidden=(8, 4), max_len=16)
  model = nnx.eval_shape(lambda: VAVL(num_outputs=3, inputs="features", rel_pos="reference",
                                      rngs=nnx.Rngs(0), **TINY))
  state_dict = original_state_dict(shapes)
  state_dict.pop("weights.out_layer.bias")
  state_dict["acoustic_model.x_acoustic.encoder.conv_subsample.sequential.4.weight"] = np.zeros(3)
  state_dict["shared_model.conv_subsample.sequential.0.weight"] = np.zeros(3)
  with pytest.raises(ConversionError) as e:
    convert_vavl.state_dict_to_nnx(model, state_dict)
  assert "missing from the checkpoint (1): weights.out_layer.bias" in str(e.value)
  assert ("unexpected in the checkpoint (2): acoustic_model.x_acoustic.encoder.conv_subsample."
          "sequential.4.weight, shared_model.conv_subsample.sequential.0.weight") in str(e.value)
  assert not any(isinstance(x, jax.Array) for x in jax.tree.leaves(nnx.state(model)))  # Unfilled.


def _msp_features(root, data_dir: str) -> None:
  """A tiny msp_improv/features_p1: features of 24 utterances (a few broken on purpose)."""
  ids = [fx.msp_id(session, scenario) for session in range(1, 7) for scenario in fx.MSP_SCENARIOS]
  fx.add_vavl_msp(root, ids, partitions=(1,))
  fx.add_features(root, ids)
  mi.build("features_p1", data_dir=data_dir, manual_dir=str(root), num_workers=0)


def test_original_model_folder_converts_and_evaluates_through_the_clis(tmp_path):
  """save_model's nine .pt files, each module's state dict with the original's names, through
  `python -m avjax.convert` (configs/vavl_msp.py at tiny sizes) and `python -m avjax.evaluate`."""
  shapes = original_shapes(outputs=3, proj=6, d=8, heads=2, kernel=5, hidden=(8, 4), max_len=64)
  state_dict = original_state_dict(shapes, seed=1)
  folder = tmp_path / "model"
  folder.mkdir()
  files = dict(convert_vavl.FILES, MLP_av="MLP_av_head.pt")  # avjax reads all but MLP_av's.
  for prefix, filename in files.items():
    torch.save({name[len(prefix) + 1:]: torch.from_numpy(np.array(value))
                for name, value in state_dict.items() if name.startswith(f"{prefix}.")},
               folder / filename)
  assert sorted(p.name for p in folder.iterdir()) == sorted(  # modelWrapper.save_model's files.
      ["final_acoustic_head.pt", "final_visual_head.pt", "final_weights_head.pt",
       "final_shared_head.pt", "MLP_a_head.pt", "MLP_v_head.pt", "MLP_av_head.pt",
       "MLP_rec_a_head.pt", "MLP_rec_v_head.pt"])
  data_dir = str(tmp_path / "tfds")
  _msp_features(tmp_path / "MSP-IMPROV", data_dir)
  workdir = str(tmp_path / "converted")
  sizes = [f"--config.model.vavl.{key}={value}" for key, value in TINY.items()]
  result = run_cli("avjax.convert", "--checkpoint", str(folder), "--config", "configs/vavl_msp.py",
                   f"--config.dataset.data_dir={data_dir}", "--config.model.vavl.rel_pos=reference",
                   "--config.input.max_audio_frames=24", "--config.input.max_visual_frames=16",
                   *sizes, f"--workdir={workdir}")
  assert "vavl model, 3 classes" in result.stdout
  [line] = [x for x in result.stderr.splitlines() if "Ignored" in x]
  assert line.endswith("Ignored 12 checkpoint tensors that the reference VAVL's forward never uses "
                       "(conformer/encoder.py builds conv_subsample in every Conformer encoder, "
                       f"but its forward feeds input_projection directly): {IGNORED_LINE}.")
  report = run_cli("avjax.evaluate", f"--workdir={workdir}",
                   f"--predictions={tmp_path / 'predictions.npz'}").stdout
  assert "checkpoint 0, split 'test'" in report
  with np.load(tmp_path / "predictions.npz") as f:
    predictions = dict(f)
  assert len(predictions["index"]) > 0
  for key in ("logits", "logits_audio", "logits_visual"):
    assert predictions[key].shape == (len(predictions["index"]), 3), key
    assert np.isfinite(predictions[key]).all(), key
