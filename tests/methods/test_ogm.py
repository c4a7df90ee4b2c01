"""OGM / OGM-GE: hand-computed coefficients, what gets modulated, GE noise, 1 vs 8 devices."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from avjax import sharding
from avjax.config import base_config, validate
from avjax.methods import METHODS, StepContext
from avjax.methods.ogm import encoder_modality, modulate_grads, ogm_coefficients
from avjax.models.contract import ModelInfo
from avjax.models.classifier import AVClassifier
from avjax.models.outputs import ModelOutput
from avjax.registry import ConfigError

ALPHA = 0.8


def _two_class_logits(p_true: list[float]) -> jax.Array:
  """(B, 2) logits whose softmax puts probability p_true[i] on class 0 (the label)."""
  p = np.asarray(p_true, np.float64)
  return jnp.asarray(np.log(np.stack([p, 1 - p], -1)), jnp.float32)


def _coeffs(p_audio, p_visual, alpha=ALPHA):
  labels = jnp.zeros(len(p_audio), jnp.int32)
  out = ogm_coefficients({"audio": _two_class_logits(p_audio),
                          "visual": _two_class_logits(p_visual)}, labels, alpha)
  return {k: float(v) for k, v in out.items()}


def test_coefficients_visual_dominant():
  # s_a = 0.5 + 0.3 = 0.8, s_v = 0.9 + 0.7 = 1.6 -> rho_v = 2 > 1: visual damped.
  k = _coeffs([0.5, 0.3], [0.9, 0.7])
  assert k["ratio_visual"] == pytest.approx(2.0, rel=1e-5)
  assert k["visual"] == pytest.approx(1 - math.tanh(ALPHA * 2.0), rel=1e-5)
  assert k["audio"] == 1.0


def test_coefficients_audio_dominant():
  # s_a = 0.9 + 0.7 + 0.8 = 2.4, s_v = 0.2 + 0.3 + 0.3 = 0.8 -> rho_v = 1/3, rho_a = 3.
  k = _coeffs([0.9, 0.7, 0.8], [0.2, 0.3, 0.3])
  assert k["ratio_visual"] == pytest.approx(1 / 3, rel=1e-5)
  assert k["audio"] == pytest.approx(1 - math.tanh(ALPHA * 3.0), rel=1e-4)
  assert k["visual"] == 1.0


def test_coefficients_at_ratio_exactly_one_modulate_audio():
  k = _coeffs([0.6, 0.4], [0.6, 0.4])
  assert k["ratio_visual"] == 1.0
  assert k["audio"] == pytest.approx(1 - math.tanh(ALPHA), rel=1e-6)  # 0.336 for alpha 0.8.
  assert k["visual"] == 1.0
  assert _coeffs([0.6, 0.4], [0.6, 0.4])["audio"] == pytest.approx(0.3359, abs=1e-4)


def test_coefficients_use_batch_sums_not_means():
  # Same per-example scores; only the sums' ratio matters, so doubling the batch changes nothing,
  # while swapping which example is confident changes s but not the ratio either.
  one = _coeffs([0.9, 0.5], [0.3, 0.4])
  two = _coeffs([0.9, 0.5, 0.9, 0.5], [0.3, 0.4, 0.3, 0.4])
  assert one == pytest.approx(two, rel=1e-6)
  assert one["ratio_visual"] == pytest.approx(0.7 / 1.4, rel=1e-5)


# --- Gradient modulation on the real parameter tree. -------------------------------------------------


@pytest.fixture(scope="module")
def param_grads():
  """Random gradients shaped like a tiny AVClassifier's params (an nnx.State)."""
  model = AVClassifier(num_classes=3, widths=(4, 8, 8, 8), rngs=nnx.Rngs(0))
  params = nnx.state(model, nnx.Param)
  rng = np.random.default_rng(1)
  return jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), params)


def _config(name: str, **method) -> ml_collections.ConfigDict:
  c = base_config()
  c.method.name = name
  for k, v in method.items():
    c.method[k] = v
  return c


