"""Optimizers and learning-rate schedules from `config.optimizer`.

Schedules are per update but expressed in epochs where the references step them per epoch (PyTorch
StepLR), so `steps_per_epoch` is needed to build them. The trainer evaluates a run's schedule at the
position of each step in FRACTIONAL epochs (`schedule_step`): epochs whose length changes
(re-sampling) keep the schedule's epoch boundaries; it scales the updates of an optimizer built at
unit rate (`unit_rate=True`, `unit_schedule`) by that learning rate.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from avjax.registry import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine")


def unit_schedule(count: Any) -> float:
  """The schedule of an optimizer whose updates the caller scales by the learning rate (a
  callable, so the optimizer keeps its step count in its state, as with a real schedule)."""
  del count
  return 1.0


def schedule_step(epoch: jax.Array, step_in_epoch: jax.Array, epoch_steps: jax.Array,
                  steps_per_epoch: int) -> jax.Array:
  """The schedule's step count at `step_in_epoch` of `epoch` (int32, traced): epoch * S +
  floor(step_in_epoch * S / epoch_steps), S the plain epoch's steps. Equal to the global step
  when every epoch has S steps; a longer or shorter (re-sampled) epoch spans the same S."""
  s = jnp.int32(steps_per_epoch)
  return epoch * s + (step_in_epoch * s) // jnp.maximum(epoch_steps, 1)


def make_schedule(cfg: ml_collections.ConfigDict, steps_per_epoch: int,
                  num_epochs: int) -> optax.Schedule:
  """`constant`; `step` (x gamma every `step_epochs`, as torch StepLR); `cosine` (optional warmup)."""
  lr = cfg.learning_rate
  if cfg.schedule == "constant":
    return optax.constant_schedule(lr)
  if cfg.schedule == "step":  # Independent of num_epochs, so a longer re-run continues exactly.
    period, gamma = cfg.step_epochs * steps_per_epoch, cfg.gamma
    return lambda step: lr * gamma ** (step // period)
  if cfg.schedule == "cosine":
    total = max(num_epochs * steps_per_epoch, 1)
    warmup = cfg.warmup_epochs * steps_per_epoch
    if warmup:
      return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, total)
    return optax.cosine_decay_schedule(lr, total)
  raise ConfigError(f"Unknown optimizer.schedule {cfg.schedule!r}; use one of {SCHEDULES}.")


def make_optimizer(cfg: ml_collections.ConfigDict, steps_per_epoch: int, num_epochs: int,
                   accumulate: int = 1, *, unit_rate: bool = False
                   ) -> optax.GradientTransformation:
  """PyTorch-equivalent optimizers.

  `sgd` and `adam` add `weight_decay * param` to the gradient before the update, as torch.optim.SGD /
  Adam do (L2 decay, all parameters); `adamw` decouples it, as torch.optim.AdamW.
  `accumulate` > 1 averages the gradients of that many steps before each update (optax.MultiSteps;
  the effective batch is accumulate x batch_size and schedules count updates, not steps).
  `unit_rate`: learning rate 1, for a caller that scales the updates by the schedule's rate (the
  same optimizer state; every optimizer applies its rate last, so the result is the same).
  """
  if accumulate > 1:
    inner = make_optimizer(cfg, max(steps_per_epoch // accumulate, 1), num_epochs,
                           unit_rate=unit_rate)
    return optax.MultiSteps(inner, every_k_schedule=accumulate)
  schedule = unit_schedule if unit_rate else make_schedule(cfg, steps_per_epoch, num_epochs)
  if cfg.name == "sgd":
    opt = optax.sgd(schedule, momentum=cfg.momentum or None, nesterov=cfg.nesterov)
  elif cfg.name == "adam":
    opt = optax.adam(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
  elif cfg.name == "adamw":
    return _with_clipping(cfg, optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                                           weight_decay=cfg.weight_decay))
  else:
    raise ConfigError(f"Unknown optimizer.name {cfg.name!r}; use one of {OPTIMIZERS}.")
  if cfg.weight_decay:
    opt = optax.chain(optax.add_decayed_weights(cfg.weight_decay), opt)
  return _with_clipping(cfg, opt)


def _with_clipping(cfg: ml_collections.ConfigDict,
                   opt: optax.GradientTransformation) -> optax.GradientTransformation:
  if cfg.grad_clip_norm:
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), opt)
  return opt
