"""The epoch-start hook: method state computed by a pass over training data survives a resume.

The method is the worked example of docs/adding_a_method.md, loaded from that page: in the shape of
PMR (CVPR 2023), at every epoch start it computes each class's mean audio feature over a seeded part
of the training split (`ctx.run`), blends it into the previous prototypes (EMA) and returns them as
method state; its loss adds a prototype cross-entropy on the audio features. A run stopped
mid-epoch and resumed must end with the same state, prototypes included, bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import types

import jax
import numpy as np
import pytest

from avjax import train as train_lib
from avjax.methods.base import METHODS, EpochContext
from avjax.preemption import Preempted, PreemptionWatcher
from avjax.train import train_and_evaluate
from tests.helpers import preempt_at, restore_final_state, tiny_config

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                   "docs", "adding_a_method.md")


def _register_worked_example() -> None:
  """Runs the page's method file (its first python block), which registers 'prototype_probe'."""
  if "prototype_probe" in METHODS:
    return
  code = re.search(r"```python\n(.*?)```", open(DOC).read(), re.S).group(1)
  module = types.ModuleType("prototype_probe")
  sys.modules[module.__name__] = module  # dataclasses resolve annotations through it.
  exec(compile(code, DOC, "exec"), module.__dict__)  # pylint: disable=exec-used


_register_worked_example()


def _config(data_dir):
  return tiny_config(data_dir, **{"method.name": "prototype_probe", "train.num_epochs": 2,
                                  "train.checkpoint_every_steps": 4})


def test_epoch_start_state_is_checkpointed_and_resumes_bit_exactly(data_dir, tmp_path,
                                                                    monkeypatch):
  config = _config(data_dir)
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  train_and_evaluate(config, straight)

  # As if SIGTERM arrived during step 8: the middle of epoch 2 (6 steps per epoch).
  monkeypatch.setattr(train_lib, "PreemptionWatcher", preempt_at(8))
  with pytest.raises(Preempted, match="batch 2"):
    train_and_evaluate(config, resumed)
  mid, meta = restore_final_state(resumed, config)
  assert (meta["epoch"], meta["step_in_epoch"]) == (1, 2)
  monkeypatch.setattr(train_lib, "PreemptionWatcher", PreemptionWatcher)
  train_and_evaluate(config, resumed)

  a, _ = restore_final_state(straight, config)
  b, _ = restore_final_state(resumed, config)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  prototypes = a.method_state["prototypes"]
  # Set by the hook (not the zeros of init_state); the resumed epoch kept the prototypes its start
  # computed (recomputing them from the mid-epoch model would have changed the final state).
  assert np.all(np.any(prototypes != 0, axis=1))
  np.testing.assert_array_equal(mid.method_state["prototypes"], prototypes)
  rows = lambda w: [json.loads(line) for line in open(os.path.join(w, "metrics.jsonl"))]
  val = lambda w: [r for r in rows(w) if r["split"] == "val"]
  assert val(straight) == val(resumed)
  assert all(np.isfinite(r["loss_prototype"]) for r in rows(straight) if r["split"] == "train")


def test_heldout_fold_is_seeded_and_disjoint():
  ctx = EpochContext(epoch=3, seed=5, num_examples=50, state=None, model=None, run=None)
  fit, held = ctx.heldout()
  assert len(held) == 10 and len(fit) == 40 and not set(fit) & set(held)
  again, _ = dataclasses.replace(ctx, epoch=7).heldout()  # The fold does not move with epochs.
  np.testing.assert_array_equal(again, fit)