def _output(p_audio, p_visual) -> tuple[ModelOutput, dict]:
  logits_a, logits_v = _two_class_logits(p_audio), _two_class_logits(p_visual)
  output = ModelOutput(logits=logits_a + logits_v,
                       modality_logits={"audio": logits_a, "visual": logits_v}, features={})
  return output, {"label": jnp.zeros(len(p_audio), jnp.int32)}


@pytest.fixture(scope="module")
def transforms():
  """Jitted transform_grads of OGM and OGM-GE with the window [2, 4], compiled once per module
  (epoch, step and logits are traced, so every test reuses the same executables)."""
  return {name: jax.jit(METHODS.get(name)(_config(
      name, alpha=ALPHA, modulation_starts=2, modulation_ends=4)).transform_grads)
          for name in ("ogm", "ogm_ge")}


# av_resnet's parameter groups (what the methods see of the model).
AV_RESNET = ModelInfo(name="av_resnet", capabilities=frozenset(),
                      groups=(("encoder/audio", ("audio_encoder",)),
                              ("encoder/visual", ("visual_encoder",)), ("fusion", ("fusion",))))


def _ctx(epoch: int, step: int = 0) -> StepContext:
  return StepContext(step=jnp.int32(step), epoch=jnp.int32(epoch),
                     rng=jax.random.fold_in(jax.random.key(7), step), model=AV_RESNET)


