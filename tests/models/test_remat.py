"""Recomputation (remat) changes memory, not results: same loss, gradients and BatchNorm statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avjax.config import base_config, validate
from avjax.models.conformer import Conformer
from avjax.models.resnet import ResNet18
from avjax.registry import ConfigError
from avjax.steps import make_train_step, setup


def _loss_grads_state(model: nnx.Module, *inputs: jax.Array):
  """Train-mode loss and gradients, and the model's non-parameter state after the step."""
  model.train()

  def loss_fn(m):
    return jnp.mean(m(*inputs) ** 2)

  loss, grads = nnx.value_and_grad(loss_fn)(model)
  state = nnx.state(model, nnx.Not(nnx.Param))
  return loss, grads, state


def _numeric(x):
  return jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x


def _assert_trees_close(a, b, **tol):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(_numeric(x)), np.asarray(_numeric(y)), **tol)


def test_resnet_remat_matches_plain_and_recomputes():
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  plain = ResNet18(3, widths=(4, 8, 8, 8), rngs=nnx.Rngs(0))
  remat = ResNet18(3, widths=(4, 8, 8, 8), remat=True, rngs=nnx.Rngs(0))
  out_plain, out_remat = _loss_grads_state(plain, x), _loss_grads_state(remat, x)
  _assert_trees_close(out_plain, out_remat, rtol=1e-5, atol=1e-6)
  batch_stats = [_numeric(v) for v in jax.tree.leaves(out_remat[2])]
  assert batch_stats and any(np.abs(np.asarray(v)).sum() > 0 for v in batch_stats)



@pytest.mark.parametrize("remat", [False, True])
def test_trainer_step_recomputes_only_with_model_remat(remat):
  c = base_config()
  c.model.av_resnet.widths, c.input.image_size, c.model.av_resnet.remat = (4, 8, 8, 8), 16, remat
  exp = setup(c, num_classes=3)
  batch = {"audio": jnp.zeros((2, 16, 16, 1)), "visual": jnp.zeros((2, 1, 16, 16, 3), jnp.uint8),
           "label": jnp.zeros((2,), jnp.int32), "modality_mask": jnp.ones((2, 2))}
  jaxpr = str(jax.make_jaxpr(make_train_step(exp.graphs, exp.tx, exp.method, 1))(
      exp.state, batch, jnp.int32(0)))
  assert ("checkpoint" in jaxpr or "remat" in jaxpr) == remat

@pytest.mark.parametrize("num_blocks", [1, 3])
def test_conformer_remat_matches_plain_with_dropout_and_masks(num_blocks):
  """The scanned, checkpointed blocks give the unrolled blocks' loss, gradients, BatchNorm
  statistics and dropout RNG counts."""
  x = jax.random.normal(jax.random.key(1), (2, 7, 12))
  mask = jnp.array([[1] * 7, [1] * 4 + [0] * 3], jnp.float32)
  make = lambda remat: Conformer(12, 16, num_blocks, heads=2, kernel_size=3, dropout=0.2,
                                 remat=remat, rngs=nnx.Rngs(0))
  _assert_trees_close(_loss_grads_state(make(False), x, mask),
                      _loss_grads_state(make(True), x, mask), rtol=1e-5, atol=1e-6)


def test_model_remat_is_refused_where_it_would_do_nothing():
  c = base_config()
  c.model.av_resnet.remat = True
  validate(c)  # av_resnet takes it.
  c.model.name = "cmvqvae"
  with pytest.raises(ConfigError, match="config.model.av_resnet.remat is for the av_resnet model; "
                                        "'cmvqvae' "
                                        "has no recomputation option"):
    validate(c)
  c.model.name = "vat_classifier"  # Its section is config.model.vat, shared with 'vat'.
  with pytest.raises(ConfigError, match=r"takes recomputation as config.model.vat.remat\."):
    validate(c)


def test_vavl_passes_remat_to_every_conformer():
  from avjax.models.vavl import VAVL
  model = VAVL(num_outputs=3, audio_dim=12, visual_dim=10, dim=16, proj_dim=8, heads=2,
               audio_blocks=1, visual_blocks=1, shared_blocks=1, head_hidden=(8, 8), remat=True,
               rngs=nnx.Rngs(0))
  conformers = [m for _, m in nnx.iter_graph(model) if isinstance(m, Conformer)]
  assert len(conformers) == 3 and all(c.remat for c in conformers)


def test_conformer_remat_lowers_the_compiled_step_buffers():
  """What remat is for: XLA's buffers for a training step of the scanned, checkpointed blocks are
  smaller than the unrolled blocks' (long sequences: the attention scores dominate)."""
  x = jnp.zeros((2, 128, 12))

  def temp_bytes(remat: bool) -> int:
    model = Conformer(12, 32, 4, heads=2, kernel_size=3, dropout=0.0, remat=remat,
                      rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def train_step(params, rest):
      model = nnx.merge(graphdef, params, rest)
      grads = nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model)
      return grads, nnx.state(model, nnx.Not(nnx.Param))

    compiled = jax.jit(train_step).lower(params, rest).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  assert temp_bytes(True) < 0.6 * temp_bytes(False)
