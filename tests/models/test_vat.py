"""VAT models: shapes, modality masking, shared parameter paths, scanned layers, presets, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avjax.config import base_config
from avjax.models import build_model
from avjax.models.outputs import MODALITIES, ModelOutput
from avjax.models.vat import VATPretrain, model_section, resolve_settings
from avjax.registry import ConfigError
from tests.helpers import output_fields

B, C = 3, 4
# Tests compile with XLA's backend optimisations off: same semantics, half the compile time.
FAST_COMPILE = {"xla_backend_optimization_level": 0}
TINY = dict(width=16, heads=2, mlp_dim=32, visual_layers=1, audio_layers=2, fusion_layers=1,
            embed_dim=8, patch_size=8, audio_patch_size=(8, 16), audio_size=(16, 32))


def _config(name: str = "vat", **sizes):
  c = base_config()
  c.model.name = name
  c.model.vat = model_section("small", **{**TINY, **sizes})
  c.input.num_frames, c.input.image_size = 2, 16
  return c


def _inputs(seed: int = 0) -> dict[str, jax.Array]:
  ka, kv = jax.random.split(jax.random.key(seed))
  return {"audio": jax.random.normal(ka, (B, 16, 32, 1)),
          "visual": jax.random.normal(kv, (B, 2, 16, 16, 3))}


@pytest.fixture(scope="module")
def models():
  return {"pretrain": build_model(_config("vat"), C, {"temperature": 0.05}),
          "classifier": build_model(_config("vat_classifier"), C, {"num_targets": 2,
                                                                    "target_range": (-5.0, 5.0)})}


def _jit(model, fn):
  """fn(model, *args) jitted over the model's state (one compile; eager NNX calls are slower)."""
  graph, state = nnx.split(model)
  return jax.jit(lambda st, *args: fn(nnx.merge(graph, st), *args),
                 compiler_options=FAST_COMPILE), state


