"""Shared builders of tiny experiment configs for tests."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import jax
import ml_collections

from avjax import data
from avjax.checkpoint import Checkpointer, abstract_like
from avjax.config import base_config
from avjax.steps import setup
from tests.xla_env import subprocess_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(data_dir: str, **overrides) -> ml_collections.ConfigDict:
  """A config that trains in seconds: 96 synthetic clips, 16x16 frames, 4-channel ResNets."""
  c = base_config()
  c.name = "tiny"
  c.dataset.data_dir = data_dir
  c.dataset.build_overrides = ml_collections.ConfigDict(
      dict(num_train=96, num_validation=32, num_test=32))
  c.input.num_frames = 2
  c.input.image_size = 16
  c.input.crop_scale = (0.5, 1.0)
  c.model.av_resnet.widths = (4, 8, 8, 8)
  c.optimizer.name = "sgd"
  c.optimizer.learning_rate = 0.05
  c.optimizer.schedule = "constant"
  c.train.batch_size = 16
  c.train.num_epochs = 2
  c.train.log_every_steps = 3
  c.train.progress = False
  c.mesh.data = 1
  for key, value in overrides.items():
    set_key(c, key, value)
  return c


def set_key(config: ml_collections.ConfigDict, key: str, value) -> None:
  """config[a][b][c] = value for key 'a.b.c'."""
  *sections, name = key.split(".")
  for section in sections:
    config = config[section]
  config[name] = value


def demo_smoke_config(data_dir: str, **overrides) -> ml_collections.ConfigDict:
  """configs/demo.py:smoke with `section.key` (or `a.b.key`) overrides, as the CLI tests run it."""
  path = os.path.join(REPO, "configs", "demo.py")
  spec = importlib.util.spec_from_file_location("demo_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("smoke")
  config.dataset.data_dir = data_dir
  for key, value in overrides.items():
    set_key(config, key, value)
  return config


def restore_final_state(workdir: str, config: ml_collections.ConfigDict):
  """Restores the latest checkpoint of a finished run as numpy leaves."""
  dataset = data.open_dataset(config.dataset, ["train"])
  steps = data.steps_per_epoch(len(dataset.sources["train"]), config.train.batch_size)
  state = setup(config, dataset.num_classes, steps).state
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=5, best_metric="accuracy",
                      best_mode="max")
  restored, meta = ckpt.restore(max(ckpt.steps()), abstract_like(state))
  ckpt.close()
  return jax.device_get(restored), meta


# ModelOutput's per-modality optional fields -> the key each modality's value has in tests.
_PER_MODALITY_NAMES = {"head_inputs": "head_inputs_{m}", "reconstructions": "recon_{m}",
                       "embeddings": "{m}_embed", "tokens": "{m}_tokens",
                       "modality_regression": "regression_{m}"}


def output_fields(out) -> dict:
  """A ModelOutput's optional typed fields flattened under the names tests assert on
  (recon_<m>, vq_loss_<m>, perplexity_<m>, codes_<m>, mask, mask_thresholded, mask_sum,
  mask_shared_<m>, head_inputs_<m>, main_logits, <m>_embed, <m>_tokens, regression[_<m>])."""
  flat = {}
  for field, name in _PER_MODALITY_NAMES.items():
    flat.update({name.format(m=m): v for m, v in (getattr(out, field) or {}).items()})
  if out.joint_logits is not None:
    flat["main_logits"] = out.joint_logits
  for m, q in (out.quantization or {}).items():
    flat.update({f"vq_loss_{m}": q.loss, f"perplexity_{m}": q.perplexity, f"codes_{m}": q.codes})
  if out.fusion_mask is not None:
    flat.update(mask=out.fusion_mask.values, mask_thresholded=out.fusion_mask.thresholded,
                mask_sum=getattr(out.fusion_mask.values, "sum", lambda: None)())
    flat.update({f"mask_shared_{m}": v for m, v in out.fusion_mask.shared.items()})
  if out.regression is not None:
    flat["regression"] = out.regression
  return flat


def run_cli(module: str, *args: str) -> subprocess.CompletedProcess:
  """`python -m module args` from the repository root, in the suite's XLA environment; asserts
  that it succeeds."""
  result = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def evaluation(config: ml_collections.ConfigDict, graphs, method=None):
  """(jitted eval step, evaluators, report fn) for `config.evals`, as the trainer builds them
  (with `method`'s inference rule when given)."""
  from avjax import evaluators as evaluators_lib  # pylint: disable=import-outside-toplevel
  from avjax.steps import make_eval_step  # pylint: disable=import-outside-toplevel
  from avjax.tasks import make_task  # pylint: disable=import-outside-toplevel
  evaluators = evaluators_lib.build(config, make_task(config))
  step = jax.jit(make_eval_step(graphs, config, evaluators,
                                method.predict if method is not None else None))
  return step, evaluators, lambda predictions: evaluators_lib.report(evaluators, predictions)


def preempt_at(step: int):
  """A PreemptionWatcher that reports a preemption request from the `step`-th check on (as if
  SIGTERM arrived during that step); monkeypatch it over avjax.train.PreemptionWatcher."""
  from avjax.preemption import PreemptionWatcher  # pylint: disable=import-outside-toplevel

  class SignalAtStep(PreemptionWatcher):
    calls = 0

    def requested(self):
      SignalAtStep.calls += 1
      return SignalAtStep.calls >= step

  return SignalAtStep
