"""Parity of avjax's VAT pre-training with the PyTorch restatement (tests/convert/torch_vat.py) on
avjax's initialised parameters, at tiny sizes (width 32, one layer per encoder, 3 frames of 32x32,
a 32x32 spectrogram, float32).

Checked: the encoders' token sequences, [CLS] features and projected embeddings; the VAC loss and
its gradients given the same momentum features and queues; ALBEF's hard-negative sampling weights;
one whole training step through avjax's own jitted train step (temperature clamp, EMA of the
momentum copies, momentum features, VAC with soft targets at a ramped alpha, VAM, gradients of
every parameter, enqueue); and the AdamW update (decay mask, cosine schedule) on shared gradients.

Not checked: the hard negatives DRAWN. The two sides draw them with different RNGs (jax.random
.categorical on log weights vs torch.multinomial on weights), so the step test fixes the draw on
both sides (avjax's sampler is patched to return given indices) and the weights the draws come
from are compared instead.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

torch = pytest.importorskip("torch")

from avjax.methods.vat import vat_optimizer  # noqa: E402
from avjax.models import vat_objectives as L  # noqa: E402
from avjax.models.vat import model_section  # noqa: E402
from avjax.steps import make_train_step, setup  # noqa: E402
from tests.convert import torch_vat as ref  # noqa: E402

torch.set_num_threads(1)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZES = dict(width=32, heads=2, mlp_dim=64, visual_layers=1, audio_layers=1, fusion_layers=1,
             embed_dim=16)
FRAMES, IMAGE, AUDIO = 3, 32, (32, 32)
B, Q = 4, 8
STEPS_PER_EPOCH, STEP = 100, 50  # alpha ramped to 0.4 * 50 / 100 = 0.2.
NEG_VIDEO, NEG_AUDIO = np.array([2, 0, 3, 1]), np.array([1, 3, 0, 2])
ATOL = 1e-4
# The jitted steps compile with XLA's backend optimisations off: same semantics, faster compiles.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _config(optimizer: str = "adamw"):
  """configs/vat_pretrain.py at the tiny sizes, float32; 'sgd': plain SGD at lr 1 (the step's
  parameter change is then minus the gradient)."""
  spec = importlib.util.spec_from_file_location(
      "vat_pretrain_config", os.path.join(REPO, "configs", "vat_pretrain.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  c.model.vat = model_section("small", **SIZES, patch_size=16, audio_patch_size=(16, 16),
                              audio_size=AUDIO)
  c.input.num_frames, c.input.image_size = FRAMES, IMAGE
  c.method.queue_size, c.train.batch_size = Q, B
  c.train.compute_dtype = "float32"
  if optimizer == "sgd":
    c.optimizer.update(name="sgd", learning_rate=1.0, momentum=0.0, weight_decay=0.0,
                       schedule="constant")
  return c


def _flat(tree) -> dict[tuple[str, ...], np.ndarray]:
  """{path of dict keys: numpy array} of a params tree (nnx.State or dicts of them)."""
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    keys = tuple(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))
    out[keys] = np.asarray(leaf)
  return out


def _inputs(seed: int = 0):
  """avjax inputs (channels last) and the same arrays in torch's layout."""
  rng = np.random.default_rng(seed)
  audio = rng.standard_normal((B, *AUDIO, 1), np.float32)
  visual = rng.standard_normal((B, FRAMES, IMAGE, IMAGE, 3), np.float32)
  return ({"audio": audio, "visual": visual},
          (torch.from_numpy(audio.transpose(0, 3, 1, 2).copy()),
           torch.from_numpy(visual.transpose(0, 1, 4, 2, 3).copy())))


def _torch_model(momentum_flat=None, params_flat=None, queues=None) -> ref.VATPretrain:
  model = ref.VATPretrain(ref.settings(**SIZES, num_frames=FRAMES, image_size=IMAGE,
                                       patch_size=16, audio_size=AUDIO, audio_patch_size=(16, 16)),
                          queue_size=Q)
  if params_flat is not None:
    ref.load_avjax_params(model, params_flat, momentum_flat)
  if queues is not None:
    model.audio_queue.copy_(torch.from_numpy(np.asarray(queues[0])))
    model.visual_queue.copy_(torch.from_numpy(np.asarray(queues[1])))
  return model


@pytest.fixture(scope="module")
def exp():
  return setup(_config(), 1, steps_per_epoch=STEPS_PER_EPOCH)


