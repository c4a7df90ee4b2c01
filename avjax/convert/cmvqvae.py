"""Name mapping and layouts between CM-VQVAE's PyTorch model.py and avjax's `cmvqvae` model.

Reference names (CyberAgentAILab/CM-VQVAE, CREMA-D/model.py; 'image' is avjax's 'visual'), with
<m> = visual / audio and <r> = image / audio:

  _encoder_<r>._conv_{1,2,3}, _bn_{1,2}            <-> <m>_encoder.conv_{1,2,3}, bn_{1,2}
  <x>._residual_stack._layers.i._block.{0,2,3,5}    <-> <x>.residual_stack.layers.i.{bn_1,conv_1,
                                                       bn_2,conv_2}
  <x>._residual_stack._bn                           <-> <x>.residual_stack.bn
  _pre_vq_conv_<r>                                  <-> <m>_pre_vq
  _vq_vae_<r>._embedding.weight, _ema_w, _ema_cluster_size
                                                    <-> <m>_vq.codebook, ema_w, cluster_size
  _decoder_<r>._conv_1, _conv_trans_k               <-> <m>_decoder.conv_1, conv_trans.(k-1)
  _decoder_image._bn, _decoder_audio._bn_k          <-> visual_decoder.bns.0, audio_decoder.bns.(k-1)
  _classifier._conv1, _bn_1, _conv2, _fc1, _bn_2, _fc2
                                                    <-> classifier.conv_1, bn_1, conv_2, fc_1, bn_2,
                                                       fc_2
  _classifier.private_shared_mask (2D,1,1)          <-> classifier.mask (2D,)
  ablation 4 (Model_Comparison): _resnet18_1.* (image) / _resnet18_2.* (audio) <->
  <m>_encoder.backbone.* (torchvision names, as avjax.convert.resnet_av); _fc1, _bn, _fc2 <->
  fusion.fc_1, bn, fc_2.

Layouts: conv (O,I,kh,kw) -> (kh,kw,I,O); ConvTranspose (I,O,kh,kw) -> (kh,kw,I,O) flipped in kh, kw
(lax.conv_transpose correlates, PyTorch's transposed conv is the adjoint of a correlation); Linear
(out,in) -> (in,out); BN weight/bias/running_mean/running_var -> scale/bias/mean/var; codebooks, EMA
sums and cluster sizes as they are. Dropout / randomizer RNG states have no counterpart and stay
fresh; num_batches_tracked is ignored.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import ml_collections
import numpy as np
from flax import nnx

from avjax.convert.resnet_av import ConversionError, fill_model, strip_prefixes
from avjax.models.vq import VQState

IGNORED = ("num_batches_tracked",)
_LEAVES = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
           "var": "running_var", "codebook": "_embedding.weight", "ema_w": "_ema_w",
           "cluster_size": "_ema_cluster_size", "mask": "private_shared_mask"}
_MOD = {"visual": "image", "audio": "audio"}
_BLOCK = {"bn_1": "0", "conv_1": "2", "bn_2": "3", "conv_2": "5"}
_SOLVER = {"conv_1": "_conv1", "conv_2": "_conv2", "fc_1": "_fc1", "fc_2": "_fc2"}
_MLP = {"fc_1": "_fc1", "bn": "_bn", "fc_2": "_fc2"}  # Ablation 4's MLPHead (ResNetPair.fusion).
_RESNET = {"down_conv": "downsample.0", "down_bn": "downsample.1"}


def is_cmvqvae(state_dict: Mapping[str, Any]) -> bool:
  """Whether a state dict comes from CM-VQVAE's model.py (any ablation)."""
  return any(k.startswith(("_encoder_image.", "_resnet18_1.", "_classifier."))
             for k in strip_prefixes(state_dict))


def _stack(parts: list[str]) -> list[str]:
  """Residual-stack path parts (after 'residual_stack') -> reference parts."""
  if parts[0] == "bn":
    return ["_bn"]
  return ["_layers", parts[1], "_block", _BLOCK[parts[2]]]


def torch_name(path: tuple[Any, ...]) -> str | None:
  """avjax path -> reference name; None for variables with no counterpart (RNG states)."""
  parts = [str(p) for p in path]
  leaf = parts[-1]
  if "rngs" in parts or "mask_rngs" in parts or leaf not in _LEAVES:
    return None
  head, body = parts[0], parts[1:-1]
  if head == "fusion":
    return f"{_MLP[body[0]]}.{_LEAVES[leaf]}"
  if head == "classifier":
    if leaf == "mask":
      return "_classifier.private_shared_mask"
    if body[0] == "residual_stack":
      return ".".join(["_classifier", "_residual_stack", *_stack(body[1:]), _LEAVES[leaf]])
    return f"_classifier.{_SOLVER.get(body[0], '_' + body[0])}.{_LEAVES[leaf]}"
  modality, kind = head.split("_", 1)
  if kind == "encoder" and body and body[0] == "backbone":  # Ablation 4: torchvision ResNet-18.
    net = "_resnet18_1" if modality == "visual" else "_resnet18_2"
    return ".".join([net, *[_RESNET.get(p, p) for p in body[1:]], _LEAVES[leaf]])
  if kind == "pre_vq":
    return f"_pre_vq_conv_{_MOD[modality]}.{_LEAVES[leaf]}"
  if kind == "vq":
    return f"_vq_vae_{_MOD[modality]}.{_LEAVES[leaf]}"
  out = [f"_{kind}_{_MOD[modality]}"]
  if body[0] == "residual_stack":
    out += ["_residual_stack", *_stack(body[1:])]
  elif body[0] == "conv_trans":
    out.append(f"_conv_trans_{int(body[1]) + 1}")
  elif body[0] == "bns":
    out.append("_bn" if modality == "visual" else f"_bn_{int(body[1]) + 1}")
  else:
    out.append("_" + body[0])
  return ".".join(out + [_LEAVES[leaf]])


