"""The kernel policy switch: per-backend 'auto' rules, forcing and restoring forms, and the
dropout PRNG forms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avjax import ops
from avjax.ops import policy


@pytest.mark.parametrize("backend,want", [
    ("cpu", dict(depthwise_conv1d="shifted", conv_transpose="col2im", max_pool="shifts",
                 dropout_rng="rbg")),
    ("gpu", dict(depthwise_conv1d="grouped", conv_transpose="lax", max_pool="shifts",
                 dropout_rng="rbg")),
    ("tpu", dict(depthwise_conv1d="grouped", conv_transpose="lax", max_pool="shifts",
                 dropout_rng="rbg")),
])
def test_auto_rules_per_backend(monkeypatch, backend, want):
  monkeypatch.setattr(policy, "backend", lambda: backend)
  assert {family: ops.resolve(family) for family in want} == want


def test_auto_attention_rule(monkeypatch):
  long = 1569 * 1569
  monkeypatch.setattr(policy, "backend", lambda: "gpu")
  assert ops.attention_implementation("auto", jnp.bfloat16, 64, long) == "cudnn"
  assert ops.attention_implementation("auto", jnp.float16, 128) == "cudnn"
  assert ops.attention_implementation("auto", jnp.bfloat16, 12) == "xla"  # Not a multiple of 8.
  assert ops.attention_implementation("auto", jnp.float32, 64, long) == "xla"
  monkeypatch.setattr(policy, "backend", lambda: "cpu")
  assert ops.attention_implementation("auto", jnp.bfloat16, 64, long) == "blocked"
  short = policy.BLOCKED_MIN_SCORES - 1
  assert ops.attention_implementation("auto", jnp.float32, 64, short) == "xla"
  monkeypatch.setattr(policy, "backend", lambda: "tpu")
  assert ops.attention_implementation("auto", jnp.bfloat16, 64, long) == "xla"


def test_force_overrides_auto_only_and_restores():
  assert ops.forced_forms() == {}
  with ops.force(depthwise_conv1d="grouped", attention="blocked"):
    assert ops.resolve("depthwise_conv1d") == "grouped"
    assert ops.resolve("depthwise_conv1d", "shifted") == "shifted"  # An explicit form wins.
    assert ops.forced_forms() == {"depthwise_conv1d": "grouped", "attention": "blocked"}
    with ops.force(depthwise_conv1d="shifted"):
      assert ops.resolve("depthwise_conv1d") == "shifted"
    assert ops.resolve("depthwise_conv1d") == "grouped"
  assert ops.forced_forms() == {}


def test_set_forms_returns_what_restores_it():
  previous = ops.set_forms(conv_transpose="lax")
  try:
    assert previous == {"conv_transpose": "auto"}
    assert ops.resolve("conv_transpose") == "lax"
    assert ops.set_forms(conv_transpose="auto") == {"conv_transpose": "lax"}
    assert ops.forced_forms() == {}
  finally:
    ops.set_forms(**previous)


def test_unknown_family_or_form_is_rejected_and_changes_nothing():
  with pytest.raises(ValueError, match="Unknown op family 'conv2d'"):
    ops.set_forms(conv2d="lax")
  with pytest.raises(ValueError, match=r"max_pool='avg' is not one of \('auto', 'shifts'"):
    ops.set_forms(depthwise_conv1d="grouped", max_pool="avg")
  assert ops.forced_forms() == {}
  with pytest.raises(ValueError, match="not one of"):
    ops.depthwise_conv1d(jnp.ones((1, 3, 1)), jnp.ones((3, 1, 1)), "fft")


def test_dropout_rng_forms():
  """'rbg' (auto) and 'default' give the same parameter stream; only the dropout key differs."""
  first = lambda rngs: (jax.random.key_impl(rngs.dropout()), jax.random.key_data(rngs.params()))
  rbg_impl, rbg_params = first(ops.fast_dropout_rngs(nnx.Rngs(3)))
  default_impl, default_params = first(ops.fast_dropout_rngs(nnx.Rngs(3), "default"))
  with ops.force(dropout_rng="default"):
    forced_impl, forced_params = first(ops.fast_dropout_rngs(nnx.Rngs(3)))
  assert "rbg" in str(rbg_impl)
  assert "threefry" in str(default_impl) and str(forced_impl) == str(default_impl)
  np.testing.assert_array_equal(rbg_params, default_params)
  np.testing.assert_array_equal(forced_params, default_params)
