"""Importing VAVL's PyTorch checkpoints (ilucasgoncalves/VAVL net/avmodel.py, net/modelWrapper.py).

The reference saves one state dict per module into its model folder; avjax reads the folder (or one
.pth / .npz whose names carry the module prefixes below) into `avjax.models.vavl.VAVL`:

  final_acoustic_head.pt  acoustic_model.*  <-> audio_encoder   (conv_1d_a, x_acoustic)
  final_visual_head.pt    visual_model.*    <-> visual_encoder  (conv_1d_v, x_visual)
  final_shared_head.pt    shared_model.*    <-> shared          (x_shared, layer_norm)
  MLP_a_head.pt / MLP_v_head.pt             <-> head_audio / head_visual
  MLP_rec_a_head.pt / MLP_rec_v_head.pt     <-> recon_audio / recon_visual
  final_weights_head.pt   weights.*         <-> fusion
  (MLP_av_head.pt: never used by the reference; ignored)

Parameters the reference saves but its forward never uses are skipped and named in one logged line:
MLP_av.* (in a single-file state dict), and the convolutional subsampling that every reference
ConformerEncoder builds (conformer/encoder.py: conv_subsample = Conv2d(1, D, 3, stride 2), ReLU,
Conv2d(D, D, 3, stride 2), ReLU) while its forward feeds input_projection directly:
<encoder>.conv_subsample.sequential.{0,2}.{weight,bias} for acoustic_model.x_acoustic,
visual_model.x_visual and shared_model.x_shared. The importable models (inputs='features') have no
counterpart; the exporter leaves them out, so loading its output into the reference needs
strict=False.

Inside a Conformer (sooftware/conformer layout): encoder.input_projection.0.linear <->
input_projection; encoder.layers.<i>.sequential.<k> <-> blocks.<i>.{ff1, attn, conv, ff2, norm} for
k = 0..4, with .module.sequential.<j> inside the residual units (FF: 0 LN, 1 Linear, 4 Linear;
convolution: 0 LN, 2 pointwise, 4 depthwise, 5 BatchNorm, 7 pointwise), attention under
.module.{layer_norm, attention.{query,key,value,pos,out}_proj.linear, attention.u_bias / v_bias}.
MLP heads: projav1 / projav2 / out_layer <-> fc1 / fc2 / out.

Layouts: Linear weight (out, in) <-> kernel (in, out); k = 1 Conv1d (out, in, 1) <-> kernel (in,
out); depthwise Conv1d (D, 1, k) <-> kernel (k, 1, D); LayerNorm / BatchNorm weight <-> scale;
BatchNorm running_mean / running_var <-> mean / var. Ignored: num_batches_tracked and the
positional-encoding buffers (recomputed). Only inputs='features' models convert (the raw stems are
avjax's); the reference's positional scheme needs rel_pos='reference'.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Iterator, Mapping

import ml_collections
import numpy as np
from flax import nnx

from avjax.convert.resnet_av import (ConversionError, fill_model, load_state_dict,
                                     strip_prefixes)

FILES = {"acoustic_model": "final_acoustic_head.pt", "visual_model": "final_visual_head.pt",
         "shared_model": "final_shared_head.pt", "MLP_a": "MLP_a_head.pt",
         "MLP_v": "MLP_v_head.pt", "MLP_rec_a": "MLP_rec_a_head.pt",
         "MLP_rec_v": "MLP_rec_v_head.pt", "weights": "final_weights_head.pt"}
ROOTS = {"audio_encoder": "acoustic_model", "visual_encoder": "visual_model",
         "shared": "shared_model", "head_audio": "MLP_a", "head_visual": "MLP_v",
         "recon_audio": "MLP_rec_a", "recon_visual": "MLP_rec_v", "fusion": "weights"}
CONFORMERS = {"audio_encoder": "x_acoustic", "visual_encoder": "x_visual", "shared": "x_shared"}
PROJECTIONS = {"audio_encoder": "conv_1d_a", "visual_encoder": "conv_1d_v"}
MLP = {"fc1": "projav1", "fc2": "projav2", "out": "out_layer"}
FF = {"norm": "0", "fc1": "1.linear", "fc2": "4.linear"}
CONV = {"norm": "0", "pointwise1": "2.conv", "depthwise": "4.conv", "bn": "5",
        "pointwise2": "7.conv"}
ATTN = {"query": "query_proj.linear", "key": "key_proj.linear", "value": "value_proj.linear",
        "pos": "pos_proj.linear", "out": "out_proj.linear"}
LEAVES = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
          "var": "running_var"}
IGNORED_SUFFIXES = ("num_batches_tracked", ".pe")  # Buffers: step counters, recomputed encodings.
# Parameters the reference saves but its forward never uses: skipped, and named in one log line.
UNUSED = re.compile(r"(?P<module>(?:acoustic_model\.x_acoustic|visual_model\.x_visual|"
                    r"shared_model\.x_shared)\.encoder\.conv_subsample\.sequential)\."
                    r"(?P<leaf>[02]\.(?:weight|bias))|(?P<head>MLP_av)\.(?P<rest>.+)")
UNUSED_WHY = {"conv_subsample": "conformer/encoder.py builds conv_subsample in every Conformer "
                                "encoder, but its forward feeds input_projection directly",
              "MLP_av": "net/modelWrapper.py builds MLP_av but never calls it"}

log = logging.getLogger(__name__)


def _block_name(parts: list[str]) -> str:
  """Names in a Conformer block: ['ff1', 'fc1'] -> 'sequential.0.module.sequential.1.linear'."""
  head, rest = parts[0], parts[1:]
  if head in ("ff1", "ff2"):
    return f"sequential.{0 if head == 'ff1' else 3}.module.sequential.{FF[rest[0]]}"
  if head == "attn_norm":
    return "sequential.1.module.layer_norm"
  if head == "attn":
    inner = ATTN.get(rest[0], rest[0])  # u_bias / v_bias keep their names.
    return f"sequential.1.module.attention.{inner}"
  if head == "conv":
    return f"sequential.2.module.sequential.{CONV[rest[0]]}"
  if head == "norm":
    return "sequential.4"
  raise KeyError(head)


def _module_name(root: str, body: list[str]) -> str:
  """The reference name of the module at avjax path root/body."""
  if body[0] == "conformer":
    prefix = f"{ROOTS[root]}.{CONFORMERS[root]}.encoder"
    if body[1] == "input_projection":
      return f"{prefix}.input_projection.0.linear"
    return f"{prefix}.layers.{int(body[2])}.{_block_name(body[3:])}"  # blocks, i, ...
  if body == ["projection"]:
    return f"{ROOTS[root]}.{PROJECTIONS[root]}"
  if root == "shared" and body == ["norm"]:
    return "shared_model.layer_norm"
  if root in ("head_audio", "head_visual", "recon_audio", "recon_visual", "fusion"):
    return f"{ROOTS[root]}.{MLP[body[0]]}"
  raise KeyError(root)


def torch_name(path: tuple[Any, ...]) -> str:
  """avjax path, e.g. ('audio_encoder', 'conformer', 'blocks', 0, 'ff1', 'fc1', 'kernel') -> the
  reference's 'acoustic_model.x_acoustic.encoder.layers.0.sequential.0.module.sequential.1.linear
  .weight'."""
  parts = [str(p) for p in path]
  try:
    if parts[-1] in ("u_bias", "v_bias"):  # Parameters held by the attention module itself.
      return _module_name(parts[0], parts[1:])
    return f"{_module_name(parts[0], parts[1:-1])}.{LEAVES[parts[-1]]}"
  except (KeyError, IndexError, ValueError):
    raise ConversionError(
        f"avjax variable {'/'.join(parts)} has no counterpart in the reference VAVL (only "
        "inputs='features' models convert; the raw stems are avjax's).") from None


