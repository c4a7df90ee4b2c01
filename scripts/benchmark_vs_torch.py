r"""Train-step throughput of avjax against a PyTorch restatement of the reference, in one run.

  python scripts/benchmark_vs_torch.py --case ogm_ge_cremad [--batch 64] [--frames 1] \
      [--steps 10] [--warmup 3] [--torch_compile auto|on|off] [--threads N] [--json out.json]

Both sides train the same model on the same input shapes with the same method and optimizer, on
random inputs already in memory (this measures the step, not the input pipeline; see
scripts/benchmark.py for that):

  * avjax: the trainer's own jitted step (`avjax.steps.setup` + `make_train_step`, donated state)
    on one device.
  * PyTorch: the restatement the parity tests check avjax against (tests/convert/torch_reference.py),
    trained the way the reference trains it, in its best CPU/GPU setup: channels_last memory format,
    and torch.compile where it helps (`auto` tries it and keeps it only if it is faster).

Cases (more are added as their PyTorch restatements exist):
  ogm_ge_cremad: OGM-GE on CREMA-D: two ResNet-18, audio (1, 257, 188), `--frames` 224x224 frames,
    concat fusion, SGD 1e-3 momentum 0.9 wd 1e-4, OGM-GE gradient modulation (alpha 0.8) with noise.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import load_config  # noqa: E402

_CASE = flags.DEFINE_enum("case", "ogm_ge_cremad", ["ogm_ge_cremad"], "What to compare.")
_BATCH = flags.DEFINE_integer("batch", 64, "Batch size (both sides).")
_FRAMES = flags.DEFINE_integer("frames", 1, "Visual frames per clip (ogm_ge_cremad: 1-3).")
_IMAGE = flags.DEFINE_integer("image_size", 224, "Frame side.")
_WIDTHS = flags.DEFINE_list("widths", ["64", "128", "256", "512"], "ResNet stage widths.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed train steps per side.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps first (compilation included).")
_COMPILE = flags.DEFINE_enum("torch_compile", "auto", ["auto", "on", "off"],
                             "torch.compile the PyTorch step ('auto': keep it only if faster).")
_THREADS = flags.DEFINE_integer("threads", 0, "torch.set_num_threads (0: PyTorch's default).")
_JSON = flags.DEFINE_string("json", None, "Optional path to write the numbers as JSON.")

NUM_CLASSES = 6
AUDIO_SHAPE = (257, 188)  # OGM-GE's CREMA-D log-STFT (freq, time).


def _time_steps(step: Callable[[], Any], sync: Callable[[Any], Any], steps: int,
                warmup: int) -> float:
  """Seconds per step: `warmup` untimed calls, then `steps` timed ones ending in a sync."""
  out = None
  for _ in range(warmup):
    out = step()
  sync(out)
  tic = time.perf_counter()
  for _ in range(steps):
    out = step()
  sync(out)
  return (time.perf_counter() - tic) / steps


# ------------------------------------------------------------------------------------------ avjax
def avjax_ogm_ge(batch: int, frames: int, image: int, widths: list[int]) -> Callable[[], Any]:
  """The trainer's jitted OGM-GE step on random inputs; returns a zero-argument step function."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from avjax.steps import make_train_step, setup

  config = load_config("ogm_ge_cremad")
  config.model.widths = tuple(widths)
  config.input.num_frames, config.input.image_size = frames, image
  config.train.batch_size = batch
  exp = setup(config, NUM_CLASSES, steps_per_epoch=100)
  rng = np.random.default_rng(0)
  data = {
      "audio": rng.standard_normal((batch, *AUDIO_SHAPE, 1), np.float32),
      "visual": rng.standard_normal((batch, frames, image, image, 3), np.float32),
      "label": rng.integers(0, NUM_CLASSES, batch).astype(np.int32),
      "modality_mask": np.ones((batch, 2), np.float32),
  }
  data = jax.device_put(data)
  step_fn = jax.jit(make_train_step(exp.graphs, exp.tx, exp.method), donate_argnums=0)
  holder = {"state": jax.device_put(exp.state)}
  epoch = jnp.int32(0)

  def step():
    holder["state"], metrics = step_fn(holder["state"], data, epoch)
    return metrics["loss"]

  return step