def test_token_counts_and_pretrain_outputs(models):
  model = models["pretrain"]

  def run(m, x):
    tokens = m.encode(x)
    return tokens, m(x), m.match(tokens["audio"], tokens["visual"])

  f, state = _jit(model, run)
  tokens, out, matched = f(state, _inputs())
  # Audio (16, 32) in (8, 16) patches: 2 x 2 = 4 + [CLS]; 2 frames of (16/8)^2 = 4 patches + [CLS].
  assert tokens["audio"].shape == (B, 5, 16) and tokens["visual"].shape == (B, 9, 16)
  assert isinstance(out, ModelOutput) and out.logits.shape == (B, 2)
  assert out.modality_logits == {}
  for m in MODALITIES:
    embed = np.asarray(output_fields(out)[f"{m}_embed"])
    assert embed.shape == (B, 8)
    np.testing.assert_allclose(np.linalg.norm(embed, axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out.features[m], tokens[m][:, 0], rtol=1e-6)
  assert float(model.temp[...]) == pytest.approx(0.05)
  np.testing.assert_allclose(out.logits, matched, rtol=1e-5, atol=1e-6)


def test_classifier_outputs_and_modality_mask(models):
  model = models["classifier"]
  mask = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
  f, state = _jit(model, lambda m, x, mask: (m(x), m(x, mask), m.fuse(m.encode(x)).logits))
  full, masked, fused = f(state, _inputs(1), mask)
  assert full.logits.shape == (B, C)
  assert all(full.modality_logits[m].shape == (B, C) for m in MODALITIES)
  for key in ("regression", "regression_audio", "regression_visual"):
    values = np.asarray(output_fields(full)[key])
    assert values.shape == (B, 2) and np.all((values > -5) & (values < 5))
  np.testing.assert_allclose(fused, full.logits, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(output_fields(masked)["visual_tokens"][0], 0)  # The whole sequence.
  np.testing.assert_array_equal(masked.features["audio"][1], 0)
  np.testing.assert_allclose(masked.logits[2], full.logits[2], rtol=1e-5, atol=1e-6)
  # Per-modality heads read only their own modality.
  np.testing.assert_allclose(masked.modality_logits["audio"][0], full.modality_logits["audio"][0],
                             rtol=1e-5, atol=1e-6)
  assert not np.allclose(masked.logits[0], full.logits[0])
  with pytest.raises(ValueError, match="modality_mask"):
    f(state, _inputs(1), jnp.ones((B,)))


def test_encoders_share_parameter_paths(models):
  """init_from copies by path and shape: pre-training and fine-tuning encoders must agree."""
  flat = {k: {jax.tree_util.keystr(p): x.shape for p, x in jax.tree_util.tree_leaves_with_path(
      nnx.state(m, nnx.Param))} for k, m in models.items()}
  shared = {p for p in flat["pretrain"] if p.startswith(("['audio_encoder']", "['visual_encoder']",
                                                         "['fusion_encoder']"))}
  assert len(shared) > 40
  assert {p: flat["classifier"].get(p) for p in shared} == {p: flat["pretrain"][p] for p in shared}
  only_pretrain = {p.split("]")[0] + "]" for p in set(flat["pretrain"]) - shared}
  assert only_pretrain == {"['audio_proj']", "['visual_proj']", "['itm_head']", "['temp']"}


def test_detached_modality_heads_do_not_train_encoders():
  model = build_model(_config("vat_classifier"), C, {"detach_modality_heads": True})
  graph, params, rest = nnx.split(model, nnx.Param, ...)
  x = _inputs(2)

  def modality_loss(p):
    out = nnx.merge(graph, p, rest)(x)
    return sum(jnp.sum(out.modality_logits[m] ** 2) for m in MODALITIES)

  grads = jax.jit(jax.grad(modality_loss), compiler_options=FAST_COMPILE)(params)
  for name in ("audio_encoder", "visual_encoder", "fusion_encoder", "head"):
    assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(grads[name])), name
  assert float(jnp.abs(grads["audio_head"]["kernel"][...]).max()) > 0


def test_scanned_layers_equal_a_loop_over_the_stacked_blocks(models):
  encoder = models["pretrain"].audio_encoder.encoder  # audio_layers=2.
  x = jax.random.normal(jax.random.key(1), (2, 5, 16))
  graph, stacked = nnx.split(encoder.blocks)
  assert {a.shape[0] for a in jax.tree.leaves(stacked)} == {2}  # Stacked on a depth axis.
  f, state = _jit(encoder, lambda e, x: e(x))

  @jax.jit
  def loop(stacked, x):
    for i in range(2):
      x = nnx.merge(graph, jax.tree.map(lambda a, i=i: a[i], stacked))(x)
    return x

  np.testing.assert_allclose(f(state, x), encoder.norm(loop(stacked, x)), rtol=1e-5, atol=1e-6)
  # remat recomputes the blocks in the backward pass: same values and gradients.
  grads = {}
  for remat in (False, True):
    encoder.remat = remat
    graph, st = nnx.split(encoder)
    loss = lambda st, y, graph=graph: jnp.sum(nnx.merge(graph, st)(y) ** 2)
    grads[remat] = jax.jit(jax.grad(loss, argnums=1), compiler_options=FAST_COMPILE)(st, x)
  encoder.remat = False
  np.testing.assert_allclose(grads[True], grads[False], rtol=1e-5, atol=1e-6)


def test_albef_preset_sizes():
  """12 / 6 / 6 layers, 768 wide: the frame encoder is ViT-B/16 (85,798,656 parameters without
  its head, as timm counts them) plus one 768-vector per frame of temporal embedding."""
  c = base_config()
  c.model.vat = model_section("albef", audio_size=(1024, 128))
  c.input.num_frames, c.input.image_size = 8, 224
  s = resolve_settings(c)
  assert (s.width, s.heads, s.mlp_dim, s.embed_dim) == (768, 12, 3072, 256)
  assert (s.visual_layers, s.audio_layers, s.fusion_layers) == (12, 6, 6)
  abstract = nnx.eval_shape(lambda: VATPretrain(s, rngs=nnx.Rngs(0)))
  count = lambda m: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(m, nnx.Param)))
  assert count(abstract.visual_encoder) == 85_798_656 + 8 * 768
  c.model.vat.width = 96  # Any size can be overridden; 0 keeps the preset's.
  assert resolve_settings(c).width == 96 and resolve_settings(c).heads == 12


@pytest.mark.parametrize("change,needle", [
    (dict(image_size=20), "not a multiple of config.model.vat.patch_size"),
    (dict(num_frames=0), "config.input.num_frames"),
    (dict(audio_size=(16, 30)), "audio_patch_size"),
    (dict(heads=3), "divisible by heads"),
    (dict(preset="huge"), "preset='huge'"),
    (dict(attention="flash"), "attention='flash'"),
])
def test_settings_errors(change, needle):
  c = _config()
  for key, value in change.items():
    if key in ("image_size", "num_frames"):
      c.input[key] = value
    else:
      c.model.vat[key] = value
  with pytest.raises(ConfigError, match=needle):
    resolve_settings(c)


def test_missing_section_and_input_shape_errors(models):
  c = base_config()
  c.model.name = "vat"
  with pytest.raises(ConfigError, match="config.model.vat section"):
    build_model(c, C)
  x = _inputs()
  graph, state = nnx.split(models["pretrain"])
  encode = lambda inputs: jax.eval_shape(  # Trace only: the shape checks run at trace time.
      lambda st, x: nnx.merge(graph, st).encode(x), state, inputs)
  with pytest.raises(ValueError, match="config.input.num_frames"):
    encode({**x, "visual": x["visual"][:, :1]})
  with pytest.raises(ValueError, match="config.model.vat.audio_size"):
    encode({**x, "audio": x["audio"][:, :8]})
