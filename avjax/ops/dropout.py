"""The PRNG that draws dropout masks in models with dozens of dropout layers (VAVL's Conformers,
AuxFormer's MulT stacks): avjax.ops.policy's 'dropout_rng' family, or the `form` argument.

  'rbg'      ('auto', every backend) XLA's RngBitGenerator. Every mask drawn with threefry unrolls
             its rounds into the program, which with these models dominates compile time (3x slower
             on CPU). Deterministic per seed and mesh, but the masks depend on how the batch is
             sharded (docs/deviations.md).
  'default'  a key of JAX's default implementation (threefry unless `jax_default_prng_impl` says
             otherwise): masks independent of sharding, slower to compile.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from avjax.ops import policy


def fast_dropout_rngs(rngs: nnx.Rngs, form: str = policy.AUTO) -> nnx.Rngs:
  """Rngs with a fresh parameter stream and a 'dropout' stream on the chosen PRNG. Draws one key
  from each of `rngs`' 'dropout' and 'params' streams (in that order) whatever the form, so the
  parameters' initial values do not depend on it."""
  key = rngs.dropout()
  if policy.resolve("dropout_rng", form) == "rbg":
    key = jax.random.wrap_key_data(jax.random.bits(key, (4,), jnp.uint32), impl="rbg")
  return nnx.Rngs(params=rngs.params(), dropout=key)
