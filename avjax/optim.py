"""Optimizers and learning-rate schedules from `config.optimizer`.

Schedules are per step but expressed in epochs where the references step them per epoch (PyTorch
StepLR), so `steps_per_epoch` is needed to build them.
"""

from __future__ import annotations

import ml_collections
import optax

from avjax.registry import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine")


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
                   accumulate: int = 1) -> optax.GradientTransformation:
  """PyTorch-equivalent optimizers.

  `sgd` and `adam` add `weight_decay * param` to the gradient before the update, as torch.optim.SGD /
  Adam do (L2 decay, all parameters); `adamw` decouples it, as torch.optim.AdamW.
  `accumulate` > 1 averages the gradients of that many steps before each update (optax.MultiSteps;
  the effective batch is accumulate x batch_size and schedules count updates, not steps).
  """
  if accumulate > 1:
    inner = make_optimizer(cfg, max(steps_per_epoch // accumulate, 1), num_epochs)
    return optax.MultiSteps(inner, every_k_schedule=accumulate)
  schedule = make_schedule(cfg, steps_per_epoch, num_epochs)
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