def from_torch(name: str, value: np.ndarray) -> np.ndarray:
  """Reference layout -> avjax (see the module docstring)."""
  if value.ndim == 3 and value.shape[1] == 1 and value.shape[2] > 1:  # Depthwise (D, 1, k).
    return np.transpose(value, (2, 1, 0))
  if value.ndim == 3:  # k = 1 Conv1d (out, in, 1).
    return value[..., 0].T
  if value.ndim == 2 and not name.endswith(("u_bias", "v_bias")):
    return value.T
  return value


def to_torch(name: str, value: np.ndarray, conv1d: bool = False) -> np.ndarray:
  """avjax layout -> reference (`conv1d`: the kernel of a k = 1 Conv1d)."""
  if value.ndim == 3:
    return np.transpose(value, (2, 1, 0))
  if value.ndim == 2 and not name.endswith(("u_bias", "v_bias")):
    return value.T[..., None] if conv1d else value.T
  return value


def _is_conv1d(name: str) -> bool:
  return name.endswith((".conv.weight",)) or ".conv_1d_" in name


def _variables(model: nnx.Module) -> Iterator[tuple[str, tuple[Any, ...], nnx.Variable]]:
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))):
    yield torch_name(path), path, var


def nnx_to_state_dict(model: nnx.Module) -> dict[str, np.ndarray]:
  """The VAVL model's parameters and BatchNorm statistics under the reference's names."""
  return {name: np.ascontiguousarray(to_torch(name, np.asarray(var.get_value()),
                                              _is_conv1d(name)))
          for name, _, var in _variables(model)}


def state_dict_to_nnx(model: nnx.Module, state_dict: Mapping[str, Any]) -> None:
  """Fills every parameter / BatchNorm statistic of a VAVL model from a reference state dict (all
  names checked first: nothing changes on a mismatch)."""
  tensors, unused = {}, {}
  for name, value in strip_prefixes(state_dict).items():
    match = UNUSED.fullmatch(name)
    if match:
      unused.setdefault(match["module"] or match["head"], []).append(match["leaf"] or match["rest"])
    elif not name.endswith(IGNORED_SUFFIXES):
      tensors[name] = np.asarray(value)

  def convert(name, path, value, target):
    value = from_torch(name, value)
    return (value, None) if value.shape == target else (None, target)

  fill_model(model, _variables(model), tensors, convert,
             "The VAVL checkpoint does not fit the configured model:", layout="avjax layout")
  if unused:
    log.info(unused_message(unused))