def test_mapping_sets_every_parameter(exp):
  state = ref.avjax_to_state_dict(_flat(exp.state.params))
  model = _torch_model()
  assert set(state) == {n for n, _ in model.online_parameters()}
  assert sum(v.numel() for v in state.values()) == sum(
      x.size for x in jax.tree.leaves(exp.state.params))


def test_encoders_and_embeddings_match(exp):
  inputs, (audio, visual) = _inputs()

  @jax.jit
  def encode(params, inputs):
    model = nnx.merge(exp.graphs.train, params, exp.state.model_state)
    tokens = model.encode(inputs)
    return tokens, model.embed(tokens)

  tokens, embeds = encode(exp.state.params, inputs)
  model = _torch_model(params_flat=_flat(exp.state.params))
  with torch.no_grad():
    got_tokens = {"audio": model.audio_encoder(audio), "visual": model.visual_encoder(visual)}
    got_embeds = dict(zip(("audio", "visual"), model.embed(got_tokens["audio"],
                                                           got_tokens["visual"])))
  for m in ("audio", "visual"):
    assert got_tokens[m].shape == tokens[m].shape
    np.testing.assert_allclose(got_tokens[m][:, 0].numpy(), tokens[m][:, 0], atol=ATOL,
                               err_msg=f"{m} [CLS]")
    np.testing.assert_allclose(got_tokens[m].numpy(), tokens[m], atol=ATOL, err_msg=f"{m} tokens")
    np.testing.assert_allclose(got_embeds[m].numpy(), embeds[m], atol=ATOL, err_msg=f"{m} embed")


