"""The epoch-start hook: method state computed by a pass over training data survives a resume.

The method is the worked example of docs/adding_a_method.md, loaded from that page: in the shape of
PMR (CVPR 2023), at every epoch start it computes each class's mean audio feature over a seeded part
of the training split (`ctx.run`), blends it into the previous prototypes (EMA) and returns them as
method state; its loss adds a prototype cross-entropy on the audio features. A run stopped
mid-epoch and resumed must end with the same state, prototypes included, bit for bit.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import types

import numpy as np

from avjax.methods.base import METHODS, EpochContext
from tests.helpers import tiny_config
from tests.methods.common import check_resume

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
  # As if SIGTERM arrived during step 8: the middle of epoch 2 (6 steps per epoch).
  run = check_resume(config, tmp_path, monkeypatch, 8, "batch 2")
  assert (run.mid_meta["epoch"], run.mid_meta["step_in_epoch"]) == (1, 2)
  prototypes = run.final.method_state["prototypes"]
  # Set by the hook (not the zeros of init_state); the resumed epoch kept the prototypes its start
  # computed (recomputing them from the mid-epoch model would have changed the final state).
  assert np.all(np.any(prototypes != 0, axis=1))
  np.testing.assert_array_equal(run.mid.method_state["prototypes"], prototypes)
  assert all(np.isfinite(r["loss_prototype"]) for r in run.train)


def test_heldout_fold_is_seeded_and_disjoint():
  ctx = EpochContext(epoch=3, seed=5, num_examples=50, state=None, model=None, run=None)
  fit, held = ctx.heldout()
  assert len(held) == 10 and len(fit) == 40 and not set(fit) & set(held)
  again, _ = dataclasses.replace(ctx, epoch=7).heldout()  # The fold does not move with epochs.
  np.testing.assert_array_equal(again, fit)