def unused_message(unused: Mapping[str, list[str]]) -> str:
  """One line naming the skipped tensors ({module: [names inside it]}) and why they are unused."""
  names = [f"{module}.{leaves[0]}" if len(leaves) == 1 else
           f"{module}.{{{','.join(sorted(leaves))}}}" for module, leaves in sorted(unused.items())]
  why = [text for key, text in UNUSED_WHY.items() if any(key in m for m in unused)]
  count = sum(len(leaves) for leaves in unused.values())
  return (f"Ignored {count} checkpoint tensors that the reference VAVL's forward never uses "
          f"({'; '.join(why)}): {', '.join(names)}.")


def load_checkpoint(path: str) -> dict[str, np.ndarray]:
  """A VAVL model folder (the reference's per-module .pt files) or one state-dict file."""
  if not os.path.isdir(path):
    return load_state_dict(path)
  out: dict[str, np.ndarray] = {}
  found = []
  for prefix, filename in FILES.items():
    file = os.path.join(path, filename)
    if os.path.isfile(file):
      found.append(filename)
      out.update({f"{prefix}.{k}": v for k, v in load_state_dict(file).items()})
  missing = sorted(set(FILES.values()) - set(found))
  if missing:
    raise ConversionError(f"{path} is not a VAVL model folder: missing {', '.join(missing)} "
                          "(train.py saves them with modelWrapper.save_model).")
  return out


def check_config(config: ml_collections.ConfigDict, state_dict: Mapping[str, Any]) -> int:
  """Checks config.model.vavl against the checkpoint's shapes; returns its number of outputs."""
  m = config.model
  if m.name != "vavl":
    raise ConversionError(f"A VAVL checkpoint needs config.model.name='vavl', got {m.name!r}.")
  section = m.vavl.to_dict() if m.get("vavl") is not None else {}
  t = strip_prefixes(state_dict)
  shape = lambda name: tuple(np.shape(t[name])) if name in t else None
  found = []
  if section.get("inputs", "features") != "features":
    found.append("inputs='features' (the reference reads precomputed features)")
  if section.get("rel_pos", "transformer_xl") != "reference":
    found.append("rel_pos='reference' (the reference's positional encoding)")
  checks = {
      "audio_dim": (shape("acoustic_model.conv_1d_a.weight"), 1),
      "visual_dim": (shape("visual_model.conv_1d_v.weight"), 1),
      "proj_dim": (shape("acoustic_model.conv_1d_a.weight"), 0),
      "dim": (shape("shared_model.layer_norm.weight"), 0),
      "heads": (shape("acoustic_model.x_acoustic.encoder.layers.0.sequential.1.module.attention."
                      "u_bias"), 0),
  }
  defaults = {"audio_dim": 1024, "visual_dim": 1408, "proj_dim": 50, "dim": 512, "heads": 8}
  for key, (s, axis) in checks.items():
    if s is not None and s[axis] != section.get(key, defaults[key]):
      found.append(f"{key}={s[axis]}")
  for key, prefix in (("audio_blocks", "acoustic_model.x_acoustic"),
                      ("visual_blocks", "visual_model.x_visual"),
                      ("shared_blocks", "shared_model.x_shared")):
    layers = {n.split(".")[4] for n in t if n.startswith(f"{prefix}.encoder.layers.")}
    default = 2 if key == "shared_blocks" else 3
    if layers and len(layers) != section.get(key, default):
      found.append(f"{key}={len(layers)}")
  if found:
    raise ConversionError("The VAVL checkpoint needs config.model.vavl settings: " +
                          ", ".join(found) + " (set them with --config.model.vavl.<key>=...).")
  out = shape("weights.out_layer.weight")
  if out is None:
    raise ConversionError("No fusion head (weights.out_layer.weight) in the checkpoint.")
  targets = tuple(config.task.targets) if config.task.name == "regression" else ()
  if targets and out[0] != len(targets):
    raise ConversionError(f"The checkpoint predicts {out[0]} outputs, not the {len(targets)} "
                          f"regression targets of config.task.targets={targets}; set "
                          "--config.task.name=classification (or the targets it predicts).")
  return int(out[0])


def describe(state_dict: Mapping[str, Any]) -> str:
  """One line about a VAVL state dict: dimensions and number of outputs."""
  t = strip_prefixes(state_dict)
  parts = []
  for label, name, axis in (("audio_dim", "acoustic_model.conv_1d_a.weight", 1),
                            ("visual_dim", "visual_model.conv_1d_v.weight", 1),
                            ("dim", "shared_model.layer_norm.weight", 0),
                            ("outputs", "weights.out_layer.weight", 0)):
    if name in t:
      parts.append(f"{label}={np.shape(t[name])[axis]}")
  return "VAVL " + ", ".join(parts) if parts else "not a VAVL state dict"