def from_torch(value: np.ndarray, path: tuple[Any, ...]) -> np.ndarray:
  """Reference layout -> avjax layout for the variable at `path`."""
  leaf = str(path[-1])
  if leaf in ("codebook", "ema_w", "cluster_size"):
    return value
  if leaf == "mask":
    return value.reshape(-1)
  if value.ndim == 4 and "conv_trans" in map(str, path):
    return np.transpose(value, (2, 3, 0, 1))[::-1, ::-1]
  if value.ndim == 4:
    return np.transpose(value, (2, 3, 1, 0))
  if value.ndim == 2:
    return value.T
  return value


def to_torch(value: np.ndarray, path: tuple[Any, ...]) -> np.ndarray:
  """avjax layout -> reference layout (the inverse of `from_torch`)."""
  leaf = str(path[-1])
  if leaf in ("codebook", "ema_w", "cluster_size"):
    return value
  if leaf == "mask":
    return value.reshape(-1, 1, 1)
  if value.ndim == 4 and "conv_trans" in map(str, path):
    return np.transpose(value[::-1, ::-1], (2, 3, 0, 1))
  if value.ndim == 4:
    return np.transpose(value, (3, 2, 0, 1))
  if value.ndim == 2:
    return value.T
  return value


def _variables(model: nnx.Module) -> Iterator[tuple[str, tuple[Any, ...], nnx.Variable]]:
  """(reference name, path, variable) for every convertible variable, each name once."""
  seen: dict[str, tuple[Any, ...]] = {}
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat, VQState))):
    name = torch_name(path)
    if name is None:
      continue
    if name in seen:
      raise ConversionError(f"avjax variables {seen[name]} and {path} both map to {name!r}.")
    seen[name] = path
    yield name, path, var


def nnx_to_state_dict(model: nnx.Module, *,
                      num_batches_tracked: int | None = None) -> dict[str, np.ndarray]:
  """The model's variables as a reference (PyTorch-layout) state dict; with `num_batches_tracked`,
  each BatchNorm also gets that counter, so `load_state_dict(strict=True)` accepts it."""
  out: dict[str, np.ndarray] = {}
  for name, path, var in _variables(model):
    out[name] = np.ascontiguousarray(to_torch(np.asarray(var.get_value()), path))
    if num_batches_tracked is not None and name.endswith(".running_mean"):
      out[name[: -len("running_mean")] + IGNORED[0]] = np.asarray(num_batches_tracked, np.int64)
  return out


def state_dict_to_nnx(model: nnx.Module, state_dict: Mapping[str, Any]) -> None:
  """Fills every parameter, BatchNorm statistic and VQ state of `model` (in place) from a reference
  state dict; all or nothing: a ConversionError lists missing, unexpected and mismatched names."""
  tensors = {k: np.asarray(v) for k, v in strip_prefixes(state_dict).items()
             if k.rsplit(".", 1)[-1] not in IGNORED}

  def convert(name, path, value, target):
    converted = from_torch(value, path) if value.size == int(np.prod(target)) else value
    if converted.shape != target:
      return None, to_torch(np.zeros(target, np.int8), path).shape
    return converted, None

  fill_model(model, _variables(model), tensors, convert,
             "The state dict does not fit the avjax cmvqvae model:", hint=describe(tensors))


