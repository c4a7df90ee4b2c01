"""`mmpareto`: MMPareto, Wei & Hu, ICML 2024 (GeWu-Lab/MMPareto_ICML2024, code/MMPareto.py).

Losses: L_mm = task(fused logits), L_m = task(logits_m) for each modality m, with the uni-modal
logits from each modality's OWN linear head (the model override modality_heads='separate', the
original's head_audio / head_video). The heads and the fusion train on the plain summed loss.
Inside each encoder e the multimodal gradient g_mm and the modality's own uni-modal gradient g_u
(separate backward passes; g_u is the gradient of L_e) are combined (code/MMPareto.py:117-207):

  cos_e = <g_mm, g_u> / (|g_mm| |g_u|)                 (the encoder's flattened parameters)
  cos_e > 0:  (k_mm, k_u) = (0.5, 0.5)
  else:       (k_mm, k_u) = (c, 1 - c), c the two-task min-norm (MGDA) weight of g_mm:
              c = 0.999 if <g_mm,g_u> >= |g_mm|^2; 0.001 if <g_mm,g_u> >= |g_u|^2;
              else (|g_u|^2 - <g_mm,g_u>) / |g_mm - g_u|^2      (min_norm_solvers.py:9-30)
  per encoder tensor theta (conv kernel, BN scale, ... separately):
    new = 2 (k_mm g_mm + k_u g_u),  g_sum = gradient of the summed loss,
    grad = gamma * max(1, |g_sum| / |new|) * new        (gamma = 1.5, hard-coded there)

Weight decay and momentum act afterwards, in the optimizer (torch.optim.SGD adds the decay inside
its step, so it is not scaled by gamma). The original trains with SGD at a constant rate (its
StepLR is created but never stepped): configs/mmpareto_cremad.py.

variant='balancebenchmark' (BalanceBenchmark's MMPareto_trainer.py): the uni-modal logits are
slices of the fusion head (model default), and because BB clones the per-loss gradients only after
accumulating all three backward passes, g_mm = g_u = g_sum: the cosine is 1, the weights (0.5,
0.5) and every encoder gradient becomes gamma * 2 * g_sum (x3); the fusion head is unscaled.

Config keys (config.method.*): gamma (1.5), variant ('original' | 'balancebenchmark').
Logged: loss (L_mm + sum_m L_m), loss_mm, loss_audio, loss_visual; per encoder
mmpareto_cos_<m>, mmpareto_weight_mm_<m> (k_mm) and mmpareto_scale_<m> (the mean over the
encoder's tensors of gamma * max(1, |g_sum| / |new|)).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from avjax.methods import base
from avjax.methods.base import METHODS, Method, Metrics, StepContext, apply_gradients
from avjax.models.contract import replace, select
from avjax.models.outputs import MODALITIES, ModelOutput
from avjax.registry import ConfigError
from avjax.state import ModelFns, TrainState

VARIANTS = ("original", "balancebenchmark")
SOLVER_CLAMP = (0.999, 0.001)  # min_norm_solvers.py: the weight of g1 at the two clamps.
COS_EPS = 1e-8  # torch.nn.functional.cosine_similarity's eps.


@dataclasses.dataclass(frozen=True)
class MMParetoSettings(base.Settings):
  """gamma: the magnitude factor (1.5: code/MMPareto.py:178, BB trainer_config alpha 1.5).
  variant: 'original' (the authors' code) or 'balancebenchmark' (BB's effective rule, see the
  module docstring)."""

  gamma: float = 1.5
  variant: str = "original"

  def __post_init__(self):
    super().__post_init__()
    if not self.gamma > 0:
      raise ConfigError(f"config.method.gamma={self.gamma!r} must be > 0 (the paper uses 1.5).")
    if self.variant not in VARIANTS:
      raise ConfigError(f"config.method.variant={self.variant!r} is not one of {VARIANTS}.")


def _dot(a: list[jax.Array], b: list[jax.Array]) -> jax.Array:
  """Sum over paired leaves of <a_i, b_i> in float32."""
  return sum(jnp.vdot(x.astype(jnp.float32), y.astype(jnp.float32)) for x, y in zip(a, b))


def min_norm_weight(g1g1: jax.Array, g1g2: jax.Array, g2g2: jax.Array) -> jax.Array:
  """The weight c of g1 in the min-norm point c g1 + (1 - c) g2 of two vectors, from their dot
  products, with the original solver's clamps (0.999 / 0.001)."""
  denom = g1g1 + g2g2 - 2.0 * g1g2
  inner = (g2g2 - g1g2) / jnp.where(denom > 0, denom, 1.0)
  return jnp.where(g1g2 >= g1g1, SOLVER_CLAMP[0], jnp.where(g1g2 >= g2g2, SOLVER_CLAMP[1], inner))


