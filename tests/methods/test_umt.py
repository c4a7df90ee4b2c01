"""`umt`: cross-entropy plus feature distillation towards frozen uni-modal teachers, which are
`unimodal` runs (the session's tiny ones, tests/methods/conftest.py)."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from avjax import config as config_lib
from avjax.evaluate import open_run
from avjax.methods.umt import distillation
from avjax.registry import ConfigError
from avjax.steps import setup
from avjax.train import train_and_evaluate
from tests.helpers import restore_final_state, tiny_config
from tests.methods.common import check_config, check_resume, first_step, load_config, smoke_cli


def _config(data_dir, runs, **overrides):
  c = tiny_config(data_dir, **{"method.name": "umt", **overrides})
  c.method.teacher_audio, c.method.teacher_visual = runs["audio"], runs["visual"]
  return c


def test_distillation_by_hand_and_against_torch():
  """h_a = (1, 2), t_a = (0, 0): MSE 2.5, times 10 = 25; d/dh_a = 10 * 2 (h - t) / (B D)."""
  h = {"audio": jnp.asarray([[1.0, 2.0]]), "visual": jnp.asarray([[3.0, 3.0]])}
  t = {"audio": jnp.zeros((1, 2)), "visual": jnp.asarray([[3.0, 3.0]])}
  terms = distillation(h, t)
  assert float(terms["audio"]) == 2.5 and float(terms["visual"]) == 0.0
  loss = lambda h, t: 10.0 * sum(distillation(h, t).values())
  grads_h, grads_t = jax.grad(loss, argnums=(0, 1))(h, t)
  np.testing.assert_allclose(grads_h["audio"], [[10.0, 20.0]])
  assert not np.any(grads_t["audio"]) and not np.any(grads_t["visual"])  # Stop-gradient.
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  hs = {m: rng.normal(size=(3, 4)).astype(np.float32) for m in ("audio", "visual")}
  ts = {m: rng.normal(size=(3, 4)).astype(np.float32) for m in ("audio", "visual")}
  th = {m: torch.tensor(hs[m], requires_grad=True) for m in hs}
  tloss = 10 * sum(torch.nn.functional.mse_loss(th[m], torch.tensor(ts[m]).detach())
                   for m in th)
  tloss.backward()
  jh = {m: jnp.asarray(v) for m, v in hs.items()}
  value, grads = jax.value_and_grad(loss)(jh, {m: jnp.asarray(v) for m, v in ts.items()})
  np.testing.assert_allclose(value, tloss.item(), rtol=1e-6)
  for m in hs:
    np.testing.assert_allclose(grads[m], th[m].grad.numpy(), rtol=1e-5, atol=1e-7)


def test_settings_are_checked():
  c = config_lib.base_config()
  c.method.name = "umt"
  with pytest.raises(ConfigError, match="config.method.teacher_audio is empty"):
    config_lib.validate(c)
  c.method.teacher_audio, c.method.teacher_visual, c.method.variant = "a", "v", "bb"
  with pytest.raises(ConfigError, match="variant='bb'"):
    config_lib.validate(c)


def test_missing_or_wrong_teacher_is_one_line_with_the_command(data_dir, unimodal_runs, tmp_path):
  c = _config(data_dir, unimodal_runs)
  c.method.teacher_visual = str(tmp_path / "nowhere")
  with pytest.raises(ConfigError, match=r"teacher_visual=.*not a finished run.*train it first: "
                     r"python -m avjax.main --config configs/unimodal_cremad.py:visual"):
    train_and_evaluate(c, str(tmp_path / "a"))
  c = _config(data_dir, unimodal_runs)
  c.method.teacher_audio = unimodal_runs["visual"]
  with pytest.raises(ConfigError, match="not a 'unimodal' audio run"):
    train_and_evaluate(c, str(tmp_path / "b"))
  c = _config(data_dir, unimodal_runs, **{"model.av_resnet.widths": (4, 8, 8, 16)})
  with pytest.raises(ConfigError, match="does not fit the student's"):
    train_and_evaluate(c, str(tmp_path / "c"))


def test_teachers_loaded_frozen_and_resume_bit_exact(data_dir, unimodal_runs, tmp_path,
                                                     monkeypatch):
  config = _config(data_dir, unimodal_runs, **{"train.checkpoint_every_steps": 4})
  resume = check_resume(config, tmp_path, monkeypatch, 8, "batch 2")
  a = resume.final
  # The teachers are the teacher runs' encoders (parameters and BatchNorm statistics), unchanged
  # by two epochs of eval-mode use.
  for m, run in unimodal_runs.items():
    saved = open_run(run, ["train"]).state
    teacher = a.method_state["teachers"][m]
    for part, tree in (("params", saved.params), ("model_state", saved.model_state)):
      assert teacher[part]
      for path, value in teacher[part].items():
        jax.tree.map(np.testing.assert_array_equal, jax.device_get(tree[path]), value)
  first = restore_final_state(resume.resumed, config)[0]
  jax.tree.map(np.testing.assert_array_equal, first.method_state, a.method_state)


def test_balancebenchmark_variant_updates_teacher_statistics(data_dir, unimodal_runs):
  for variant, changes in (("balancebenchmark", True),):  # 'intended': the test above.
    c = config_lib.validate(_config(data_dir, unimodal_runs, **{"method.variant": variant}))
    exp = setup(c, 6, 6)
    new, metrics = first_step(exp)
    before = jax.tree.leaves(exp.state.method_state["teachers"]["audio"]["model_state"])
    after = jax.tree.leaves(new.method_state["teachers"]["audio"]["model_state"])
    moved = any(np.any(np.asarray(x) != np.asarray(y)) for x, y in zip(before, after))
    assert moved == changes, variant
    assert {"loss_ce", "distill_audio", "distill_visual"} <= set(metrics)
    np.testing.assert_allclose(metrics["loss"], metrics["loss_ce"] + 10.0 * (
        metrics["distill_audio"] + metrics["distill_visual"]), rtol=1e-5)


@pytest.mark.parametrize("name", ["umt_cremad", "umt_ks"])
def test_configs(name):
  check_config(name, "umt")
  for arg in (None, "smoke"):
    c = config_lib.validate(load_config(name, arg))
    assert c.method.scaling == 10.0 and c.method.teacher_audio.endswith("audio" + (
        "_smoke" if arg else ""))


def test_smoke_config_trains_from_the_command_line(data_dir, unimodal_runs, tmp_path):
  smoke_cli("umt", data_dir, str(tmp_path / "run"),
            f"--config.method.teacher_audio={unimodal_runs['audio']}",
            f"--config.method.teacher_visual={unimodal_runs['visual']}",
            "--config.train.num_epochs=1")