def test_vac_loss_and_gradients_match(exp):
  """The model's online features against shared momentum features and avjax's initial queues."""
  inputs, _ = _inputs(1)

  @jax.jit
  def embed(params, inputs):
    model = nnx.merge(exp.graphs.train, params, exp.state.model_state)
    return model.embed(model.encode(inputs))

  feats = embed(exp.state.params, inputs)
  a, v = np.asarray(feats["audio"]), np.asarray(feats["visual"])
  rng = np.random.default_rng(2)
  unit = lambda x: (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
  a_m = unit(a + 0.3 * rng.standard_normal(a.shape))
  v_m = unit(v + 0.3 * rng.standard_normal(v.shape))
  ms = exp.state.method_state
  qa, qv = np.array(ms["queue_audio"]), np.array(ms["queue_visual"])
  temp, alpha = 0.07, 0.4

  def jax_loss(a, v, t):
    return L.vac_loss(a, v, a_m, v_m, qa, qv, t, alpha)[0]

  want, want_grads = jax.value_and_grad(jax_loss, argnums=(0, 1, 2))(a, v, jnp.float32(temp))
  ta, tv = torch.tensor(a, requires_grad=True), torch.tensor(v, requires_grad=True)
  tt = torch.tensor(temp, requires_grad=True)
  got, s_a2v, s_v2a = ref.vac_loss(ta, tv, torch.from_numpy(a_m), torch.from_numpy(v_m),
                                   torch.from_numpy(qa), torch.from_numpy(qv), tt, alpha)
  got.backward()
  assert s_a2v.shape == s_v2a.shape == (B, B + Q)
  np.testing.assert_allclose(got.item(), float(want), rtol=1e-5)
  for name, g, w in (("a", ta.grad, want_grads[0]), ("v", tv.grad, want_grads[1]),
                     ("temp", tt.grad, want_grads[2])):
    np.testing.assert_allclose(g.numpy(), w, rtol=1e-4, atol=1e-6, err_msg=name)


def test_hard_negative_weights_match():
  sim = np.random.default_rng(3).normal(size=(5, 5)).astype(np.float32) / 0.07
  want = np.exp(np.asarray(L.negative_log_weights(jnp.asarray(sim))))
  got = ref.negative_weights(torch.from_numpy(sim)).numpy()
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  assert np.all(np.diag(got) == 0)
  torch.manual_seed(0)
  neg_video, neg_audio = ref.sample_hard_negatives(torch.from_numpy(sim), torch.from_numpy(sim.T))
  assert np.all(neg_video.numpy() != np.arange(5)) and np.all(neg_audio.numpy() != np.arange(5))


def test_train_step_matches_with_fixed_negatives(monkeypatch):
  """avjax's jitted train step (SGD at lr 1, so new params = params - grads) against the torch
  step on the same weights, momentum copies (made different from the online ones), queues and
  negatives, at a step where the ramped alpha is 0.2."""
  cfg = _config("sgd")
  exp = setup(cfg, 1, steps_per_epoch=STEPS_PER_EPOCH)
  params = exp.state.params
  momentum = jax.tree.map(lambda x: 1.05 * x + 0.01, exp.state.method_state["momentum"])
  state = exp.state.replace(step=jnp.int32(STEP),
                            method_state={**exp.state.method_state, "momentum": momentum})
  ms = state.method_state
  params_flat, momentum_flat = _flat(params), _flat(momentum)
  queues = (np.array(ms["queue_audio"]), np.array(ms["queue_visual"]))
  monkeypatch.setattr(L, "sample_hard_negatives",
                      lambda rng, a2v, v2a: (jnp.asarray(NEG_VIDEO), jnp.asarray(NEG_AUDIO)))
  inputs, (audio, visual) = _inputs(4)
  batch = {**inputs, "modality_mask": np.ones((B, 2), np.float32)}
  step = jax.jit(make_train_step(exp.graphs, exp.tx, exp.method, exp.steps_per_epoch),
                 compiler_options=FAST_COMPILE)
  new_state, metrics = step(state, batch, jnp.int32(0))
  assert float(metrics["nonfinite"]) == 0 and float(metrics["alpha"]) == pytest.approx(0.2)

  model = _torch_model(momentum_flat, params_flat, queues)
  opt = torch.optim.SGD([p for _, p in model.online_parameters()], lr=1.0)
  negatives = (torch.from_numpy(NEG_VIDEO), torch.from_numpy(NEG_AUDIO))
  alpha = torch.tensor(ref.ramped_alpha(0.4, STEP, STEPS_PER_EPOCH))
  loss, parts = ref.train_step(model, opt, None, audio, visual, alpha,
                               functools.partial(model.pretrain_loss, negatives=negatives))
  for name, got in (("vac_loss", parts["vac"]), ("vam_loss", parts["vam"]), ("loss", loss)):
    np.testing.assert_allclose(got.item(), float(metrics[name]), rtol=1e-5, err_msg=name)

  want_grads = ref.avjax_to_state_dict(
      {k: params_flat[k] - v for k, v in _flat(new_state.params).items()})
  for name, p in model.online_parameters():
    want = want_grads[name].numpy()
    # Relative to the tensor's largest entry (some fusion gradients are ~1e-6 at init), plus the
    # rounding of params - grads near 1 (LayerNorm scales) in float32.
    np.testing.assert_allclose(p.grad.numpy(), want, atol=1e-4 * np.abs(want).max() + 2e-7,
                               rtol=0, err_msg=f"gradient of {name}")
  want_momentum = ref.avjax_to_state_dict(_flat(new_state.method_state["momentum"]))
  for name, p in model.named_parameters():
    if name.split(".", 1)[0].endswith("_m"):
      key = name.split(".", 1)[0][:-2] + "." + name.split(".", 1)[1]
      np.testing.assert_allclose(p.detach().numpy(), want_momentum[key].numpy(), atol=1e-6,
                                 err_msg=name)
  np.testing.assert_allclose(model.audio_queue.numpy(), new_state.method_state["queue_audio"],
                             atol=ATOL)
  np.testing.assert_allclose(model.visual_queue.numpy(), new_state.method_state["queue_visual"],
                             atol=ATOL)
  assert int(model.queue_ptr) == int(new_state.method_state["queue_ptr"]) == B


def test_adamw_updates_match(exp):
  """Three AdamW steps (no decay on biases / LayerNorm, cosine lr) on the same random gradients."""
  cfg = _config()
  tx = vat_optimizer(cfg, STEPS_PER_EPOCH, cfg.method.min_learning_rate)
  params = jax.tree.map(jnp.asarray, exp.state.params)
  opt_state = tx.init(params)

  @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
  def update(params, opt_state, grads):
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  model = _torch_model(params_flat=_flat(params))
  opt, sched = ref.make_optimizer(model, lr=cfg.optimizer.learning_rate,
                                  weight_decay=cfg.optimizer.weight_decay,
                                  total_steps=cfg.train.num_epochs * STEPS_PER_EPOCH,
                                  min_lr=cfg.method.min_learning_rate)
  leaves, treedef = jax.tree.flatten(params)
  online = dict(model.online_parameters())
  for i in range(3):
    keys = jax.random.split(jax.random.key(i), len(leaves))
    grads = jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape) * 1e-2
                                         for k, x in zip(keys, leaves)])
    params, opt_state = update(params, opt_state, grads)
    for name, g in ref.avjax_to_state_dict(_flat(grads)).items():
      online[name].grad = g
    opt.step()
    sched.step()
  for name, want in ref.avjax_to_state_dict(_flat(params)).items():
    np.testing.assert_allclose(online[name].detach().numpy(), want.numpy(), atol=1e-6,
                               err_msg=name)