def _flat(tree) -> dict[str, np.ndarray]:
  return {jax.tree_util.keystr(p): np.asarray(x)
          for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def _kind(path: str, x: np.ndarray) -> str:
  """'audio' / 'visual' for a 4-D encoder kernel, 'bn' for encoder BatchNorm, else 'other'."""
  top = path.split("]")[0]
  if "encoder" in top:
    if x.ndim == 4:
      return "audio" if "audio_encoder" in top else "visual"
    return "bn"
  return "other"


def test_only_4d_encoder_grads_scaled(param_grads, transforms):
  output, batch = _output([0.9, 0.7, 0.8], [0.2, 0.3, 0.3])  # Audio dominant: k_a < 1, k_v = 1.
  k_a = 1 - math.tanh(ALPHA * 3.0)
  new, _, metrics = transforms["ogm"](param_grads, output, batch, {}, _ctx(2))
  before, after = _flat(param_grads), _flat(new)
  kinds = {p: _kind(p, x) for p, x in before.items()}
  assert {"audio", "visual", "bn", "other"} <= set(kinds.values())
  assert any("down_conv" in p and k == "audio" for p, k in kinds.items())  # 1x1 downsample convs.
  for path, x in before.items():
    expected = x * k_a if kinds[path] == "audio" else x
    np.testing.assert_allclose(after[path], expected, rtol=2e-4, atol=1e-7, err_msg=path)
    if kinds[path] in ("bn", "other", "visual"):
      np.testing.assert_array_equal(after[path], x, err_msg=path)
  assert float(metrics["ogm_coeff_audio"]) == pytest.approx(k_a, rel=1e-4)
  assert float(metrics["ogm_coeff_visual"]) == 1.0
  assert float(metrics["ogm_ratio_visual"]) == pytest.approx(1 / 3, rel=1e-5)


def test_encoder_modality_rules():
  four = jnp.zeros((1, 1, 2, 2))
  assert encoder_modality("encoder/audio", four) == "audio"
  assert encoder_modality("encoder/visual", four) == "visual"
  assert encoder_modality("encoder/visual", jnp.zeros(3)) is None
  assert encoder_modality("fusion", four) is None
  assert encoder_modality(None, four) is None


@pytest.mark.parametrize("epoch,modulated", [(1, False), (2, True), (3, True), (4, True),
                                             (5, False)])
def test_window_is_inclusive(param_grads, transforms, epoch, modulated):
  output, batch = _output([0.5, 0.3], [0.9, 0.7])  # Visual dominant: k_v = 1 - tanh(1.6).
  new, _, metrics = transforms["ogm"](param_grads, output, batch, {}, _ctx(epoch))
  k_v = 1 - math.tanh(ALPHA * 2.0) if modulated else 1.0
  assert float(metrics["ogm_coeff_visual"]) == pytest.approx(k_v, rel=1e-5)
  assert float(metrics["ogm_coeff_audio"]) == 1.0
  before, after = _flat(param_grads), _flat(new)
  for path, x in before.items():
    if _kind(path, x) == "visual":
      np.testing.assert_allclose(after[path], x * k_v, rtol=2e-4, atol=1e-7)
    else:
      np.testing.assert_array_equal(after[path], x)


@pytest.mark.parametrize("epoch", [1, 5])
def test_ge_noise_absent_outside_window(param_grads, transforms, epoch):
  output, batch = _output([0.5, 0.3], [0.9, 0.7])
  new, _, metrics = transforms["ogm_ge"](param_grads, output, batch, {}, _ctx(epoch))
  for a, b in zip(jax.tree.leaves(param_grads), jax.tree.leaves(new)):
    np.testing.assert_array_equal(a, b)
  assert float(metrics["ogm_coeff_audio"]) == float(metrics["ogm_coeff_visual"]) == 1.0


def test_ge_in_window_scales_and_adds_noise_to_both(param_grads, transforms):
  output, batch = _output([0.5, 0.3], [0.9, 0.7])  # Visual dominant: k_v = 1 - tanh(1.6), k_a = 1.
  k_v = 1 - math.tanh(ALPHA * 2.0)
  new, _, _ = transforms["ogm_ge"](param_grads, output, batch, {}, _ctx(4))
  before, after = _flat(param_grads), _flat(new)
  for path, x in before.items():
    kind = _kind(path, x)
    if kind in ("bn", "other"):
      np.testing.assert_array_equal(after[path], x, err_msg=path)
      continue
    k = k_v if kind == "visual" else 1.0
    noise = after[path] - k * x
    assert np.all(np.abs(noise) > 0), path  # Noise on both modalities, also where k = 1.
    if x.size > 500:  # Large enough for a loose check of the std.
      assert noise.std() == pytest.approx(x.std(ddof=1), rel=0.2), path


def test_ge_noise_statistics_on_large_tensors():
  """noise = out - k * g has mean 0 and std = unbiased std(g) + 1e-8, independently per tensor, on
  both modalities (also the one with k = 1), and nothing is added to non-encoder or non-4-D leaves."""
  keys = jax.random.split(jax.random.key(3), 4)
  shape = (3, 3, 96, 128)  # 110,592 values: the std estimate is good to ~0.2 %.
  grads = {
      "audio_encoder": {"a": 0.5 + 2.0 * jax.random.normal(keys[0], shape),
                        "b": 0.1 * jax.random.normal(keys[1], shape),
                        "bn_scale": jnp.ones(7)},
      "visual_encoder": {"c": 3.0 * jax.random.normal(keys[2], shape)},
      "fusion": {"kernel": jax.random.normal(keys[3], (1, 1, 16, 16))},
  }
  coeffs = {"audio": jnp.float32(0.25), "visual": jnp.float32(1.0)}
  out = jax.jit(lambda g, c, k: modulate_grads(g, c, k, AV_RESNET))(grads, coeffs,
                                                                   jax.random.key(11))
  noises = {}
  for modality, name in (("audio", "a"), ("audio", "b"), ("visual", "c")):
    g = np.asarray(grads[f"{modality}_encoder"][name], np.float64)
    noise = np.asarray(out[f"{modality}_encoder"][name], np.float64) - float(coeffs[modality]) * g
    sigma = g.std(ddof=1) + 1e-8
    assert noise.std() == pytest.approx(sigma, rel=0.015), name
    assert abs(noise.mean()) < 5 * sigma / math.sqrt(noise.size), name
    noises[name] = noise.ravel() / sigma
  # Each tensor draws its own noise.
  assert abs(np.corrcoef(noises["a"], noises["b"])[0, 1]) < 0.02
  np.testing.assert_array_equal(out["audio_encoder"]["bn_scale"], grads["audio_encoder"]["bn_scale"])
  np.testing.assert_array_equal(out["fusion"]["kernel"], grads["fusion"]["kernel"])


def test_ge_noise_differs_between_steps(param_grads, transforms):
  output, batch = _output([0.5, 0.3], [0.9, 0.7])
  step = transforms["ogm_ge"]
  first, _, _ = step(param_grads, output, batch, {}, _ctx(2, step=0))
  again, _, _ = step(param_grads, output, batch, {}, _ctx(2, step=0))
  second, _, _ = step(param_grads, output, batch, {}, _ctx(2, step=1))
  changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(first),
                                                      jax.tree.leaves(second))]
  assert any(changed)
  for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(again)):
    np.testing.assert_array_equal(a, b)  # Deterministic given the step key.


