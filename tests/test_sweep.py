"""Sweeps (avjax/sweep.py): the plan covers every registered method, and launched runs are skipped
when finished, reported when failed, without stopping the others (submitit's local executor and
the local launcher)."""

import os

import ml_collections
import pytest

from avjax import sweep as sweep_lib
from avjax import sweep_plan
from avjax.methods import METHODS
from avjax.registry import ConfigError
from tests.helpers import REPO


def _sweep(arg: str = "smoke") -> ml_collections.ConfigDict:
  path = os.path.join(REPO, "configs", "sweeps", "synthetic.py")
  return sweep_plan.load_module_config(f"{path}:{arg}" if arg else path)


def test_synthetic_sweep_covers_every_registered_method():
  sweep = _sweep("")
  assert len(sweep.datasets) >= 2 and tuple(sweep.seeds) == (0, 1, 2)
  runs, excluded = sweep_plan.plan(sweep, REPO)
  planned = {r.entry for r in runs}
  assert planned == set(METHODS.names()) | set(sweep.variants) and not excluded
  vat = next(r for r in runs if r.method == "vat_finetune")  # Fine-tunes the pre-training run.
  assert dict(vat.needs) == {"init_from": vat.name.replace("__vat_finetune__", "__vat_pretrain__")}
  for entry in {r.entry for r in runs}:  # Every regime and seed of a planned entry.
    assert sum(r.entry == entry for r in runs) == len(sweep.datasets) * len(sweep.seeds) * len(
        sweep.fusions)
  assert len({r.name for r in runs}) == len(runs)
  order = [r.name for r in runs]
  for run in runs:  # Chained runs come after what they need, which is planned.
    assert all(order.index(other) < order.index(run.name) for _, other in run.needs)
  umt = next(r for r in runs if r.method == "umt")
  assert dict(umt.needs) == {
      "method.umt.teacher_audio": umt.name.replace("__umt__", "__unimodal_audio__"),
      "method.umt.teacher_visual": umt.name.replace("__umt__", "__unimodal__")}
  config = sweep_plan.build_config(umt, "/sweep/runs")
  assert config.method.teacher_audio == "/sweep/runs/" + dict(umt.needs)[
      "method.umt.teacher_audio"]


@pytest.mark.parametrize("needs, message", [
    ({"a": {"init_from": "b"}, "b": {"init_from": "a"}}, "cycle: a -> b -> a"),
    ({"a": {"init_from": "c"}, "c": {"init_from": "a"}}, "needs 'c', which is not in `methods`"),
])
def test_chained_entries_refuse_cycles_and_unknown_entries(needs, message):
  sweep = _sweep()
  sweep.methods = ("baseline", "a", "b")
  sweep.variants = {"a": {"method": "baseline"}, "b": {"method": "baseline"}}
  sweep.needs = needs
  with pytest.raises(ConfigError, match=message):
    sweep_plan.entries(sweep)
  sweep.methods = ("baseline,nonsense",)  # As --config.methods=baseline,nonsense gives it.
  with pytest.raises(ConfigError, match="'nonsense' is neither a method"):
    sweep_plan.entries(sweep)
  sweep.methods = ("baseline", "ogm_gee")
  with pytest.raises(ConfigError, match="Did you mean 'ogm_ge'"):
    sweep_plan.entries(sweep)


def test_overrides_refuse_unknown_keys():
  sweep = _sweep()
  sweep.overrides["train"]["num_epoch"] = 3
  with pytest.raises(ConfigError, match="train.num_epoch"):
    sweep_plan.plan(sweep, REPO)
  from avjax.config import base_config
  with pytest.raises(ConfigError, match="config.model.widths moved to config.model.av_resnet.widths"):
    sweep_plan.apply_overrides(base_config(), {"model": {"widths": (4, 8, 8, 8)}})


def test_an_evaluator_set_to_none_is_removed():
  from avjax.config import base_config
  c = base_config()
  c.evals.ablation = ml_collections.ConfigDict()
  sweep_plan.apply_overrides(c, {"evals": {"ablation": None, "robustness": None}})
  assert "ablation" not in c.evals and "robustness" not in c.evals and "report" in c.evals


def _tiny_sweep(data_dir: str) -> ml_collections.ConfigDict:
  """baseline on one regime that trains, and one whose batch exceeds its training split (fails
  when the run starts, after validation)."""
  sweep = _sweep()
  sweep.methods = ("baseline",)
  sweep.seeds = (0,)
  sweep.profile = False
  sweep.overrides["dataset"]["data_dir"] = data_dir
  sweep.overrides["evals"] = {}
  sweep.datasets = {"ok": {"dataset": {"config": "audio_dominant"}},
                    "broken": {"train": {"batch_size": 256}}}
  sweep.slurm = {"timeout_min": 10}
  return sweep