def pareto_weights(g_mm: list[jax.Array], g_u: list[jax.Array]
                   ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(cos, k_mm, k_u) of one encoder's multimodal and uni-modal gradients (lists of leaves):
  equal weights when they agree (cos > 0), the min-norm weights otherwise."""
  mm_mm, mm_u, u_u = _dot(g_mm, g_mm), _dot(g_mm, g_u), _dot(g_u, g_u)
  cos = mm_u / jnp.maximum(jnp.sqrt(mm_mm) * jnp.sqrt(u_u), COS_EPS)
  c = min_norm_weight(mm_mm, mm_u, u_u)
  k_mm = jnp.where(cos > 0, 0.5, c)
  return cos, k_mm, jnp.where(cos > 0, 0.5, 1.0 - c)


def rescale(g_mm: jax.Array, g_u: jax.Array, g_sum: jax.Array, k_mm: jax.Array, k_u: jax.Array,
            gamma: float) -> tuple[jax.Array, jax.Array]:
  """One tensor's final gradient gamma * max(1, |g_sum| / |new|) * new, new = 2 (k_mm g_mm +
  k_u g_u); also returns the applied factor. A zero `new` stays zero."""
  new = 2.0 * (k_mm * g_mm.astype(jnp.float32) + k_u * g_u.astype(jnp.float32))
  norm_new = jnp.sqrt(jnp.sum(jnp.square(new)))
  norm_sum = jnp.sqrt(jnp.sum(jnp.square(g_sum.astype(jnp.float32))))
  ratio = jnp.where(norm_new > 0, norm_sum / jnp.where(norm_new > 0, norm_new, 1.0), 1.0)
  factor = gamma * jnp.maximum(ratio, 1.0)
  return (factor * new).astype(g_sum.dtype), factor


def combine(g_mm: Any, g_u: Any, g_sum: Any, gamma: float) -> tuple[Any, Metrics]:
  """MMPareto's gradient of one encoder (pytrees of the same structure) and its diagnostics
  ('cos', 'weight_mm', 'scale')."""
  mm, u = jax.tree.leaves(g_mm), jax.tree.leaves(g_u)
  cos, k_mm, k_u = pareto_weights(mm, u)
  total, treedef = jax.tree.flatten(g_sum)
  out = [rescale(a, b, s, k_mm, k_u, gamma) for a, b, s in zip(mm, u, total)]
  scale = jnp.mean(jnp.stack([f for _, f in out]))
  return (jax.tree.unflatten(treedef, [g for g, _ in out]),
          {"cos": cos, "weight_mm": k_mm, "scale": scale})


@METHODS.register("mmpareto")
class MMPareto(Method):
  """Multimodal + uni-modal losses; per encoder, Pareto-combined and rescaled gradients."""

  Settings = MMParetoSettings
  requires = frozenset({"modality_logits", "modality_encoders", "modality_heads"})
  diagnostics = tuple(f"mmpareto_{k}_{m}" for k in ("cos", "weight_mm", "scale")
                      for m in MODALITIES)

  def model_overrides(self) -> dict[str, Any]:
    if self.settings.variant == "balancebenchmark":
      return {}  # BB scores each modality with its slice of the fusion head.
    return {"modality_heads": "separate"}

  def _losses(self, output: ModelOutput, batch: dict[str, jax.Array]) -> jax.Array:
    """(L_mm, L_audio, L_visual)."""
    terms = [self.task.loss(output.logits, batch)[0]]
    terms += [self.task.loss(output.modality_logits[m], batch)[0] for m in MODALITIES]
    return jnp.stack(terms)

  def update(self, model: ModelFns, tx: Any, state: TrainState, batch: dict[str, jax.Array],
             ctx: StepContext) -> tuple[TrainState, ModelOutput, Metrics]:
    def losses(params):
      output, model_state = model.forward(params, state.model_state, batch)
      return self._losses(output, batch), (output, model_state)

    gamma = float(self.settings.gamma)
    values, pull, (output, model_state) = jax.vjp(losses, state.params, has_aux=True)
    if self.settings.variant == "balancebenchmark":
      g_sum = pull(jnp.ones_like(values))[0]
      encoders = ctx.model.paths(*(f"encoder/{m}" for m in MODALITIES))
      scaled = jax.tree.map(lambda g: g * (2.0 * gamma), select(g_sum, encoders))
      grads = replace(g_sum, scaled)
      one = jnp.ones((), jnp.float32)
      diag = {f"mmpareto_{k}_{m}": v for m in MODALITIES
              for k, v in (("cos", one), ("weight_mm", 0.5 * one), ("scale", 2 * gamma * one))}
    else:
      # One backward pass per loss, as the original's (separate, zeroed between) passes.
      per_loss = [pull(row)[0] for row in jnp.eye(values.shape[0], dtype=values.dtype)]
      g_mm, own = per_loss[0], dict(zip(MODALITIES, per_loss[1:]))
      g_sum = jax.tree.map(lambda *g: sum(g), *per_loss)
      new, diag = {}, {}
      for m in MODALITIES:
        paths = ctx.model.paths(f"encoder/{m}")
        combined, stats = combine(select(g_mm, paths), select(own[m], paths),
                                  select(g_sum, paths), gamma)
        new.update(combined)
        diag.update({f"mmpareto_{k}_{m}": v for k, v in stats.items()})
      grads = replace(g_sum, new)
    new_state = apply_gradients(tx, state, grads, learning_rate=ctx.learning_rate,
                                model_state=model_state)
    metrics = {"loss": jnp.sum(values), "loss_mm": values[0],
               **{f"loss_{m}": values[i + 1] for i, m in enumerate(MODALITIES)}, **diag}
    return new_state, output, metrics


__all__ = ["MMPareto", "combine", "min_norm_weight", "pareto_weights", "rescale"]