# ---------------------------------------------------------------------------------------- PyTorch
def torch_ogm_ge(batch: int, frames: int, image: int, widths: list[int], compile_: bool,
                 device: str) -> Callable[[], Any]:
  """The reference's OGM-GE training step (main.py): CE on the fused logits, backward, encoder
  conv gradients scaled by the OGM coefficients plus Gaussian noise of their std, SGD."""
  import torch
  import torch.nn.functional as F

  from tests.convert import torch_reference as ref

  torch.manual_seed(0)
  model = ref.AVClassifier(NUM_CLASSES, fusion="concat", widths=widths).to(device)
  model = model.to(memory_format=torch.channels_last)
  opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
  audio = torch.randn(batch, 1, *AUDIO_SHAPE, device=device).to(memory_format=torch.channels_last)
  visual = torch.randn(batch, 3, frames, image, image, device=device)
  label = torch.randint(0, NUM_CLASSES, (batch,), device=device)
  d = widths[-1]
  forward = torch.compile(model) if compile_ else model
  encoder_convs = {
      name: [p for n, p in module.named_parameters() if p.dim() == 4]
      for name, module in (("audio", model.audio_net), ("visual", model.visual_net))
  }

  def step():
    opt.zero_grad(set_to_none=True)
    a_feat, v_feat, out = forward(audio, visual)
    weight, bias = model.fusion_module.fc_out.weight, model.fusion_module.fc_out.bias
    out_a = a_feat @ weight[:, :d].t() + bias / 2
    out_v = v_feat @ weight[:, d:].t() + bias / 2
    loss = F.cross_entropy(out, label)
    loss.backward()
    with torch.no_grad():
      score_a = F.softmax(out_a, 1).gather(1, label[:, None]).sum()
      score_v = F.softmax(out_v, 1).gather(1, label[:, None]).sum()
      ratio_v = score_v / score_a
      coeff = {"audio": torch.ones(()), "visual": torch.ones(())}
      if ratio_v > 1:
        coeff["visual"] = 1 - torch.tanh(0.8 * torch.relu(ratio_v))
      else:
        coeff["audio"] = 1 - torch.tanh(0.8 * torch.relu(1 / ratio_v))
      for name, params in encoder_convs.items():
        for p in params:
          # The reference reads the std with .item(); kept on the device here (no host sync).
          p.grad = p.grad * coeff[name] + torch.randn_like(p.grad) * (p.grad.std() + 1e-8)
    opt.step()
    return loss.detach()

  return step


def main(argv: list[str]) -> None:
  del argv
  import jax
  import torch

  if _THREADS.value:
    torch.set_num_threads(_THREADS.value)
  widths = [int(w) for w in _WIDTHS.value]
  b, f, s = _BATCH.value, _FRAMES.value, _IMAGE.value
  device = "cuda" if torch.cuda.is_available() else "cpu"
  jax_sync = lambda x: jax.block_until_ready(x)
  torch_sync = lambda x: (torch.cuda.synchronize() if device == "cuda" else None, float(x))

  r: dict[str, Any] = dict(case=_CASE.value, batch=b, frames=f, image_size=s, widths=widths,
                           jax=jax.__version__, torch=torch.__version__,
                           jax_device=str(jax.devices()[0].device_kind), torch_device=device,
                           torch_threads=torch.get_num_threads(), cpu_count=os.cpu_count())
  tic = time.perf_counter()
  avjax_step = avjax_ogm_ge(b, f, s, widths)
  r["avjax_s_per_step"] = _time_steps(avjax_step, jax_sync, _STEPS.value, _WARMUP.value)
  r["avjax_first_steps_s"] = time.perf_counter() - tic - r["avjax_s_per_step"] * _STEPS.value

  variants = {"off": [False], "on": [True], "auto": [False, True]}[_COMPILE.value]
  torch_times = {}
  for compile_ in variants:
    step = torch_ogm_ge(b, f, s, widths, compile_, device)
    try:
      torch_times[compile_] = _time_steps(step, torch_sync, _STEPS.value, _WARMUP.value)
    except Exception as e:  # pylint: disable=broad-except  # torch.compile without a toolchain.
      if _COMPILE.value == "on":
        raise
      print(f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
            "compared without it.")
  best = min(torch_times, key=torch_times.get)
  r["torch_compile"] = best
  r["torch_s_per_step"] = torch_times[best]
  r["torch_s_per_step_all"] = {("compiled" if k else "eager"): v for k, v in torch_times.items()}
  r["avjax_examples_per_s"] = b / r["avjax_s_per_step"]
  r["torch_examples_per_s"] = b / r["torch_s_per_step"]
  r["ratio_avjax_over_torch"] = r["avjax_examples_per_s"] / r["torch_examples_per_s"]

  print(f"{r['case']}: batch {b}, {f} frame(s) of {s}x{s}, widths {widths}")
  print(f"  devices: jax {r['jax_device']} (jax {r['jax']}), torch {device} (torch {r['torch']}, "
        f"{r['torch_threads']} threads, compile={best})")
  print(f"  avjax  : {r['avjax_examples_per_s']:8.1f} examples/s "
        f"({1e3 * r['avjax_s_per_step']:.0f} ms/step)")
  print(f"  PyTorch: {r['torch_examples_per_s']:8.1f} examples/s "
        f"({1e3 * r['torch_s_per_step']:.0f} ms/step)")
  print(f"  avjax / PyTorch: {r['ratio_avjax_over_torch']:.2f}x")
  if _JSON.value:
    with open(_JSON.value, "w") as fh:
      json.dump(r, fh, indent=2)


if __name__ == "__main__":
  app.run(main)
