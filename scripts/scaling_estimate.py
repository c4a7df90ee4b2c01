r"""Expected data-parallel step time at scale, on paper: compute from a measured FLOP rate, plus the
gradient all-reduce from the parameter count and the interconnect.

  python scripts/scaling_estimate.py --config ogm_ge_vggsound --achieved_tflops 19 \
      [--batch_per_device 64] [--devices 8,64,256] [--train_examples 183000] \
      [--workdir /tmp/avjax_paper] [--json out.json]

Inputs: the config's parameters and train-step FLOPs come from XLA (scripts/benchmark.py --norun on
the config's fixture build, via scripts/benchmark_paper_configs.py); `--achieved_tflops` is a FLOP
rate measured on the accelerator for a model of the same kind (docs/benchmarks.md says which).
Per step and device: compute = FLOPs(batch_per_device) / achieved rate; the all-reduce of fp32
gradients moves 2 (N - 1) / N x 4 P bytes per device (ring or tree: the same bandwidth term) at
the intra-node bus bandwidth while the job fits one node, else at the inter-node bandwidth per
device; BatchNorm's batch statistics add two small all-reduces per BN layer and pass (latency
terms). The step lies between max(compute, comm) (all-reduce fully hidden behind the backward pass)
and compute + comm (not overlapped).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark_paper_configs as bpc  # noqa: E402  # Also its --workdir (fixture builds), --json.
from benchlib import write_json  # noqa: E402

_CONFIG = flags.DEFINE_string("config", "ogm_ge_vggsound", "A paper config (configs/<name>.py).")
_ACHIEVED = flags.DEFINE_float("achieved_tflops", None, "Measured TFLOP/s per device.",
                               required=True)
_BATCH = flags.DEFINE_integer("batch_per_device", 0, "Per-device batch (0: the config's batch).")
_DEVICES = flags.DEFINE_list("devices", ["8", "64", "256"], "Device counts.")
_PER_NODE = flags.DEFINE_integer("devices_per_node", 8, "Devices sharing the fast intra-node link.")
_INTRA = flags.DEFINE_float("intra_gbps", 360.0, "Achievable all-reduce bus bandwidth inside a "
                            "node, GB/s per device (NVLink 4 on H100 SXM: ~360 of 450 nominal).")
_INTER = flags.DEFINE_float("inter_gbps", 40.0, "Achievable bus bandwidth across nodes, GB/s per "
                            "device (one 400 Gb/s NIC per GPU: ~40 of 50 nominal).")
_LATENCY = flags.DEFINE_float("latency_us", 30.0, "Latency of one small all-reduce across the "
                              "job (grows with hops; ~10-50 us on NVLink/InfiniBand).")
_BN_LAYERS = flags.DEFINE_integer("bn_layers", -1, "BatchNorm layers (-1: count in the model).")
_EXAMPLES = flags.DEFINE_integer("train_examples", 183_000, "Training clips per epoch (VGGSound: "
                                 "~200k listed, ~183k train still downloadable).")


def model_facts(name: str, batch: int) -> dict:
  """Parameters, train-step FLOPs at `batch` and BatchNorm count of configs/<name>.py."""
  import jax
  from flax import nnx

  from benchlib import load_config
  from pathlib import Path
  from avjax.models import build_model

  config = load_config(name)
  data = bpc.build_dataset(name, config, Path(bpc._WORKDIR.value or "/tmp/avjax_paper"))
  r = bpc.measure(name, data, batch, 1, run=False)
  if "error" in r:
    raise app.UsageError(f"{name}: {r['error']}")
  x = r["results"]
  model = nnx.eval_shape(lambda: build_model(config, 10))
  bn = sum(isinstance(m, nnx.BatchNorm) for _, m in nnx.iter_graph(model))
  return {"params": x["num_params"], "flops_per_step": x["train_flops"], "batch": batch,
          "bn_layers": bn, "jax": jax.__version__}


def estimate(facts: dict, devices: int, achieved_tflops: float) -> dict:
  """Step-time bounds (seconds) and throughput for `devices` data-parallel devices."""
  compute = facts["flops_per_step"] / (achieved_tflops * 1e12)
  grad_bytes = 4 * facts["params"]
  bandwidth = (_INTRA.value if devices <= _PER_NODE.value else _INTER.value) * 1e9
  allreduce = 2 * (devices - 1) / devices * grad_bytes / bandwidth
  bn = 2 * 2 * facts["bn_layers"] * _LATENCY.value * 1e-6  # Mean and variance, fwd and bwd.
  comm = allreduce + bn
  low, high = max(compute, comm), compute + comm
  global_batch = facts["batch"] * devices
  return {"devices": devices, "global_batch": global_batch, "compute_s": compute,
          "allreduce_s": allreduce, "batchnorm_sync_s": bn, "step_s_overlapped": low,
          "step_s_serial": high, "examples_per_s": (global_batch / high, global_batch / low),
          "scaling_efficiency": (compute / high, compute / low),
          "epoch_seconds": (_EXAMPLES.value / (global_batch / low),
                            _EXAMPLES.value / (global_batch / high))}


def main(argv: list[str]) -> None:
  del argv
  from benchlib import load_config
  batch = _BATCH.value or load_config(_CONFIG.value).train.batch_size
  facts = model_facts(_CONFIG.value, batch)
  if _BN_LAYERS.value >= 0:
    facts["bn_layers"] = _BN_LAYERS.value
  print(f"{_CONFIG.value}: {facts['params'] / 1e6:.1f} M parameters ({4 * facts['params'] / 2**20:.0f}"
        f" MiB of fp32 gradients), {facts['flops_per_step'] / 1e12:.2f} TFLOP per step at batch "
        f"{batch} per device, {facts['bn_layers']} BatchNorm layers; {_ACHIEVED.value} TFLOP/s "
        f"per device; bus {_INTRA.value} GB/s in a node of {_PER_NODE.value}, {_INTER.value} GB/s "
        f"across nodes; {_EXAMPLES.value} clips per epoch")
  print(f"{'devices':>7} {'global B':>8} {'compute ms':>10} {'all-reduce ms':>13} {'BN sync ms':>10}"
        f" {'step ms':>15} {'examples/s':>17} {'efficiency':>11} {'epoch s':>11}")
  rows = []
  for n in (int(d) for d in _DEVICES.value):
    e = estimate(facts, n, _ACHIEVED.value)
    rows.append(e)
    print(f"{n:>7} {e['global_batch']:>8} {1e3 * e['compute_s']:>10.1f} "
          f"{1e3 * e['allreduce_s']:>13.2f} {1e3 * e['batchnorm_sync_s']:>10.2f} "
          f"{1e3 * e['step_s_overlapped']:>7.1f}-{1e3 * e['step_s_serial']:<7.1f} "
          f"{e['examples_per_s'][0]:>8.0f}-{e['examples_per_s'][1]:<8.0f} "
          f"{e['scaling_efficiency'][0]:>5.2f}-{e['scaling_efficiency'][1]:<5.2f} "
          f"{e['epoch_seconds'][0]:>5.0f}-{e['epoch_seconds'][1]:<5.0f}")
  if bpc._JSON.value:
    write_json(bpc._JSON.value, {"facts": facts, "rows": rows}, indent=2)


if __name__ == "__main__":
  app.run(main)
