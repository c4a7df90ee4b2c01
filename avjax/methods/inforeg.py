"""`inforeg`: Adaptive Unimodal Regulation, InfoReg (Huang, Wei, Yang, Hu, CVPR 2025).

While the "prime learning window" is open, the modality that scores better on the batch is slowed
by a proximal term pulling its encoder back toward its parameters at the start of the epoch
(GeWu-Lab/InfoReg_CVPR2025 main.py @ ea7b9d5 / 939b2ed, train_epoch):

  loss    = CE(z) + CE(z_a) + CE(z_v)        z_m: the model's uni-modal logits (differentiable;
                                             for concat fusion the head slices with b/2)
  s_m     = sum_i softmax(z_m)_i[y_i]        (batch SUMS over the global batch)
  s_a > s_v and k_e > threshold:  beta_a = 0.95 exp(tanh(s_a - s_v)), beta_v = 0
  s_a < s_v and k_e > threshold:  beta_v = 0.1 exp(tanh(s_v - s_a)),  beta_a = 0
  otherwise both 0
  g_m    += beta_m (theta_m - theta_m^e)     every parameter of 'encoder/<m>' (conv, BN affine);
                                             theta^e: the encoder at the start of epoch e

Prime-window indicator at the start of epoch e (k_0 = 1): with T the audio traces of the finished
epochs after ten zeros, k_e = (sum T[-10:] - sum T[-11:-1]) / sum T[-10:] (the relative change of
a zero-padded 10-epoch moving average). An epoch's trace of modality m is
sum over the encoder's conv / linear kernels W of mean(sum over the epoch's steps of g_W * g_W),
g the gradient after the proximal term (before weight decay, which SGD adds). By linearity avjax
accumulates the per-step sum over kernels of mean(g_W^2), a scalar per modality, instead of
kernel-sized accumulators.

`variant='first_upload'` (main.py @ 41d887f): its second branch tests s_v < s_a again, so the
visual encoder is never regulated (it also used threshold 0.04, 80 epochs, StepLR(40)).

Config keys (config.method.*): threshold (0.05), strength_audio (0.95), strength_visual (0.1),
window (10), window_modality ('audio'), variant ('head' | 'first_upload').

Logged metrics: loss_audio / loss_visual (uni-modal CE), inforeg_score_<m> (s_m),
inforeg_beta_<m>, inforeg_k (k_e), inforeg_window (1 while open), inforeg_trace_<m> (the last
finished epoch's trace).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from avjax.methods import base
from avjax.methods.base import (METHODS, EpochContext, EpochUpdate, Method, Metrics, StepContext,
                                apply_gradients, cross_entropy)
from avjax.models.contract import replace, select
from avjax.models.outputs import MODALITIES, ModelOutput
from avjax.registry import ConfigError
from avjax.state import ModelFns, TrainState

VARIANTS = ("head", "first_upload")


@dataclasses.dataclass(frozen=True)
class InfoRegSettings(base.Settings):
  """threshold: the window is open while k_e > threshold (main.py:465,473: 0.05; 0.04 @ 41d887f).
  strength_audio / strength_visual: beta's factor when that modality leads (main.py: 0.95 / 0.1).
  window: epochs of the trace moving average (main.py: 10, with ten leading zeros).
  window_modality: whose trace decides the window for both (main.py: audio).
  variant: 'head' (the repository's latest main.py) or 'first_upload' (41d887f: the visual
  encoder is never regulated)."""

  threshold: float = 0.05
  strength_audio: float = 0.95
  strength_visual: float = 0.1
  window: int = 10
  window_modality: str = "audio"
  variant: str = "head"

  def __post_init__(self):
    super().__post_init__()
    if self.variant not in VARIANTS:
      raise ConfigError(f"config.method.variant={self.variant!r} is not one of {VARIANTS}.")
    if self.window_modality not in MODALITIES:
      raise ConfigError(f"config.method.window_modality={self.window_modality!r} is not one of "
                        f"{MODALITIES}.")
    if self.window < 1:
      raise ConfigError(f"config.method.window={self.window!r} must be >= 1 (main.py: 10).")
    if not (self.strength_audio >= 0 and self.strength_visual >= 0):
      raise ConfigError("config.method.strength_audio / strength_visual must be >= 0 (main.py: "
                        "0.95 / 0.1).")


def window_indicator(history: np.ndarray, epoch: int, window: int = 10) -> float:
  """k_e from the last window + 1 traces (oldest first; zeros before the first epoch): 1 at
  epoch 0; (sum of the last `window` - sum of the `window` before the last) / sum of the last.
  An all-zero window gives 0 (the original divides by zero)."""
  if epoch == 0:
    return 1.0
  history = np.asarray(history, np.float64)
  recent, previous = float(np.sum(history[-window:])), float(np.sum(history[-window - 1:-1]))
  return (recent - previous) / recent if recent != 0 else 0.0


def push(history: np.ndarray, value: float) -> np.ndarray:
  """The history buffer with `value` appended and its oldest entry dropped."""
  return np.concatenate([np.asarray(history)[1:], np.asarray([value], history.dtype)])


def coefficients(s: dict[str, jax.Array], window_open: jax.Array, strength_audio: float,
                 strength_visual: float, regulate_visual: bool = True) -> dict[str, jax.Array]:
  """beta_a, beta_v (scalars) from the batch scores and whether the window is open."""
  audio_leads = window_open & (s["audio"] > s["visual"])
  visual_leads = window_open & (s["audio"] < s["visual"]) & regulate_visual
  zero = jnp.zeros((), jnp.float32)
  return {
      "audio": jnp.where(audio_leads, strength_audio * jnp.exp(jnp.tanh(s["audio"] - s["visual"])),
                         zero),
      "visual": jnp.where(visual_leads,
                          strength_visual * jnp.exp(jnp.tanh(s["visual"] - s["audio"])), zero),
  }


def proximal(grads: Any, params: Any, anchor: Any, beta: jax.Array) -> Any:
  """g + beta (theta - theta_e), leaf by leaf: the gradient of (beta/2) ||theta - theta_e||^2."""
  return jax.tree.map(lambda g, p, a: g + beta.astype(g.dtype) * (p - a), grads, params, anchor)


def fisher_trace_step(grads: Any) -> jax.Array:
  """sum over conv / linear kernels (leaves with ndim >= 2) of mean(g^2): one step's share of an
  epoch's trace."""
  terms = [jnp.mean(jnp.square(g.astype(jnp.float32))) for g in jax.tree.leaves(grads)
           if g.ndim >= 2]
  return sum(terms, jnp.zeros((), jnp.float32))


