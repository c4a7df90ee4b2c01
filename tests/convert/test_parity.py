"""Numerical parity with a PyTorch restatement of the reference AVClassifier (tests/convert/
torch_reference.py): converted weights give the same logits (eval mode, running BN statistics) and the
same gradients (train mode, batch statistics), and a converted checkpoint predicts as PyTorch does
through `python -m avjax.convert` and `python -m avjax.evaluate`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

torch = pytest.importorskip("torch")

from avjax.convert import nnx_to_state_dict, state_dict_to_nnx  # noqa: E402
from avjax.convert.resnet_av import to_torch, torch_name  # noqa: E402
from avjax.models.classifier import AVClassifier  # noqa: E402
from tests.convert import torch_reference as ref  # noqa: E402
from tests.helpers import run_cli  # noqa: E402

torch.set_num_threads(1)  # Tiny models: threads only contend with JAX's on a small CPU.

WIDTHS = (8, 16, 16, 16)
N = 5
# (fusion, form, condition, cosine_scale, visual_channels)
CASES = {
    "sum": ("sum", None, None, None, 3),
    "concat": ("concat", None, None, None, 3),
    "concat_flow": ("concat", None, None, None, 2),
    "film_ogm_ge_audio": ("film", "ogm_ge", "audio", None, 3),
    "film_ogm_ge_visual": ("film", "ogm_ge", "visual", None, 3),
    "gated_ogm_ge_audio": ("gated", "ogm_ge", "audio", None, 3),
    "gated_ogm_ge_visual": ("gated", "ogm_ge", "visual", None, 3),
    "film_mmcosine": ("film", "mmcosine", None, None, 3),
    "gated_mmcosine": ("gated", "mmcosine", None, None, 3),
    "concat_cosine": ("concat", None, None, 10.0, 3),
    "film_mmcosine_cosine": ("film", "mmcosine", None, 50.0, 3),
}


def _pair(case: str, seed: int = 0):
  """(torch reference with random weights, avjax model with them converted)."""
  fusion, form, condition, scale, channels = CASES[case]
  torch_model = ref.randomize(
      ref.AVClassifier(N, fusion, form or "ogm_ge", condition or "audio", WIDTHS, channels), seed)
  kwargs = {}
  if form:
    kwargs["form"] = form
  if condition:
    kwargs["condition"] = condition
  if scale:
    kwargs["cosine_scale"] = scale
  model = AVClassifier(num_classes=N, fusion=fusion, fusion_kwargs=kwargs, widths=WIDTHS,
                       visual_channels=channels, rngs=nnx.Rngs(seed + 1))
  state_dict_to_nnx(model, {k: v.numpy() for k, v in torch_model.state_dict().items()})
  return torch_model, model, scale


def _inputs(channels: int, seed: int = 0):
  """Torch-layout audio (2, 1, 40, 30) and frames (2, C, T=2, 32, 32), and the avjax (NHWC) ones."""
  rng = np.random.default_rng(seed)
  audio = rng.normal(size=(2, 1, 40, 30)).astype(np.float32)
  frames = rng.normal(size=(2, channels, 2, 32, 32)).astype(np.float32)
  jax_inputs = {"audio": jnp.asarray(audio.transpose(0, 2, 3, 1)),
                "visual": jnp.asarray(frames.transpose(0, 2, 3, 4, 1))}
  return torch.from_numpy(audio), torch.from_numpy(frames), jax_inputs


def _close(actual, expected, name: str, rtol: float = 1e-4, atol: float = 1e-4) -> None:
  np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol,
                             err_msg=name)


@pytest.mark.parametrize("case", list(CASES))
def test_eval_logits_match(case):
  torch_model, model, scale = _pair(case)
  audio, frames, inputs = _inputs(CASES[case][4])
  torch_model.eval()
  model.eval()
  with torch.no_grad():
    expected = ref.outputs(torch_model, audio, frames, scale)
  out = model(inputs)
  _close(out.logits, expected["logits"], "fused")
  _close(out.modality_logits["audio"], expected["audio"], "audio")
  _close(out.modality_logits["visual"], expected["visual"], "visual")
  assert np.abs(expected["logits"].numpy()).max() > 0.1  # Not a degenerate comparison.
  # The exporter is the inverse: the avjax model's state dict loads strictly into PyTorch.
  exported = nnx_to_state_dict(model, num_batches_tracked=7)
  torch_model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in exported.items()},
                              strict=True)


@pytest.mark.parametrize("case", ["concat", "film_ogm_ge_visual", "gated_ogm_ge_audio",
                                  "gated_mmcosine", "concat_cosine"])
def test_train_gradients_match(case):
  torch_model, model, scale = _pair(case, seed=3)
  audio, frames, inputs = _inputs(CASES[case][4], seed=1)
  labels = np.array([1, 3])
  torch_model.train()
  model.train()
  logits = ref.outputs(torch_model, audio, frames, scale)["logits"]
  torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels)).backward()

  graph, params, rest = nnx.split(model, nnx.Param, ...)

  def loss_fn(params, rest):  # As avjax.steps' train step: BatchNorm statistics come back as aux.
    m = nnx.merge(graph, params, rest, copy=True)
    loss = optax.softmax_cross_entropy_with_integer_labels(m(inputs).logits, labels).mean()
    return loss, nnx.split(m, nnx.Param, ...)[2]

  grads, rest = jax.grad(loss_fn, has_aux=True)(params, rest)
  nnx.update(model, rest)
  torch_grads = {k: p.grad for k, p in torch_model.named_parameters()}
  compared = skipped = 0
  for path, g in nnx.to_flat_state(grads):
    name = torch_name(path)
    expected = torch_grads[name]
    if expected is None:  # The cosine head never uses fc_out.bias.
      assert scale is not None and name.endswith("fc_out.bias"), name
      np.testing.assert_array_equal(np.asarray(g.get_value()), 0.0)
      skipped += 1
      continue
    expected = expected.numpy()
    scale_of = np.abs(expected).max() + 1e-6
    _close(to_torch(np.asarray(g.get_value())), expected, name, rtol=1e-3, atol=1e-3 * scale_of)
    compared += 1
  assert compared + skipped == len(torch_grads) == 2 * 60 + len(list(
      torch_model.fusion_module.parameters()))
  # Batch statistics moved the running means identically (momentum 0.1 <=> 0.9).
  moved = nnx_to_state_dict(model)
  for k, v in torch_model.state_dict().items():
    if k.endswith("running_mean"):
      _close(moved[k], v.numpy(), k, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------- end to end


def _config_args(data_dir: str, *extra: str) -> list[str]:
  return ["--config", "configs/demo.py:smoke", f"--config.model.av_resnet.widths={WIDTHS}",
          f"--config.dataset.data_dir={data_dir}",
          "--config.dataset.build_overrides.num_train=32",
          "--config.dataset.build_overrides.num_validation=16",
          "--config.dataset.build_overrides.num_test=16", *extra]


def _torch_logits(torch_model, workdir: str, scale: float | None) -> dict[str, np.ndarray]:
  """The reference model on the workdir's test examples, through avjax's eval transform."""
  from avjax import data
  from avjax.evaluate import load_workdir_config
  from avjax.steps import normalize_inputs
  config = load_workdir_config(workdir)
  source = data.open_dataset(config.dataset, ["test"]).sources["test"]
  transform = data.make_transform(config.input, train=False)
  examples = [transform(dict(source[i])) for i in range(len(source))]
  visual = np.asarray(normalize_inputs({"visual": np.stack([e["visual"] for e in examples])},
                                       config.input)["visual"])
  audio = torch.from_numpy(np.stack([e["audio"] for e in examples]).transpose(0, 3, 1, 2))
  frames = torch.from_numpy(visual.transpose(0, 4, 1, 2, 3))
  torch_model.eval()
  with torch.no_grad():
    out = ref.outputs(torch_model, audio, frames, scale)
  return {k: v.numpy() for k, v in out.items()}


def _check_predictions(predictions: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
  order = np.argsort(predictions["index"])
  assert len(order) == len(expected["logits"]) == 16
  for key, name in (("logits", "logits"), ("logits_audio", "audio"), ("logits_visual", "visual")):
    _close(predictions[key][order], expected[name], key)
  top2 = np.sort(expected["logits"], -1)[:, -2:]
  clear = top2[:, 1] - top2[:, 0] > 1e-3
  np.testing.assert_array_equal(predictions["logits"][order].argmax(-1)[clear],
                                expected["logits"].argmax(-1)[clear])


def test_pth_checkpoint_predicts_as_pytorch(tmp_path, data_dir):
  """A DataParallel-trained OGM-GE-style .pth ({'model': state_dict, ...}) through both CLIs."""
  torch_model = ref.randomize(ref.AVClassifier(6, "concat", widths=WIDTHS), seed=5)
  state = {f"module.{k}": v for k, v in torch_model.state_dict().items()}
  torch.save({"saved_epoch": 10, "fusion": "concat", "model": state}, tmp_path / "model.pth")
  workdir = str(tmp_path / "converted")
  result = run_cli("avjax.convert", "--checkpoint", str(tmp_path / "model.pth"),
                *_config_args(data_dir), f"--workdir={workdir}")
  assert "6 classes" in result.stdout
  report = run_cli("avjax.evaluate", f"--workdir={workdir}",
                f"--predictions={tmp_path / 'predictions.npz'}").stdout
  for row in ("fused", "audio", "visual"):
    assert row in report
  assert "checkpoint 0, split 'test', 16 examples" in report
  with np.load(tmp_path / "predictions.npz") as f:
    predictions = dict(f)
  _check_predictions(predictions, _torch_logits(torch_model, workdir, None))


def test_npz_checkpoint_with_cosine_head_predicts_as_pytorch(tmp_path, data_dir):
  """.npz (no PyTorch needed to convert), sum fusion, MMCosine's cosine head from the method."""
  torch_model = ref.randomize(ref.AVClassifier(6, "sum", widths=WIDTHS), seed=6)
  np.savez(tmp_path / "model.npz", **{k: v.numpy() for k, v in torch_model.state_dict().items()})
  workdir = str(tmp_path / "converted")
  run_cli("avjax.convert", "--checkpoint", str(tmp_path / "model.npz"),
       *_config_args(data_dir, "--config.model.fusion=sum", "--config.method.name=mmcosine"),
       f"--workdir={workdir}")
  from avjax.evaluate import evaluate_workdir
  step, split, predictions, _ = evaluate_workdir(workdir)
  assert (step, split) == (0, "test")
  _check_predictions(predictions, _torch_logits(torch_model, workdir, 10.0))  # Default scaling.
