"""OGM-GE's T-PAMI 2024 recipe (configs/ogm_tpami_*.py): the configs carry the journal values, and
the coefficients and the warm-up window agree with the notes' hand-computed cases."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from avjax.config import validate
from avjax.methods.ogm import in_window, ogm_coefficients
from tests.methods.common import config_module


@pytest.mark.parametrize("name,dataset,frames,size", [
    ("ogm_tpami_cremad", "crema_d", 1, 224), ("ogm_tpami_ks", "kinetics_sounds", 3, 112)])
def test_configs_carry_the_journal_recipe(name, dataset, frames, size):
  module = config_module(name)
  c = validate(module.get_config())
  assert (c.dataset.name, c.input.num_frames, c.input.image_size) == (dataset, frames, size)
  assert (c.method.name, c.method.alpha, c.method.modulation_starts,
          c.method.modulation_ends) == ("ogm_ge", 2.6, 6, 80)
  assert (c.optimizer.name, c.optimizer.learning_rate, c.optimizer.weight_decay,
          c.optimizer.schedule, c.optimizer.step_epochs, c.optimizer.gamma) == (
              "adamw", 1e-3, 0.01, "step", 20, 0.1)
  assert (c.train.batch_size, c.train.num_epochs, c.model.fusion) == (32, 100, "concat")
  smoke = validate(module.get_config("smoke"))
  assert smoke.dataset.name == "synthetic_av" and smoke.name.endswith("_smoke")
  with pytest.raises(ValueError, match="Unknown config argument"):
    module.get_config("nonsense")


def _logits(p_true):
  p = np.asarray(p_true, np.float64)
  return jnp.asarray(np.log(np.stack([p, 1 - p], -1)), jnp.float32)


@pytest.mark.parametrize("alpha,expected", [(0.8, 0.078331), (0.3, 0.462950), (2.6, 6.09e-5)])
def test_coefficient_at_ratio_two(alpha, expected):
  # p_a = 0.8 + 0.8 = 1.6, p_v = 0.4 + 0.4 = 0.8: ratio 2, audio damped by 1 - tanh(2 alpha).
  k = ogm_coefficients({"audio": _logits([0.8, 0.8]), "visual": _logits([0.4, 0.4])},
                       jnp.zeros(2, jnp.int32), alpha)
  assert float(k["audio"]) == pytest.approx(expected, rel=2e-3)
  assert float(k["audio"]) == pytest.approx(1 - math.tanh(2 * alpha), rel=1e-3)
  assert float(k["visual"]) == 1.0


def test_warm_up_window():
  # main.py:91: warm_up while epoch <= 5; the window 0-80 then leaves epochs 6-80 modulated.
  assert not bool(in_window(jnp.int32(5), 6, 80))
  assert bool(in_window(jnp.int32(6), 6, 80)) and bool(in_window(jnp.int32(80), 6, 80))
  assert not bool(in_window(jnp.int32(81), 6, 80))
