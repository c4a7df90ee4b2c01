r"""K seeds in one program (the train step vmapped over K states) against K separate steps.

  PYTHONPATH=$PWD python scripts/benchmark_vmapped_seeds.py [--k 3] [--steps 10] [--method baseline]

Same batch for every replica (a sweep's seeds would share the data order only if they shared the
seed); what is measured is the compute: examples per second of K vmapped replicas vs K calls of the
one-replica step, one device. docs/benchmarks.md records the result.
"""

import time

from absl import app, flags
import jax
import jax.numpy as jnp

from avjax import config as config_lib
from avjax import data, protocol
from avjax.steps import make_train_step, setup

_K = flags.DEFINE_integer("k", 3, "Replicas (seeds).")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps.")
_METHOD = flags.DEFINE_string("method", "baseline", "Method.")


def main(_):
  c = config_lib.base_config()
  config_lib.apply_smoke(c)
  c.method.name = _METHOD.value
  c.mesh.data = 1
  c = config_lib.validate(c)
  dataset = data.open_dataset(c.dataset, ["train"])
  source = protocol.run_sources(c, dataset.sources).train
  steps = data.steps_per_epoch(len(source), c.train.batch_size)
  exps = [setup(_seeded(c, s), dataset.num_classes, steps) for s in range(_K.value)]
  transform = data.make_transform(c.input, train=True, metadata=dataset.info.metadata)
  batch = next(iter(data.train_batches(source, data.shuffled_plan(len(source), 0, 0), transform,
                                       seed=0, epoch=0, global_batch_size=c.train.batch_size)))
  batch = jax.device_put(batch)
  position = jnp.asarray([0, 0, steps], jnp.int32)
  step = make_train_step(exps[0].graphs, exps[0].tx, exps[0].method, steps)
  one = jax.jit(step)
  many = jax.jit(jax.vmap(step, in_axes=(0, None, None)))
  states = [e.state for e in exps]
  stacked = jax.tree.map(lambda *x: jnp.stack(x), *states)

  def timed(fn):
    fn()  # Compile and warm up.
    tic = time.perf_counter()
    for _ in range(_STEPS.value):
      out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - tic) / _STEPS.value

  sequential = timed(lambda: [one(s, batch, position) for s in states])
  vmapped = timed(lambda: many(stacked, batch, position))
  print(f"K={_K.value} method={_METHOD.value} batch={c.train.batch_size}: sequential "
        f"{1e3 * sequential:.1f} ms per K steps, vmapped {1e3 * vmapped:.1f} ms; speed-up "
        f"{sequential / vmapped:.2f}x")


def _seeded(c, seed):
  out = c.copy_and_resolve_references()
  out.seed = seed
  return out


if __name__ == "__main__":
  app.run(main)