# --- Sharding: the batch sums are global. ------------------------------------------------------------


def _sharded_transform(method, grads, logits_a, logits_v, labels, num_devices):
  cfg = base_config().mesh
  cfg.data = num_devices
  mesh = sharding.make_mesh(cfg)
  batch = sharding.to_global({"a": logits_a, "v": logits_v, "label": labels}, mesh)
  grads = jax.device_put(grads, sharding.replicated(mesh))

  @jax.jit
  def run(grads, batch):
    output = ModelOutput(logits=batch["a"] + batch["v"],
                         modality_logits={"audio": batch["a"], "visual": batch["v"]}, features={})
    return method.transform_grads(grads, output, {"label": batch["label"]}, {}, _ctx(0, step=5))

  new, _, metrics = run(grads, batch)
  return jax.device_get(new), jax.device_get(metrics)


def test_coefficients_equal_on_1_and_8_devices(param_grads):
  name = "ogm_ge"  # Coefficients, scaling and the per-tensor noise.
  assert jax.device_count() == 8
  rng = np.random.default_rng(0)
  batch_size, classes = 64, 6
  logits_a = rng.normal(0, 3, (batch_size, classes)).astype(np.float32)
  logits_v = rng.normal(0, 1, (batch_size, classes)).astype(np.float32)
  labels = rng.integers(classes, size=batch_size).astype(np.int32)
  method = METHODS.get(name)(_config(name))
  g1, m1 = _sharded_transform(method, param_grads, logits_a, logits_v, labels, 1)
  g8, m8 = _sharded_transform(method, param_grads, logits_a, logits_v, labels, 8)
  expected = ogm_coefficients({"audio": jnp.asarray(logits_a), "visual": jnp.asarray(logits_v)},
                              jnp.asarray(labels), ALPHA)
  for key in ("ogm_coeff_audio", "ogm_coeff_visual", "ogm_ratio_visual"):
    np.testing.assert_allclose(m1[key], m8[key], rtol=1e-6)
  np.testing.assert_allclose(m1["ogm_ratio_visual"], expected["ratio_visual"], rtol=1e-6)
  np.testing.assert_allclose(m1["ogm_coeff_audio"], expected["audio"], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g8)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


# --- Validation. -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ogm", "ogm_ge"])
def test_validate_defaults_and_errors(name):
  validate(_config(name))  # No method keys: defaults apply.
  validate(_config(name, alpha=0.1, modulation_starts=3, modulation_ends=3))
  with pytest.raises(ConfigError, match="modulation_ends"):
    validate(_config(name, modulation_starts=5, modulation_ends=4))
  with pytest.raises(ConfigError, match="alpha"):
    validate(_config(name, alpha=-1.0))
  c = _config(name)
  c.model.name = "vavl"  # No convolutional per-modality encoder groups: refused before building.
  with pytest.raises(ConfigError, match=r"capabilities \['modality_encoders'\].*'av_resnet'"):
    validate(c)
