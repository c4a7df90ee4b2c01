"""MMCosine: cosine logits, the NCE term against explicit numpy loops, loss assembly, validation."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from avjax.config import base_config, validate
from avjax.methods import METHODS, StepContext
from avjax.methods.mmcosine import nce_loss, pair_cosines
from avjax.models import build_model
from avjax.models.fusion import FUSIONS
from avjax.models.outputs import ModelOutput
from avjax.registry import ConfigError


def _config(fusion: str = "concat", **method) -> ml_collections.ConfigDict:
  c = base_config()
  c.method.name = "mmcosine"
  c.model.fusion = fusion
  for k, v in method.items():
    c.method[k] = v
  return c


def _unit(x: np.ndarray) -> np.ndarray:
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


# --- Cosine logits. ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fusion,kwargs", [("concat", {}), ("film", {"form": "mmcosine"}),
                                           ("gated", {"form": "mmcosine"}), ("sum", {})])
def test_cosine_logits_match_numpy(fusion, kwargs):
  scale = 10.0
  method = METHODS.get("mmcosine")(_config(fusion, scaling=scale))
  dim, classes = 6, 4
  head = FUSIONS.get(fusion)(dim, classes, rngs=nnx.Rngs(0), **kwargs, **method.model_overrides())
  rng = np.random.default_rng(0)
  feats = {m: jnp.asarray(rng.normal(size=(5, dim)), jnp.float32) for m in ("audio", "visual")}
  out = head(feats)
  if fusion == "sum":
    kernels = {"audio": np.asarray(head.fc_x.kernel[...]), "visual": np.asarray(head.fc_y.kernel[...])}
  else:
    kernel = np.asarray(head.fc_out.kernel[...])
    d = kernel.shape[0] // 2
    kernels = {"audio": kernel[:d], "visual": kernel[d:]}
  expected = {}
  for m in ("audio", "visual"):
    h = np.asarray(out.head_inputs[m], np.float64)
    w = kernels[m].astype(np.float64)
    cos = np.array([[h[i] @ w[:, c] / (np.linalg.norm(h[i]) * np.linalg.norm(w[:, c]))
                     for c in range(classes)] for i in range(h.shape[0])])
    expected[m] = scale * cos
    np.testing.assert_allclose(out.modality_logits[m], expected[m], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(out.logits, expected["audio"] + expected["visual"], rtol=1e-4,
                             atol=1e-5)
  assert np.all(np.abs(np.asarray(out.logits)) <= 2 * scale + 1e-4)


def test_model_gets_cosine_head_from_overrides():
  c = _config(scaling=7.0)
  c.model.av_resnet.widths = (4, 8, 8, 8)
  method = METHODS.get("mmcosine")(c)
  assert method.model_overrides() == {"cosine_scale": 7.0}
  model = build_model(c, 3, method.model_overrides())
  assert model.fusion.cosine_scale == 7.0
  assert METHODS.get("mmcosine")(_config()).scaling == 10.0  # Default when the key is absent.


# --- NCE. --------------------------------------------------------------------------------------------


def _nce_numpy(a: np.ndarray, v: np.ndarray, y: np.ndarray, tau: float) -> float:
  """Explicit loops over anchors and pairs (the module docstring's formula)."""
  a, v = _unit(a.astype(np.float64)), _unit(v.astype(np.float64))
  n = len(y)
  total = 0.0
  for i in range(n):
    cos = np.array([1 - 0.5 * np.sum((a[i] - v[j]) ** 2) for j in range(n)])
    e = np.exp(cos / tau)
    p = e / e.sum()
    pos = [j for j in range(n) if y[j] == y[i]]
    neg = [j for j in range(n) if y[j] != y[i]]
    term = sum(-math.log(p[j]) for j in pos) / len(pos)
    if neg:
      term += sum(-math.log(1 - p[j]) for j in neg) / len(neg)
    total += term
  return total / n


@pytest.mark.parametrize("labels", [[0, 1, 0, 2, 1, 0], [3, 3, 1, 2, 0, 1], [2, 2, 2, 2, 2, 2]])
def test_nce_matches_hand_computation(labels):
  rng = np.random.default_rng(len(set(labels)))
  a = rng.normal(size=(6, 5)).astype(np.float32)
  v = (a + 0.7 * rng.normal(size=(6, 5))).astype(np.float32)
  y = np.asarray(labels, np.int32)
  got = float(nce_loss(jnp.asarray(a), jnp.asarray(v), jnp.asarray(y), 0.1))
  assert got == pytest.approx(_nce_numpy(a, v, y, 0.1), rel=1e-4)
  assert math.isfinite(got)


@pytest.mark.parametrize("tau", [1.0, 0.1])
def test_nce_two_pairs_by_hand(tau):
  """B = 2, different labels, orthogonal unit features: every cos is 0 or 1 -> closed form."""
  a = jnp.asarray([[1.0, 0.0], [0.0, 2.0]])  # Normalised to e1, e2.
  v = jnp.asarray([[3.0, 0.0], [0.0, 0.5]])
  cos = np.asarray(pair_cosines(a, v))
  np.testing.assert_allclose(cos, [[1.0, 0.0], [0.0, 1.0]], atol=1e-6)
  p_pos = 1 / (1 + math.exp(-1 / tau))  # softmax([1/tau, 0])[0]
  # Anchor i: positive j = i gives -log p_pos; negative j != i gives -log(1 - (1 - p_pos)).
  expected = -2 * math.log(p_pos)
  got = float(nce_loss(a, v, jnp.asarray([0, 1]), tau))
  assert got == pytest.approx(expected, rel=1e-5, abs=2e-6)


def test_loss_is_ce_plus_weighted_nce_on_head_inputs():
  rng = np.random.default_rng(2)
  logits = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
  labels = jnp.asarray([0, 1, 2, 0, 1, 2])
  h_a = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
  h_v = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
  output = ModelOutput(logits=logits, modality_logits={"audio": logits, "visual": logits},
                       features={"audio": h_a * 0, "visual": h_v * 0},
                       head_inputs={"audio": h_a, "visual": h_v})
  ctx = StepContext(step=jnp.int32(0), epoch=jnp.int32(0), rng=jax.random.key(0))
  logp = jax.nn.log_softmax(logits)
  ce = -float(jnp.mean(logp[jnp.arange(6), labels]))
  nce = _nce_numpy(np.asarray(h_a), np.asarray(h_v), np.asarray(labels), 0.2)
  method = METHODS.get("mmcosine")(_config(nce_weight=0.5, nce_temperature=0.2))
  loss, metrics = method.loss(output, {"label": labels}, {}, ctx)
  assert float(loss) == pytest.approx(ce + 0.5 * nce, rel=1e-4)
  assert float(metrics["loss_ce"]) == pytest.approx(ce, rel=1e-5)
  assert float(metrics["loss_nce"]) == pytest.approx(nce, rel=1e-4)
  plain = METHODS.get("mmcosine")(_config())  # lambda 0 (the reference default): CE only.
  loss0, metrics0 = plain.loss(output, {"label": labels}, {}, ctx)
  assert float(loss0) == pytest.approx(ce, rel=1e-5)
  assert "loss_nce" in metrics0
  grad = jax.grad(lambda h: plain.loss(output.replace(head_inputs={"audio": h, "visual": h_v}),
                                       {"label": labels}, {}, ctx)[0])(h_a)
  np.testing.assert_array_equal(grad, 0.0)  # With lambda 0 nothing flows through the NCE term.


# --- Validation. -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fusion", ["film", "gated"])
def test_validate_needs_symmetric_form(fusion):
  c = _config(fusion)
  with pytest.raises(ConfigError, match="fusion_kwargs.form='mmcosine'"):
    validate(c)
  c.model.fusion_kwargs.form = "ogm_ge"
  with pytest.raises(ConfigError, match="form='mmcosine'"):
    validate(c)
  c.model.fusion_kwargs.form = "mmcosine"
  validate(c)


def test_validate_other_errors():
  validate(_config("concat"))
  validate(_config("sum"))
  with pytest.raises(ConfigError, match="scaling"):
    validate(_config(scaling=0.0))
  with pytest.raises(ConfigError, match="nce_weight"):
    validate(_config(nce_weight=-1.0))
  c = _config()
  c.model.fusion_kwargs.cosine_scale = 5.0
  with pytest.raises(ConfigError, match="method.scaling"):
    validate(c)
