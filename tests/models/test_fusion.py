"""Fusion heads against hand-computed numpy values on tiny known weights (dim 2, 3 classes)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avjax.models.fusion import FUSIONS, ConcatFusion, FiLMFusion, FusionOutput, GatedFusion, SumFusion
from avjax.models.fusion import cosine_logits, dense

D, C = 2, 3
A = np.array([[1.0, -2.0], [0.5, 3.0]], np.float32)
V = np.array([[-1.0, 0.5], [2.0, 1.0]], np.float32)
FEATS = {"audio": jnp.asarray(A), "visual": jnp.asarray(V)}


def _weights(seed: int, n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  return (rng.integers(-3, 4, (n_in, n_out)).astype(np.float32) / 2,
          rng.integers(-3, 4, (n_out,)).astype(np.float32) / 2)


def _set(linear: nnx.Linear, seed: int) -> tuple[np.ndarray, np.ndarray]:
  w, b = _weights(seed, *linear.kernel.shape)
  linear.kernel[...] = jnp.asarray(w)
  linear.bias[...] = jnp.asarray(b)
  return w, b


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


def _cos(h, w, s):
  hn = h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)
  wn = w / np.maximum(np.linalg.norm(w, axis=0, keepdims=True), 1e-12)
  return s * hn @ wn


def _check(out: FusionOutput, logits, out_a, out_v, h_a, h_v):
  np.testing.assert_allclose(out.logits, logits, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out.modality_logits["audio"], out_a, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out.modality_logits["visual"], out_v, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out.head_inputs["audio"], h_a, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out.head_inputs["visual"], h_v, rtol=1e-5, atol=1e-5)


def test_registry_names():
  assert FUSIONS.names() == ["concat", "film", "gated", "shared_head", "sum"]
  assert FUSIONS.get("film") is FiLMFusion


def test_sum_full_bias_per_modality():
  f = SumFusion(D, C, rngs=nnx.Rngs(0))
  wx, bx = _set(f.fc_x, 1)
  wy, by = _set(f.fc_y, 2)
  out_a, out_v = A @ wx + bx, V @ wy + by
  _check(f(FEATS), out_a + out_v, out_a, out_v, A, V)


def test_concat_half_bias_rule():
  f = ConcatFusion(D, C, rngs=nnx.Rngs(0))
  w, b = _set(f.fc_out, 3)
  logits = np.concatenate([A, V], 1) @ w + b
  out_a, out_v = A @ w[:D] + b / 2, V @ w[D:] + b / 2
  out = f(FEATS)
  _check(out, logits, out_a, out_v, A, V)
  np.testing.assert_allclose(out_a + out_v, logits, rtol=1e-6)


def test_film_symmetric():
  f = FiLMFusion(D, C, form="mmcosine", rngs=nnx.Rngs(0))
  assert f.fc_x.kernel.shape == (D, 2 * D) and f.fc_out.kernel.shape == (2 * D, C)
  wx, bx = _set(f.fc_x, 4)
  wy, by = _set(f.fc_y, 5)
  w, b = _set(f.fc_out, 6)
  fx, fy = A @ wx + bx, V @ wy + by
  x_new = fy[:, :D] * A + fy[:, D:]
  y_new = fx[:, :D] * V + fx[:, D:]
  logits = np.concatenate([x_new, y_new], 1) @ w + b
  _check(f(FEATS), logits, x_new @ w[:D] + b / 2, y_new @ w[D:] + b / 2, x_new, y_new)


@pytest.mark.parametrize("condition", ["audio", "visual"])
def test_film_asymmetric(condition):
  f = FiLMFusion(D, C, form="ogm_ge", condition=condition, rngs=nnx.Rngs(0))
  assert f.fc.kernel.shape == (D, 2 * D) and f.fc_out.kernel.shape == (D, C)
  wf, bf = _set(f.fc, 7)
  w, b = _set(f.fc_out, 8)
  c, m = (A, V) if condition == "audio" else (V, A)
  film = c @ wf + bf
  gamma, beta = film[:, :D], film[:, D:]
  logits = (gamma * m + beta) @ w + b
  out_c, out_m = beta @ w + b / 2, m @ w + b / 2
  if condition == "audio":
    _check(f(FEATS), logits, out_c, out_m, beta, m)
  else:
    _check(f(FEATS), logits, out_m, out_c, m, beta)


def test_film_asymmetric_default_is_audio_conditioning_and_exact_at_identity():
  f = FiLMFusion(D, C, rngs=nnx.Rngs(0))
  assert f.condition == "audio"
  w, b = _set(f.fc_out, 9)
  # gamma == 1 for every input: the two uni-modal logits sum to the fused logits.
  wf = np.zeros((D, 2 * D), np.float32)
  wf[:, D:] = [[1.0, 0.5], [-1.0, 2.0]]
  bf = np.array([1, 1, 0.5, -0.5], np.float32)
  f.fc.kernel[...] = jnp.asarray(wf)
  f.fc.bias[...] = jnp.asarray(bf)
  out = f(FEATS)
  np.testing.assert_allclose(out.modality_logits["audio"] + out.modality_logits["visual"], out.logits,
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out.logits, (V + A @ wf[:, D:] + bf[D:]) @ w + b, rtol=1e-5)


def test_gated_symmetric():
  f = GatedFusion(D, C, form="mmcosine", rngs=nnx.Rngs(0))
  assert f.fc_x.kernel.shape == (D, D) and f.fc_out.kernel.shape == (2 * D, C)
  wx, bx = _set(f.fc_x, 10)
  wy, by = _set(f.fc_y, 11)
  w, b = _set(f.fc_out, 12)
  ox, oy = A @ wx + bx, V @ wy + by
  x_new, y_new = _sigmoid(oy) * ox, _sigmoid(ox) * oy
  logits = np.concatenate([x_new, y_new], 1) @ w + b
  _check(f(FEATS), logits, x_new @ w[:D] + b / 2, y_new @ w[D:] + b / 2, x_new, y_new)


@pytest.mark.parametrize("condition", ["audio", "visual"])
def test_gated_asymmetric(condition):
  f = GatedFusion(D, C, form="ogm_ge", condition=condition, rngs=nnx.Rngs(0))
  assert f.fc_out.kernel.shape == (D, C)
  wx, bx = _set(f.fc_x, 13)
  wy, by = _set(f.fc_y, 14)
  w, b = _set(f.fc_out, 15)
  ox, oy = A @ wx + bx, V @ wy + by
  if condition == "audio":
    gate, gated = _sigmoid(ox), oy
    h_a, h_v = gate, gated
  else:
    gate, gated = _sigmoid(oy), ox
    h_a, h_v = gated, gate
  logits = (gate * gated) @ w + b
  _check(f(FEATS), logits, h_a @ w + b / 2, h_v @ w + b / 2, h_a, h_v)


@pytest.mark.parametrize("scale", [10.0, 50.0])
def test_cosine_concat(scale):
  f = ConcatFusion(D, C, cosine_scale=scale, rngs=nnx.Rngs(0))
  w, _ = _set(f.fc_out, 16)
  w[:, 0] = [3.0, 4.0, 0.0, -1.0]  # a column with non-unit norm in each half
  f.fc_out.kernel[...] = jnp.asarray(w)
  out_a, out_v = _cos(A, w[:D], scale), _cos(V, w[D:], scale)
  # Hand value: audio sample 0 = (1, -2), class 0 audio weight = (3, 4): s * (3 - 8) / (sqrt(5) * 5).
  np.testing.assert_allclose(out_a[0, 0], scale * -5 / (np.sqrt(5) * 5), rtol=1e-6)
  _check(f(FEATS), out_a + out_v, out_a, out_v, A, V)  # no bias anywhere
  assert np.abs(f(FEATS).modality_logits["audio"]).max() <= scale + 1e-4


def test_cosine_sum_uses_each_modality_fc():
  f = SumFusion(D, C, cosine_scale=10.0, rngs=nnx.Rngs(0))
  wx, _ = _set(f.fc_x, 17)
  wy, _ = _set(f.fc_y, 18)
  out_a, out_v = _cos(A, wx, 10.0), _cos(V, wy, 10.0)
  _check(f(FEATS), out_a + out_v, out_a, out_v, A, V)


@pytest.mark.parametrize("cls", [FiLMFusion, GatedFusion])
def test_cosine_symmetric_film_gated(cls):
  f = cls(D, C, form="mmcosine", cosine_scale=15.0, rngs=nnx.Rngs(0))
  plain = cls(D, C, form="mmcosine", rngs=nnx.Rngs(0))
  _set(f.fc_out, 19)
  _set(plain.fc_out, 19)
  h = plain(FEATS).head_inputs
  w = np.asarray(f.fc_out.kernel[...])
  out_a, out_v = _cos(np.asarray(h["audio"]), w[:D], 15.0), _cos(np.asarray(h["visual"]), w[D:], 15.0)
  _check(f(FEATS), out_a + out_v, out_a, out_v, h["audio"], h["visual"])


def test_cosine_zero_vector_is_finite():
  out = cosine_logits(jnp.zeros((1, D)), jnp.ones((D, C)), 10.0)
  np.testing.assert_array_equal(out, 0)


@pytest.mark.parametrize("cls", [FiLMFusion, GatedFusion])
def test_cosine_rejected_for_asymmetric_forms(cls):
  with pytest.raises(ValueError, match="form='mmcosine'"):
    cls(D, C, form="ogm_ge", cosine_scale=10.0, rngs=nnx.Rngs(0))


def test_bad_arguments():
  with pytest.raises(ValueError, match="form"):
    FiLMFusion(D, C, form="late", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="condition"):
    GatedFusion(D, C, condition="text", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="condition"):
    GatedFusion(D, C, form="mmcosine", condition="audio", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="cosine_scale"):
    ConcatFusion(D, C, cosine_scale=0.0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"\(B, 2\)"):
    ConcatFusion(D, C, rngs=nnx.Rngs(0))({"audio": jnp.ones((1, 3)), "visual": jnp.ones((1, 3))})


def test_linear_inits():
  n = 512
  xavier = dense(n, n, init="ogm_ge", rngs=nnx.Rngs(0))
  k = np.asarray(xavier.kernel[...])
  assert abs(k.std() / np.sqrt(2.0 / (n + n)) - 1) < 0.02
  assert np.abs(k).max() > 4 * k.std()  # normal, not truncated
  np.testing.assert_array_equal(xavier.bias[...], 0)

  torch_default = dense(n, 64, init="mmcosine", rngs=nnx.Rngs(0))
  bound = 1 / np.sqrt(n)
  for x in (np.asarray(torch_default.kernel[...]), np.asarray(torch_default.bias[...])):
    assert np.abs(x).max() <= bound
    assert np.abs(x).max() > 0.9 * bound
  k = np.asarray(torch_default.kernel[...])
  assert abs(k.std() / (bound / np.sqrt(3)) - 1) < 0.02


def test_jit_roundtrip():
  f = FUSIONS.get("gated")(D, C, form="mmcosine", cosine_scale=10.0, rngs=nnx.Rngs(0))
  out = nnx.jit(lambda m, x: m(x))(f, FEATS)
  assert isinstance(out, FusionOutput) and out.logits.shape == (2, C)
  np.testing.assert_allclose(out.logits, f(FEATS).logits, rtol=1e-5)
  grads = nnx.grad(lambda m: m(FEATS).logits.sum())(f)
  # The cosine head never reads fc_out's bias.
  np.testing.assert_array_equal(grads["fc_out"]["bias"][...], 0)
  assert jax.tree.leaves(grads)
