"""Parity of avjax's VAVL / Conformer with a PyTorch restatement of the reference
(tests/convert/torch_conformer.py, attention over time on both sides) on converted weights, and the
VAVL checkpoint import through `avjax.convert`."""

from __future__ import annotations

import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")

from avjax.checkpoint import Checkpointer, abstract_like  # noqa: E402
from avjax.config import base_config  # noqa: E402
from avjax.convert import ConversionError, convert_checkpoint  # noqa: E402
from avjax.convert import vavl as convert_vavl  # noqa: E402
from avjax.models.vavl import VAVL  # noqa: E402
from avjax.steps import setup  # noqa: E402
from tests.convert import torch_conformer as ref  # noqa: E402

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
  c.method.task = "dimensional"
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
