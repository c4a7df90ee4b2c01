"""What every case's avjax side shares: the trainer's own jitted step on a fixed device batch."""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import numpy as np


def torch_autocast(opts: dict, device: str) -> Any:
  """torch.autocast to bfloat16 when the case's compute_dtype is 'bfloat16' (avjax's mixed
  precision: float32 weights, bfloat16 products), else a no-op context."""
  if opts.get("compute_dtype", "float32") != "bfloat16":
    return contextlib.nullcontext()
  import torch
  return torch.autocast(device, dtype=torch.bfloat16)


def torch_layout(opts: dict, device: str) -> Any:
  """The PyTorch side's memory format for a convolutional case: channels_last (oneDNN's fast
  layout) when `opts["channels_last"]`, except on one CPU thread of an AVX2-only CPU.

  There PyTorch 2.13 (oneDNN 3.12) corrupts its heap in the input gradient of a channels_last 1x1
  stride-2 convolution (the ResNet downsample shortcut): `double free or corruption` or a
  segfault, seen 2026-11-23; contiguous NCHW runs. Such runs use NCHW and say so.
  """
  import torch
  if not opts["channels_last"]:
    return torch.contiguous_format
  if (device == "cpu" and torch.get_num_threads() == 1 and
      torch.backends.cpu.get_cpu_capability() == "AVX2"):
    print("  PyTorch side in NCHW: channels_last on one AVX2 thread crashes PyTorch 2.13's oneDNN "
          "(see scripts/vs_torch/common.py); use 2+ threads to compare channels_last.", flush=True)
    return torch.contiguous_format
  return torch.channels_last


def avjax_train_step(config: Any, num_classes: int, data: dict[str, np.ndarray],
                     steps_per_epoch: int = 100) -> Callable[[], Any]:
  """The trainer's jitted step (`steps.setup` + `make_train_step`, donated state) on `data`.

  `data` holds the model inputs and targets (numpy, global batch first); a modality mask of ones
  is added when absent. Returns a zero-argument callable that runs one step and returns the loss.
  """
  import jax
  import jax.numpy as jnp

  from avjax.steps import make_train_step, setup

  batch = len(next(iter(data.values())))
  data = dict(data)
  data.setdefault("modality_mask", np.ones((batch, 2), np.float32))
  exp = setup(config, num_classes, steps_per_epoch=steps_per_epoch)
  data = jax.device_put(data)
  step_fn = jax.jit(make_train_step(exp.graphs, exp.tx, exp.method, steps_per_epoch),
                    donate_argnums=0)
  holder = {"state": jax.device_put(exp.state)}
  epoch = jnp.int32(0)

  def step():
    holder["state"], metrics = step_fn(holder["state"], data, epoch)
    return metrics["loss"]

  return step