class InfoReg(Method):
  """CE on fused and uni-modal logits; the leading encoder pulled toward its epoch-start weights
  while the prime learning window is open (see module)."""

  Settings = InfoRegSettings
  requires = frozenset({"modality_logits", "modality_encoders"})
  diagnostics = ("inforeg_k", "inforeg_window") + tuple(
      f"inforeg_{k}_{m}" for k in ("beta", "score", "trace") for m in MODALITIES)

  def _paths(self, modality: str) -> tuple[str, ...]:
    return self.model.paths(f"encoder/{modality}")

  def _encoders(self, params: nnx.State) -> dict[str, Any]:
    """{m: {path: subtree}}: own copies of the encoders (the state is donated to the step)."""
    return {m: jax.tree.map(jnp.copy, select(params, self._paths(m))) for m in MODALITIES}

  def init_state(self, params: nnx.State) -> dict[str, Any]:
    zeros = lambda: {m: jnp.zeros((), jnp.float32) for m in MODALITIES}
    return {"anchor": self._encoders(params), "fisher": zeros(), "trace": zeros(),
            "history": {m: jnp.zeros((self.settings.window + 1,), jnp.float32)
                        for m in MODALITIES},
            "k": jnp.ones((), jnp.float32), "window_open": jnp.ones((), jnp.bool_)}

  def on_epoch_start(self, ctx: EpochContext) -> EpochUpdate:
    ms = ctx.state.method_state
    state = jax.device_get({k: ms[k] for k in ("fisher", "trace", "history")})  # Not the anchor.
    s = self.settings
    history, trace = state["history"], state["trace"]
    if ctx.epoch > 0:  # The finished epoch's accumulated traces join the history.
      trace = {m: state["fisher"][m] for m in MODALITIES}
      history = {m: push(history[m], trace[m]) for m in MODALITIES}
    k = window_indicator(history[s.window_modality], ctx.epoch, s.window)
    method_state = {
        "anchor": self._encoders(ctx.state.params),
        "fisher": {m: jnp.zeros((), jnp.float32) for m in MODALITIES},
        "trace": {m: jnp.asarray(trace[m], jnp.float32) for m in MODALITIES},
        "history": {m: jnp.asarray(history[m], jnp.float32) for m in MODALITIES},
        "k": jnp.asarray(k, jnp.float32), "window_open": jnp.asarray(k > s.threshold)}
    return EpochUpdate(plan=super().on_epoch_start(ctx).plan, method_state=method_state)

  def loss(self, output: ModelOutput, batch: dict[str, jax.Array], state: Any,
           ctx: StepContext) -> tuple[jax.Array, Metrics]:
    fused, metrics = self.task.loss(output.logits, batch)
    uni = {m: cross_entropy(output.modality_logits[m], batch["label"]) for m in MODALITIES}
    loss = fused + sum(uni.values())
    return loss, {**metrics, "loss": loss, "loss_fused": fused,
                  **{f"loss_{m}": v for m, v in uni.items()}}

  def update(self, model: ModelFns, tx: optax.GradientTransformation, state: TrainState,
             batch: dict[str, jax.Array], ctx: StepContext
             ) -> tuple[TrainState, ModelOutput, Metrics]:
    ms = state.method_state

    def loss_fn(params):
      output, model_state = model.forward(params, state.model_state, batch)
      loss, metrics = self.loss(output, batch, ms, ctx)
      return loss, (output, metrics, model_state)

    (_, (output, metrics, model_state)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    s = base.true_class_scores(output.modality_logits, batch["label"])
    beta = coefficients(s, ms["window_open"], self.settings.strength_audio,
                        self.settings.strength_visual, self.settings.variant == "head")
    regulated, fisher = {}, {}
    for m in MODALITIES:
      paths = self._paths(m)
      g = proximal(select(grads, paths), select(state.params, paths), ms["anchor"][m], beta[m])
      regulated.update(g)
      fisher[m] = ms["fisher"][m] + fisher_trace_step(g)
    grads = replace(grads, regulated)
    new_ms = {**ms, "fisher": fisher}
    new_state = apply_gradients(tx, state, grads, learning_rate=ctx.learning_rate,
                                model_state=model_state, method_state=new_ms)
    metrics = {**metrics, "inforeg_k": ms["k"],
               "inforeg_window": ms["window_open"].astype(jnp.float32),
               **{f"inforeg_beta_{m}": beta[m] for m in MODALITIES},
               **{f"inforeg_score_{m}": s[m] for m in MODALITIES},
               **{f"inforeg_trace_{m}": ms["trace"][m] for m in MODALITIES}}
    return new_state, output, metrics


METHODS.register("inforeg")(InfoReg)