def infer_settings(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """The config.model.cmvqvae settings a reference state dict determines (keys it cannot tell are
  absent; 'ablation' is a tuple of the possible values: 0 and 3, 1 and 2 share their names)."""
  t = {k: tuple(np.shape(v)) for k, v in strip_prefixes(state_dict).items()}
  out: dict[str, Any] = {}
  fc2 = t.get("_fc2.weight") or t.get("_classifier._fc2.weight")
  if fc2:
    out["num_classes"] = fc2[0]
  if "_resnet18_1.conv1.weight" in t:
    out["ablation"] = (4,)
    out["widths"] = tuple(t[f"_resnet18_1.layer{i}.0.conv1.weight"][0] for i in range(1, 5)
                          if f"_resnet18_1.layer{i}.0.conv1.weight" in t)
    if "_fc1.weight" in t:
      out["fc_hidden"] = t["_fc1.weight"][0]
      out["multimodal"] = t["_fc1.weight"][1] == 2 * out["widths"][-1]
    return out
  out["ablation"] = (0, 3) if "_classifier.private_shared_mask" in t else (1, 2)
  out["decay_positive"] = "_vq_vae_image._ema_w" in t
  if "_vq_vae_image._embedding.weight" in t:
    out["num_embeddings"], out["embedding_dim"] = t["_vq_vae_image._embedding.weight"]
  if "_encoder_image._conv_2.weight" in t:
    out["num_hiddens"] = t["_encoder_image._conv_2.weight"][0]
  if "_encoder_image._residual_stack._layers.0._block.2.weight" in t:
    out["num_residual_hiddens"] = t["_encoder_image._residual_stack._layers.0._block.2.weight"][0]
  out["num_residual_layers"] = len({k.split(".")[3] for k in t
                                    if k.startswith("_encoder_image._residual_stack._layers.")})
  if "_classifier._fc1.weight" in t:
    out["fc_hidden"] = t["_classifier._fc1.weight"][0]
  conv1 = t.get("_classifier._conv1.weight")
  if conv1 and "embedding_dim" in out:
    out["multimodal"] = conv1[1] == 2 * out["embedding_dim"]
  return out


def describe(state_dict: Mapping[str, Any]) -> str:
  """One line of what `infer_settings` found, as config settings."""
  s = infer_settings(state_dict)
  parts = [f"ablation in {s.pop('ablation')}"] if "ablation" in s else []
  if "decay_positive" in s:
    parts.append("EMA quantizer (decay > 0)" if s.pop("decay_positive") else "plain quantizer "
                 "(decay 0)")
  multimodal = s.pop("multimodal", None)
  if multimodal is not None:
    parts.append("mode 'multimodal'" if multimodal else "a uni-modal mode")
  parts += [f"{k}={v}" for k, v in s.items()]
  return ", ".join(parts) or "nothing recognisable"


def check_config(config: ml_collections.ConfigDict, state_dict: Mapping[str, Any]) -> int:
  """Checks config.model.cmvqvae against the state dict; returns the class count."""
  from avjax.convert import dataset_num_classes  # pylint: disable=import-outside-toplevel
  from avjax.models.cmvqvae import model_kwargs  # pylint: disable=import-outside-toplevel
  if config.model.name != "cmvqvae":
    raise ConversionError(f"The checkpoint is a CM-VQVAE model.py state dict; set "
                          f"config.model.name='cmvqvae' (got {config.model.name!r}).")
  s = infer_settings(state_dict)
  kw = model_kwargs(config)
  ablation = kw.get("ablation", 0)
  found = []
  if "ablation" in s and ablation not in s["ablation"]:
    found.append(f"ablation one of {s['ablation']}, config has {ablation} "
                 f"(--config.model.cmvqvae.ablation={s['ablation'][0]})")
  if ablation == 4:
    widths = tuple(kw.get("widths", (64, 128, 256, 512)))
    if s.get("widths") and tuple(s["widths"]) != widths:
      found.append(f"widths {s['widths']}, config has {widths} "
                   f"(--config.model.cmvqvae.widths='{s['widths']}')")
    keys = ("fc_hidden",)
  else:
    decay = kw.get("decay", 0.99)
    if "decay_positive" in s and s["decay_positive"] != (decay > 0):
      found.append(f"{'an EMA' if s['decay_positive'] else 'a plain'} quantizer, config has "
                   f"decay={decay} (--config.model.cmvqvae.decay="
                   f"{0.99 if s['decay_positive'] else 0.0})")
    keys = ("num_embeddings", "embedding_dim", "num_hiddens", "num_residual_hiddens",
            "num_residual_layers", "fc_hidden")
  defaults = {"num_embeddings": 512, "embedding_dim": 64, "num_hiddens": 128,
              "num_residual_hiddens": 32, "num_residual_layers": 2, "fc_hidden": 256}
  for key in keys:
    if key in s and s[key] != kw.get(key, defaults[key]):
      found.append(f"{key}={s[key]}, config has {kw.get(key, defaults[key])} "
                   f"(--config.model.cmvqvae.{key}={s[key]})")
  if "multimodal" in s and s["multimodal"] != (kw.get("mode", "multimodal") == "multimodal"):
    found.append(f"{'mode multimodal' if s['multimodal'] else 'a uni-modal mode'}, config has "
                 f"mode={kw.get('mode', 'multimodal')!r} (--config.model.cmvqvae.mode)")
  if found:
    raise ConversionError("The checkpoint does not match the config: " + "; ".join(found) + ".")
  if "num_classes" not in s:
    raise ConversionError(f"Cannot read the class count off the checkpoint (no _fc2 layer); it "
                          f"looks like: {describe(state_dict)}.")
  expected = dataset_num_classes(config.dataset)
  if expected is not None and expected != s["num_classes"]:
    raise ConversionError(
        f"The checkpoint's final layer has {s['num_classes']} classes but dataset "
        f"{config.dataset.name}/{config.dataset.config} has {expected}; check config.dataset.")
  return int(s["num_classes"])