def test_submitit_local_skips_finished_and_reports_failed_runs(data_dir, tmp_path):
  """Also a chained run: it starts from its dependency's workdir once that is done, and is
  reported (not started) where its dependency failed."""
  pytest.importorskip("submitit")
  sweep, root = _tiny_sweep(data_dir), str(tmp_path / "sweep")
  sweep.methods = ("baseline", "warm")
  sweep.variants = {"warm": {"method": "baseline", "settings": {"train": {"num_epochs": 2}}}}
  sweep.needs = {"warm": {"init_from": "baseline"}}
  results = sweep_lib.launch(sweep, root, "submitit_local", base_dir=REPO)
  ok, broken = "ok__concat__baseline__seed0", "broken__concat__baseline__seed0"
  assert results[ok]["state"] == "done" and 0 <= results[ok]["final"]["accuracy"] <= 1
  assert results[broken]["state"] == "failed"
  assert "fewer than one batch" in results[broken]["error"]
  assert sweep_lib.is_done(os.path.join(root, "runs", ok))
  warm = results["ok__concat__warm__seed0"]
  assert warm["state"] == "done"
  saved = sweep_lib.read_json(os.path.join(root, "runs", "ok__concat__warm__seed0", "config.json"))
  assert saved["init_from"] == os.path.abspath(os.path.join(root, "runs", ok))
  assert results["broken__concat__warm__seed0"] == {
      "state": "failed", "seconds": 0.0, "error": f"needs run {broken}, which has not finished; "
                                                    "re-launch the sweep once it has"}

  again = sweep_lib.launch(sweep, root, "submitit_local", base_dir=REPO)
  assert again[ok] == {"state": "skipped"}  # Finished: not run again.
  assert again["ok__concat__warm__seed0"] == {"state": "skipped"}
  assert again[broken]["state"] == "failed"  # Retried (it would resume), and reported again.


def test_local_launcher_reports_a_failed_run(data_dir, tmp_path):
  sweep = _tiny_sweep(data_dir)
  sweep.datasets = {"broken": {"train": {"batch_size": 256}}}
  results = sweep_lib.launch(sweep, str(tmp_path / "sweep"), "local", base_dir=REPO)
  status = results["broken__concat__baseline__seed0"]
  assert status["state"] == "failed" and "fewer than one batch" in status["error"]


@pytest.mark.parametrize("name", ["cremad", "ks"])
def test_real_data_sweeps_plan_without_data(name):
  """Their runs validate (no data is read): every registered method runs or is excluded."""
  sweep = sweep_plan.load_module_config(os.path.join(REPO, "configs", "sweeps", f"{name}.py"))
  runs, excluded = sweep_plan.plan(sweep, REPO)
  methods = {r.method for r in runs} | {k.split("/")[-1] for k in excluded}
  assert methods == set(METHODS.names()) and len({r.seed for r in runs}) == 3
  config = sweep_plan.build_config(next(r for r in runs if r.method == "baseline"), "runs")
  assert (config.dataset.val_split, config.train.select_on) == ("heldout", "validation")


def test_overrides_and_method_settings_from_paper_configs():
  from avjax.config import base_config
  c = base_config()
  sweep_plan.apply_overrides(c, {"input": {"crop_scale": [0.5, 1.0]},
                                "method": {"ogm_ge": {"alpha": 0.3}}})
  assert c.input.crop_scale == (0.5, 1.0) and c.method.ogm_ge.alpha == 0.3
  settings = sweep_plan.method_settings_from_configs("configs/{method}_cremad.py",
                                                     ["ogm_ge", "baseline"], REPO)
  assert settings == {"ogm_ge": {"method": {"ogm_ge": {
      "alpha": 0.8, "modulation_starts": 0, "modulation_ends": 50}}}}


def test_local_launchers_share_a_sweep(data_dir, tmp_path):
  """A run claimed by another launcher (its OS lock held) is left to it, not run twice."""
  import fcntl  # pylint: disable=import-outside-toplevel
  sweep, root = _tiny_sweep(data_dir), str(tmp_path / "sweep")
  sweep.datasets = {"ok": {"dataset": {"config": "audio_dominant"}}}
  run_dir = os.path.join(root, "runs", "ok__concat__baseline__seed0")
  os.makedirs(run_dir)
  with open(os.path.join(run_dir, sweep_lib.CLAIM_FILE), "w") as held:
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # The other launcher's claim.
    results = sweep_lib.launch(sweep, root, "local", base_dir=REPO)
  assert results == {"ok__concat__baseline__seed0": {
      "state": "elsewhere", "error": "another launcher runs it"}}
  assert not os.path.exists(os.path.join(run_dir, sweep_lib.STATUS_FILE))
