"""Late-fusion heads of OGM-GE and MMCosine, with uni-modal logits defined for every fusion.

Every fusion maps pooled features {'audio': (B,D), 'visual': (B,D)} to a `FusionOutput`: fused logits,
one logit vector per modality, and the per-modality vectors that enter the final classifier
(`head_inputs`). In the reference code x is audio and y is visual; the layer names keep that convention.

Fusions (registered in `FUSIONS`):
  'sum':    fc_x(a) + fc_y(v). Modality logits fc_x(a), fc_y(v), each with its full bias.
  'concat': fc_out([a; v]). Modality logits a W_a + b/2, v W_v + b/2 (W_a, W_v: the two input halves).
  'film':   form 'mmcosine' (symmetric): x_new = g_y * a + b_y, y_new = g_x * v + b_x,
            fc_out([x_new; y_new]), logits split as for concat.
            form 'ogm_ge' (asymmetric): the `condition` modality c produces [gamma, beta] = fc(c) and
            fc_out(gamma * m + beta) scores the other modality m.
  'gated':  form 'mmcosine': x_new = sigmoid(o_y) * o_x, y_new = sigmoid(o_x) * o_y with o_x = fc_x(a),
            o_y = fc_y(v); fc_out([x_new; y_new]), logits split as for concat.
            form 'ogm_ge': fc_out(sigmoid(o_c) * o_m), c = `condition` (the gate), m = the other one.

Uni-modal logits of the asymmetric ('ogm_ge') FiLM / gated forms. The reference crashes here (its fc_out
has D inputs, not 2D). avjax scores each modality through the full fc_out on the part of fc_out's input
that the modality produces on its own, i.e. with the other modality replaced by the neutral element of
the operation through which it acts, and gives each half the bias (b/2, as for concat):
  film:  the conditioned modality m enters fc_out as m under identity modulation (gamma=1, beta=0):
         logits_m = W m + b/2; the conditioning modality c contributes its additive shift beta(c)
         (what reaches fc_out when m = 0): logits_c = W beta(c) + b/2. The two sum to the fused logits
         exactly whenever gamma(c) = 1.
  gated: the gated modality m enters fc_out as o_m under an open gate (gate = 1): logits_m = W o_m + b/2;
         the gate modality c contributes its gate sigmoid(o_c) (what reaches fc_out when o_m = 1):
         logits_c = W sigmoid(o_c) + b/2.
Each of these logit vectors depends on its own modality only. `head_inputs` holds the scored vectors.

Cosine head (MMCosine, `cosine_scale=s`): logits_m = s * <h_m / |h_m|, w^m_c / |w^m_c|> with w^m the
modality's own weights (its slice of fc_out, or its own fc for 'sum'), fused logits = sum over the
modalities, no bias. Only fusions with a per-modality weight slice support it: 'sum', 'concat' and the
'mmcosine' forms of 'film' / 'gated'.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from avjax.models.resnet import check_init
from avjax.registry import Registry

FUSIONS: Registry[type[nnx.Module]] = Registry("fusion")

FORMS = ("ogm_ge", "mmcosine")
CONDITIONS = ("audio", "visual")


@flax.struct.dataclass
class FusionOutput:
  """A fusion's outputs.

  Attributes:
    logits: (B, C) fused logits.
    modality_logits: {'audio', 'visual'} -> (B, C) uni-modal logits.
    head_inputs: {'audio', 'visual'} -> (B, D') the per-modality vectors scored by the final classifier
      (raw features for sum / concat, x_new / y_new for symmetric FiLM / gated; see module docstring).
  """

  logits: jax.Array
  modality_logits: dict[str, jax.Array]
  head_inputs: dict[str, jax.Array]


def dense(in_features: int, out_features: int, *, init: str, rngs: nnx.Rngs) -> nnx.Linear:
  """A Linear layer with the init scheme's weights.

  'ogm_ge': kernel xavier_normal, bias 0. 'mmcosine': PyTorch's default, kernel and bias both
  U(-1/sqrt(in_features), 1/sqrt(in_features)).
  """
  check_init(init)
  if init == "ogm_ge":
    kernel_init = nnx.initializers.variance_scaling(1.0, "fan_avg", "normal")
    bias_init = nnx.initializers.zeros
  else:
    bound = 1.0 / float(in_features) ** 0.5
    kernel_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

    def bias_init(key, shape, dtype=jnp.float32):
      return jax.random.uniform(key, shape, dtype, -bound, bound)

  return nnx.Linear(in_features, out_features, kernel_init=kernel_init, bias_init=bias_init, rngs=rngs)


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """x / max(|x|, eps) along `axis` (torch.nn.functional.normalize)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
  return x / jnp.maximum(norm, eps)


def cosine_logits(h: jax.Array, kernel: jax.Array, scale: float) -> jax.Array:
  """s * cos(h_i, w_c). h: (B,D), kernel: (D,C) (one class per column) -> (B,C)."""
  return scale * l2_normalize(h, axis=-1) @ l2_normalize(kernel, axis=0)


def _check_features(features: dict[str, jax.Array], dim: int) -> tuple[jax.Array, jax.Array]:
  a, v = features["audio"], features["visual"]
  if a.shape[-1] != dim or v.shape[-1] != dim:
    raise ValueError(f"Fusion expects (B, {dim}) features, got audio {a.shape}, visual {v.shape}.")
  return a, v


def _check_scale(cosine_scale: float | None) -> float | None:
  if cosine_scale is not None and not cosine_scale > 0:
    raise ValueError(f"cosine_scale must be positive or None, got {cosine_scale}.")
  return None if cosine_scale is None else float(cosine_scale)


def _check_form(kind: str, form: str, condition: str | None, cosine_scale: float | None) -> str | None:
  """Validates an asymmetric/symmetric form; returns the resolved condition (None if symmetric)."""
  if form not in FORMS:
    raise ValueError(f"{kind} form must be one of {FORMS}, got {form!r}.")
  if form == "mmcosine":
    if condition is not None:
      raise ValueError(f"The symmetric 'mmcosine' {kind} form has no `condition`; got {condition!r}.")
    return None
  condition = "audio" if condition is None else condition
  if condition not in CONDITIONS:
    raise ValueError(f"{kind} condition must be one of {CONDITIONS}, got {condition!r}.")
  if cosine_scale is not None:
    raise ValueError(
        f"The cosine head (cosine_scale) needs a per-modality slice of the final weight, which the "
        f"asymmetric 'ogm_ge' {kind} form does not have. Use form='mmcosine' (symmetric {kind}), "
        f"'concat' or 'sum' with cosine_scale.")
  return condition


def _other(modality: str) -> str:
  return "visual" if modality == "audio" else "audio"


def _split_head(
    fc_out: nnx.Linear, h_a: jax.Array, h_v: jax.Array, cosine_scale: float | None
) -> FusionOutput:
  """fc_out([h_a; h_v]) with uni-modal logits from the kernel's two input halves."""
  d = h_a.shape[-1]
  kernel = fc_out.kernel[...]
  k_a, k_v = kernel[:d], kernel[d:]
  if cosine_scale is not None:
    out_a = cosine_logits(h_a, k_a, cosine_scale)
    out_v = cosine_logits(h_v, k_v, cosine_scale)
    logits = out_a + out_v
  else:
    half_bias = fc_out.bias[...] / 2
    out_a = h_a @ k_a + half_bias
    out_v = h_v @ k_v + half_bias
    logits = fc_out(jnp.concatenate([h_a, h_v], axis=-1))
  return FusionOutput(
      logits=logits, modality_logits={"audio": out_a, "visual": out_v},
      head_inputs={"audio": h_a, "visual": h_v})


def _shared_head(fc_out: nnx.Linear, fused: jax.Array, parts: dict[str, jax.Array]) -> FusionOutput:
  """fc_out(fused); each modality's part scored with the full kernel and half the bias."""
  half_bias = fc_out.bias[...] / 2
  kernel = fc_out.kernel[...]
  modality_logits = {m: parts[m] @ kernel + half_bias for m in CONDITIONS}
  return FusionOutput(logits=fc_out(fused), modality_logits=modality_logits, head_inputs=dict(parts))


@FUSIONS.register("sum")
class SumFusion(nnx.Module):
  """OGM-GE sum fusion: fc_x(a) + fc_y(v). {(B,D), (B,D)} -> (B,C)."""

  def __init__(
      self, dim: int, num_classes: int, *, init: str = "ogm_ge", rngs: nnx.Rngs,
      cosine_scale: float | None = None,
  ):
    self.dim = dim
    self.cosine_scale = _check_scale(cosine_scale)
    self.fc_x = dense(dim, num_classes, init=init, rngs=rngs)
    self.fc_y = dense(dim, num_classes, init=init, rngs=rngs)

  def __call__(self, features: dict[str, jax.Array]) -> FusionOutput:
    a, v = _check_features(features, self.dim)
    if self.cosine_scale is not None:
      out_a = cosine_logits(a, self.fc_x.kernel[...], self.cosine_scale)
      out_v = cosine_logits(v, self.fc_y.kernel[...], self.cosine_scale)
    else:
      out_a, out_v = self.fc_x(a), self.fc_y(v)
    return FusionOutput(
        logits=out_a + out_v, modality_logits={"audio": out_a, "visual": out_v},
        head_inputs={"audio": a, "visual": v})


@FUSIONS.register("concat")
class ConcatFusion(nnx.Module):
  """Concatenation fusion: fc_out([a; v]), fc_out: 2D -> C. {(B,D), (B,D)} -> (B,C)."""

  def __init__(
      self, dim: int, num_classes: int, *, init: str = "ogm_ge", rngs: nnx.Rngs,
      cosine_scale: float | None = None,
  ):
    self.dim = dim
    self.cosine_scale = _check_scale(cosine_scale)
    self.fc_out = dense(2 * dim, num_classes, init=init, rngs=rngs)

  def __call__(self, features: dict[str, jax.Array]) -> FusionOutput:
    a, v = _check_features(features, self.dim)
    return _split_head(self.fc_out, a, v, self.cosine_scale)


@FUSIONS.register("film")
class FiLMFusion(nnx.Module):
  """FiLM fusion. {(B,D), (B,D)} -> (B,C).

  form='mmcosine': fc_x, fc_y: D -> 2D ([gamma; beta]), fc_out: 2D -> C; each modality modulates the
    other (x_new = g_y * a + b_y, y_new = g_x * v + b_x).
  form='ogm_ge': fc: D -> 2D applied to the `condition` modality (default 'audio', the reference's
    x_film=True), fc_out: D -> C applied to gamma * other + beta.
  """

  def __init__(
      self, dim: int, num_classes: int, *, init: str = "ogm_ge", rngs: nnx.Rngs,
      cosine_scale: float | None = None, form: str = "ogm_ge", condition: str | None = None,
  ):
    self.dim = dim
    self.cosine_scale = _check_scale(cosine_scale)
    self.condition = _check_form("film", form, condition, self.cosine_scale)
    self.form = form
    if form == "mmcosine":
      self.fc_x = dense(dim, 2 * dim, init=init, rngs=rngs)
      self.fc_y = dense(dim, 2 * dim, init=init, rngs=rngs)
      self.fc_out = dense(2 * dim, num_classes, init=init, rngs=rngs)
    else:
      self.fc = dense(dim, 2 * dim, init=init, rngs=rngs)
      self.fc_out = dense(dim, num_classes, init=init, rngs=rngs)

  def __call__(self, features: dict[str, jax.Array]) -> FusionOutput:
    a, v = _check_features(features, self.dim)
    d = self.dim
    if self.form == "mmcosine":
      film_x, film_y = self.fc_x(a), self.fc_y(v)
      x_new = film_y[:, :d] * a + film_y[:, d:]
      y_new = film_x[:, :d] * v + film_x[:, d:]
      return _split_head(self.fc_out, x_new, y_new, self.cosine_scale)
    c, m = self.condition, _other(self.condition)
    film = self.fc(features[c])
    gamma, beta = film[:, :d], film[:, d:]
    fused = gamma * features[m] + beta
    return _shared_head(self.fc_out, fused, {c: beta, m: features[m]})


@FUSIONS.register("gated")
class GatedFusion(nnx.Module):
  """Gated fusion, o_x = fc_x(a), o_y = fc_y(v) (D -> D). {(B,D), (B,D)} -> (B,C).

  form='mmcosine': fc_out([sigmoid(o_y) * o_x; sigmoid(o_x) * o_y]), fc_out: 2D -> C.
  form='ogm_ge': fc_out(sigmoid(o_c) * o_m), fc_out: D -> C, c = `condition` (default 'audio', the
    reference's x_gate=True), m the other modality.
  """

  def __init__(
      self, dim: int, num_classes: int, *, init: str = "ogm_ge", rngs: nnx.Rngs,
      cosine_scale: float | None = None, form: str = "ogm_ge", condition: str | None = None,
  ):
    self.dim = dim
    self.cosine_scale = _check_scale(cosine_scale)
    self.condition = _check_form("gated", form, condition, self.cosine_scale)
    self.form = form
    self.fc_x = dense(dim, dim, init=init, rngs=rngs)
    self.fc_y = dense(dim, dim, init=init, rngs=rngs)
    out_in = 2 * dim if form == "mmcosine" else dim
    self.fc_out = dense(out_in, num_classes, init=init, rngs=rngs)

  def __call__(self, features: dict[str, jax.Array]) -> FusionOutput:
    a, v = _check_features(features, self.dim)
    o = {"audio": self.fc_x(a), "visual": self.fc_y(v)}
    if self.form == "mmcosine":
      x_new = jax.nn.sigmoid(o["visual"]) * o["audio"]
      y_new = jax.nn.sigmoid(o["audio"]) * o["visual"]
      return _split_head(self.fc_out, x_new, y_new, self.cosine_scale)
    c, m = self.condition, _other(self.condition)
    gate = jax.nn.sigmoid(o[c])
    return _shared_head(self.fc_out, gate * o[m], {c: gate, m: o[m]})
