r"""Which XLA CPU options speed up avjax's steps: each flag set in a fresh process, one table.

  python scripts/benchmark_xla_flags.py --what convs            # one 3x3 conv: fwd / dgrad / wgrad
  python scripts/benchmark_xla_flags.py --what case --case ogm_ge_cremad --batch 16 [--opt k=v]
  python scripts/benchmark_xla_flags.py --flag_sets "" "--xla_cpu_use_xnnpack=true" ...

`convs` times one ResNet-18 stage-1 convolution (NHWC (16, 56, 56, 64), 3x3x64x64, SAME) in JAX's
forward, input-gradient and filter-gradient programs separately, and the same three with PyTorch
(oneDNN, channels_last) in the same process, to show where a convolutional model's step time goes.
`case` runs the avjax side of scripts/benchmark_vs_torch.py for one case under each flag set.
XLA_FLAGS are read once per process, hence one subprocess per flag set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app, flags

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_FLAG_SETS = (
    "",
    "--xla_cpu_use_xnnpack=true",
    "--xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce",
    "--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce",
    "--xla_cpu_experimental_onednn_fusion_type=dot,eltwise,reduce",
    "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true",
    "--xla_cpu_enable_fast_math=true",
    "--xla_cpu_prefer_vector_width=512",
    "--xla_cpu_use_thunk_runtime=false",
)

_WHAT = flags.DEFINE_enum("what", "convs", ["convs", "case"], "What to time under each flag set.")
_FLAG_SETS = flags.DEFINE_multi_string("flag_sets", None, "XLA_FLAGS values (default: a list of "
                                       "the CPU options that concern convolutions and matmuls).")
_CASE = flags.DEFINE_string("case", "ogm_ge_cremad", "--what case: a benchmark_vs_torch case.")
_BATCH = flags.DEFINE_string("batch", "16", "--what case: batch size.")
_OPT = flags.DEFINE_multi_string("opt", [], "--what case: case options (key=value).")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed repetitions.")
_CHILD = flags.DEFINE_bool("child", False, "Internal: time the convolutions in this process.")


def _time(fn, sync, steps: int) -> float:
  """Milliseconds per call after two untimed calls."""
  for _ in range(2):
    sync(fn())
  tic = time.perf_counter()
  for _ in range(steps):
    out = fn()
  sync(out)
  return 1e3 * (time.perf_counter() - tic) / steps


def time_convs(steps: int) -> dict[str, float]:
  """ms of one conv's forward, input gradient and filter gradient, in JAX and in PyTorch."""
  import jax
  import numpy as np
  import torch

  rng = np.random.default_rng(0)
  x = rng.standard_normal((16, 56, 56, 64), np.float32)
  w = 0.05 * rng.standard_normal((3, 3, 64, 64), np.float32)
  g = rng.standard_normal((16, 56, 56, 64), np.float32)
  conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  jx, jw, jg = map(jax.device_put, (x, w, g))
  programs = {
      "forward": jax.jit(conv),
      "input_grad": jax.jit(lambda x, w: jax.vjp(lambda x: conv(x, w), x)[1](jg)[0]),
      "filter_grad": jax.jit(lambda x, w: jax.vjp(lambda w: conv(x, w), w)[1](jg)[0]),
  }
  r = {f"jax_{k}_ms": _time(lambda f=f: f(jx, jw), jax.block_until_ready, steps)
       for k, f in programs.items()}
  tx = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
  tw = torch.from_numpy(w).permute(3, 2, 0, 1).contiguous()
  tg = torch.from_numpy(g).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
  tconv = torch.ops.aten.convolution_backward
  nothing = lambda out: None
  with torch.no_grad():
    fwd = lambda: torch.nn.functional.conv2d(tx, tw, padding=1)
    back = lambda mask: tconv(tg, tx, tw, None, (1, 1), (1, 1), (1, 1), False, (0, 0), 1, mask)
    r["torch_forward_ms"] = _time(fwd, nothing, steps)
    r["torch_input_grad_ms"] = _time(lambda: back((True, False, False)), nothing, steps)
    r["torch_filter_grad_ms"] = _time(lambda: back((False, True, False)), nothing, steps)
  r["torch_threads"] = torch.get_num_threads()
  return r


def _run_child(xla_flags: str) -> dict:
  env = dict(os.environ, XLA_FLAGS=xla_flags, JAX_PLATFORMS="cpu")
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "r.json")
    if _WHAT.value == "convs":
      cmd = [sys.executable, os.path.abspath(__file__), "--child", f"--steps={_STEPS.value}"]
      env["AVJAX_XLA_FLAGS_OUT"] = out
    else:
      cmd = [sys.executable, os.path.join(HERE, "benchmark_vs_torch.py"), "--case", _CASE.value,
             "--batch", _BATCH.value, "--sides", "avjax", "--steps", str(_STEPS.value),
             "--warmup", "1", "--json", out] + [f"--opt={o}" for o in _OPT.value]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
      tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
      return {"error": tail[0][:200]}
    with open(out) as f:
      payload = json.load(f)
  return payload if _WHAT.value == "convs" else payload["results"][0]


def main(argv: list[str]) -> None:
  del argv
  if _CHILD.value:
    with open(os.environ["AVJAX_XLA_FLAGS_OUT"], "w") as f:
      json.dump(time_convs(_STEPS.value), f)
    return
  flag_sets = _FLAG_SETS.value or list(DEFAULT_FLAG_SETS)
  with open("/proc/loadavg") as f:
    print(f"load average at start: {f.read().split()[0]}; {os.cpu_count()} CPUs")
  baseline = None
  for flag_set in flag_sets:
    r = _run_child(flag_set)
    label = flag_set or "(default)"
    if "error" in r:
      print(f"{label}: failed: {r['error']}")
      continue
    if _WHAT.value == "convs":
      total = sum(r[f"jax_{k}_ms"] for k in ("forward", "input_grad", "filter_grad"))
      torch_total = sum(r[f"torch_{k}_ms"] for k in ("forward", "input_grad", "filter_grad"))
      print(f"{label}\n  jax   fwd {r['jax_forward_ms']:.1f}  dgrad {r['jax_input_grad_ms']:.1f}"
            f"  wgrad {r['jax_filter_grad_ms']:.1f}  total {total:.1f} ms\n"
            f"  torch fwd {r['torch_forward_ms']:.1f}  dgrad {r['torch_input_grad_ms']:.1f}"
            f"  wgrad {r['torch_filter_grad_ms']:.1f}  total {torch_total:.1f} ms "
            f"({r['torch_threads']} threads); jax / torch time {total / torch_total:.2f}")
    else:
      ms = 1e3 * r["avjax_s_per_step"]
      baseline = baseline or ms
      print(f"{label}: {ms:.1f} ms/step ({r['avjax_examples_per_s']:.1f} examples/s, "
            f"{baseline / ms:.2f}x the first set)", flush=True)
  with open("/proc/loadavg") as f:
    print(f"load average at end: {f.read().split()[0]}")


if __name__ == "__main__":
  app.run(main)
