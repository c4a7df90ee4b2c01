"""Name mapping and layout conversion between the reference AVClassifier (PyTorch) and avjax's.

The reference model of OGM-GE (GeWu-Lab/OGM-GE_CVPR2022) and MMCosine (GeWu-Lab/MMCosine_ICASSP23) is
`audio_net` / `visual_net` (torchvision-style ResNet-18 trunks) and `fusion_module`. Names map
module by module (x = audio, y = visual, as in the reference):

  audio_net.*                         <-> audio_encoder.backbone.*
  visual_net.*                        <-> visual_encoder.backbone.*
  <net>.conv1, <net>.bn1              <-> stem conv1, bn1
  <net>.layerL.B.{conv1,bn1,conv2,bn2} <-> layerL.B.{conv1,bn1,conv2,bn2}   (L = 1..4, B = 0, 1)
  <net>.layerL.0.downsample.0 / .1    <-> layerL.0.down_conv / down_bn
  fusion_module.{fc_x,fc_y,fc,fc_out} <-> fusion.{fc_x,fc_y,fc,fc_out}   (same names in every fusion)

and tensor by tensor:

  conv   weight (O,I,kh,kw)        <-> kernel (kh,kw,I,O)   [Param]
  linear weight (out,in)           <-> kernel (in,out)      [Param]; bias (out,) <-> bias
  BN     weight, bias              <-> scale, bias          [Param]
  BN     running_mean, running_var <-> mean, var            [BatchStat]
  BN     num_batches_tracked       -> ignored (PyTorch-only counter; momentum is fixed at 0.1)

State dicts are plain {name: np.ndarray} mappings; a DataParallel 'module.' prefix is stripped.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
import zlib
from typing import Any, Callable, Iterable, Iterator, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from avjax.registry import ConfigError

_ROOTS = {"audio_encoder": "audio_net", "visual_encoder": "visual_net", "fusion": "fusion_module"}
_SKIPPED = ("backbone",)  # avjax path parts with no PyTorch counterpart.
_MODULES = {"down_conv": "downsample.0", "down_bn": "downsample.1"}
_LEAVES = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
           "var": "running_var"}
IGNORED = ("num_batches_tracked",)
_PREFIX = "module."
_NESTED_KEYS = ("model", "state_dict", "model_state_dict", "net")
_MAX_LISTED = 12


class ConversionError(ConfigError):
  """A state dict that does not fit the configured avjax model; the message lists what differs."""


# ----------------------------------------------------------------------------------------- layouts


def from_torch(value: np.ndarray) -> np.ndarray:
  """PyTorch layout -> avjax: conv (O,I,kh,kw) -> (kh,kw,I,O); linear (out,in) -> (in,out)."""
  if value.ndim == 4:
    return np.transpose(value, (2, 3, 1, 0))
  if value.ndim == 2:
    return value.T
  return value


def to_torch(value: np.ndarray) -> np.ndarray:
  """avjax layout -> PyTorch (the inverse of `from_torch`)."""
  if value.ndim == 4:
    return np.transpose(value, (3, 2, 0, 1))
  if value.ndim == 2:
    return value.T
  return value


def torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
  """The PyTorch shape of an avjax tensor of `shape`."""
  return tuple(to_torch(np.empty(shape, np.int8)).shape)


# ------------------------------------------------------------------------------------------- names


def torch_name(path: tuple[Any, ...]) -> str:
  """avjax state path, e.g. ('audio_encoder', 'backbone', 'layer2', 0, 'down_conv', 'kernel') ->
  the reference's name, 'audio_net.layer2.0.downsample.0.weight'."""
  if not path or path[0] not in _ROOTS or str(path[-1]) not in _LEAVES:
    raise ConversionError(f"avjax variable {'/'.join(map(str, path))} has no reference counterpart "
                          "(only the av_resnet model's AVClassifier converts).")
  parts = [_ROOTS[path[0]]]
  for part in path[1:-1]:
    part = str(part)
    if part not in _SKIPPED:
      parts.append(_MODULES.get(part, part))
  parts.append(_LEAVES[path[-1]])
  return ".".join(parts)


def strip_prefixes(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """Removes DataParallel's leading 'module.' prefixes ('module.audio_net.conv1.weight')."""
  out = {}
  for name, value in state_dict.items():
    clean = name
    while clean.startswith(_PREFIX):
      clean = clean[len(_PREFIX):]
    if clean in out:
      raise ConversionError(f"State dict names {name!r} and another one both map to {clean!r}.")
    out[clean] = value
  return out


def _variables(model: nnx.Module) -> Iterator[tuple[str, tuple[Any, ...], nnx.Variable]]:
  """(reference name, avjax path, variable) for every variable of `model`, each name once."""
  seen: dict[str, tuple[Any, ...]] = {}
  for path, var in nnx.to_flat_state(nnx.state(model)):
    name = torch_name(path)
    if name in seen:  # Would mean two avjax variables fed by one tensor: a mapping bug.
      raise ConversionError(f"avjax variables {seen[name]} and {path} both map to {name!r}.")
    seen[name] = path
    yield name, path, var


def nnx_to_state_dict(model: nnx.Module, *,
                      num_batches_tracked: int | None = None) -> dict[str, np.ndarray]:
  """The model's parameters and BatchNorm statistics as a reference (PyTorch-layout) state dict.

  `num_batches_tracked`: when given, adds each BatchNorm's int64 counter with that value, so the
  result loads into a PyTorch model with `load_state_dict(strict=True)`.
  """
  out: dict[str, np.ndarray] = {}
  for name, _, var in _variables(model):
    out[name] = np.ascontiguousarray(to_torch(np.asarray(var.get_value())))
    if num_batches_tracked is not None and name.endswith(".running_mean"):
      counter = name[: -len("running_mean")] + IGNORED[0]
      out[counter] = np.asarray(num_batches_tracked, np.int64)
  return out


def _listing(names: list[str]) -> str:
  shown = ", ".join(names[:_MAX_LISTED])
  more = f", ... ({len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else ""
  return f"{shown}{more}"


def state_dict_to_nnx(model: nnx.Module, state_dict: Mapping[str, Any]) -> None:
  """Fills every parameter and BatchNorm statistic of `model` (in place) from a reference state dict.

  Every avjax variable must be filled exactly once and every tensor (but num_batches_tracked) used;
  otherwise nothing is changed and a ConversionError lists the missing, unexpected and mismatched names.
  """
  tensors = {k: np.asarray(v) for k, v in strip_prefixes(state_dict).items()
             if k.rsplit(".", 1)[-1] not in IGNORED}

  def convert(name, path, value, target):
    if value.ndim != len(target) or from_torch(value).shape != target:
      return None, torch_shape(target)
    return from_torch(value), None

  fill_model(model, _variables(model), tensors, convert,
             "The state dict does not fit the avjax model:", hint=describe(tensors))


Convert = Callable[[str, tuple[Any, ...], np.ndarray, tuple[int, ...]],
                   tuple[np.ndarray | None, Any]]


def fill_model(model: nnx.Module, variables: Iterable[tuple[str, tuple[Any, ...], nnx.Variable]],
               tensors: Mapping[str, np.ndarray], convert: Convert, title: str, *,
               hint: str = "", layout: str = "PyTorch layout") -> None:
  """Fills the model's `variables` ((reference name, avjax path, variable), each name once) from
  `tensors` (reference names), all or nothing (shared by the converters): every variable must find
  its tensor and every tensor be used, else `check_fit` raises and nothing changes.

  `convert(name, path, tensor, model_shape)` returns (the tensor in avjax's layout, None), or
  (None, the model's shape as the mismatch report shows it) when the tensor does not fit.
  """
  updates, missing, mismatched, expected = [], [], [], set()
  for name, path, var in variables:
    expected.add(name)
    if name not in tensors:
      missing.append(name)
      continue
    value, model_shape = convert(name, path, tensors[name], tuple(var.get_value().shape))
    if value is None:
      mismatched.append(f"{name}: checkpoint {tuple(tensors[name].shape)}, model {model_shape}")
      continue
    # A private copy: on CPU, JAX may alias numpy memory, and the caller's arrays may be views of
    # live torch tensors that later change in place (BatchNorm running statistics).
    copied = np.array(value, dtype=var.get_value().dtype, copy=True)
    updates.append((path, var.replace(jnp.asarray(copied))))
  check_fit(title, missing, sorted(set(tensors) - expected), mismatched, hint, layout)
  nnx.update(model, nnx.from_flat_state(updates))


def check_fit(title: str, missing: list[str], unexpected: list[str], mismatched: list[str],
              hint: str = "", layout: str = "PyTorch layout") -> None:
  """Raises one ConversionError listing every missing, unexpected and mismatched name (shared by
  the converters, so a checkpoint is converted all or nothing)."""
  if not (missing or unexpected or mismatched):
    return
  lines = [title]
  if missing:
    lines.append(f"  missing from the checkpoint ({len(missing)}): {_listing(missing)}")
  if unexpected:
    lines.append(f"  unexpected in the checkpoint ({len(unexpected)}): {_listing(unexpected)}")
  if mismatched:
    lines.append(f"  shape mismatches, {layout} ({len(mismatched)}): {_listing(mismatched)}")
  if hint:
    lines.append(f"  The checkpoint looks like: {hint}.")
  raise ConversionError("\n".join(lines))


# ------------------------------------------------------------------------------------ architecture


@dataclasses.dataclass(frozen=True)
class Architecture:
  """What a reference state dict says about its model (None where it cannot tell).

  fusion / form: avjax fusion name and, for film / gated, 'ogm_ge' (asymmetric) or 'mmcosine'
  (symmetric). The asymmetric forms' `condition` (the reference's x_film / x_gate) is not stored in
  a state dict.
  """

  num_classes: int | None
  widths: tuple[int, ...] | None
  audio_channels: int | None
  visual_channels: int | None
  fusion: str | None
  form: str | None


def _shape(tensors: Mapping[str, np.ndarray], name: str) -> tuple[int, ...] | None:
  value = tensors.get(name)
  return None if value is None else tuple(np.shape(value))


def infer_architecture(state_dict: Mapping[str, Any]) -> Architecture:
  """Reads widths, input channels, fusion and class count off a reference state dict's shapes."""
  t = strip_prefixes(state_dict)
  widths = [_shape(t, f"audio_net.layer{i}.0.conv1.weight") for i in range(1, 5)]
  widths = tuple(s[0] for s in widths) if all(s and len(s) == 4 for s in widths) else None
  channels = {}
  for net in ("audio_net", "visual_net"):
    s = _shape(t, f"{net}.conv1.weight")
    channels[net] = s[1] if s and len(s) == 4 else None
  heads = {n.split(".")[1] for n in t if n.startswith("fusion_module.") and n.count(".") >= 2}
  shape = {h: _shape(t, f"fusion_module.{h}.weight") or (0, 0) for h in heads}
  fusion = form = None
  num_classes = shape["fc_out"][0] if "fc_out" in heads else None
  if heads == {"fc_x", "fc_y"}:
    fusion, num_classes = "sum", shape["fc_x"][0]
  elif heads == {"fc_out"}:
    fusion = "concat"
  elif heads == {"fc", "fc_out"}:
    fusion, form = "film", "ogm_ge"
  elif heads == {"fc_x", "fc_y", "fc_out"}:
    out_x, in_x = shape["fc_x"] if len(shape["fc_x"]) == 2 else (0, 0)
    if out_x == 2 * in_x:
      fusion, form = "film", "mmcosine"
    else:
      fusion = "gated"
      form = "mmcosine" if len(shape["fc_out"]) == 2 and shape["fc_out"][1] == 2 * in_x else "ogm_ge"
  return Architecture(num_classes=num_classes, widths=widths, audio_channels=channels["audio_net"],
                      visual_channels=channels["visual_net"], fusion=fusion, form=form)


def describe(state_dict: Mapping[str, Any]) -> str:
  """A one-line summary of `infer_architecture` as config settings ('' if nothing is known)."""
  arch = infer_architecture(state_dict)
  parts = []
  if arch.fusion:
    parts.append(f"model.fusion={arch.fusion!r}")
  if arch.form:
    parts.append(f"model.fusion_kwargs.form={arch.form!r}")
  if arch.widths:
    parts.append(f"model.av_resnet.widths={arch.widths}")
  if arch.visual_channels:
    parts.append(f"model.av_resnet.visual_channels={arch.visual_channels}")
  if arch.num_classes:
    parts.append(f"{arch.num_classes} classes")
  return ", ".join(parts)


# ----------------------------------------------------------------------------------------- loading


def _to_numpy(value: Any) -> np.ndarray:
  """A torch tensor (any float dtype, bfloat16 included) or array -> np.ndarray."""
  if hasattr(value, "detach"):
    value = value.detach().cpu()
    if value.is_floating_point() and str(value.dtype) not in ("torch.float32", "torch.float64"):
      value = value.float()
    return value.numpy()
  return np.asarray(value)


def _unwrap(obj: Any, path: str) -> Mapping[str, Any]:
  """The state dict inside a checkpoint file: the file itself, or its 'model' / 'state_dict' entry
  (OGM-GE saves {'model': state_dict, 'optimizer': ..., ...})."""
  if not isinstance(obj, Mapping):
    raise ConversionError(f"{path} holds a {type(obj).__name__}, not a state dict.")
  if obj and all(hasattr(v, "shape") for v in obj.values()):
    return obj
  for key in _NESTED_KEYS:
    inner = obj.get(key)
    if isinstance(inner, Mapping) and inner and all(hasattr(v, "shape") for v in inner.values()):
      return inner
  raise ConversionError(f"{path} is not a state dict of tensors, nor holds one under "
                        f"{list(_NESTED_KEYS)}; its keys: {_listing(sorted(map(str, obj)))}.")


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a reference state dict: .npz (no PyTorch needed) or a torch.save file (.pth, .pt, .bin,
  .tar, .ckpt; needs PyTorch, read with weights_only=True). Returns {name: array}, prefixes stripped."""
  if not os.path.isfile(path):
    raise ConversionError(f"Checkpoint {path} does not exist.")
  if path.endswith(".npz"):
    try:
      with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
      raise ConversionError(f"{path} is not a readable .npz ({type(e).__name__}: {e}); it may be "
                            "truncated: save the state dict again.") from e
    except ValueError as e:  # E.g. object arrays, which are not read (no pickles).
      raise ConversionError(f"{path} holds something other than numeric arrays ({e}); save the "
                            "state dict's tensors as numpy arrays.") from e
    return strip_prefixes(arrays)
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ConversionError(
        f"Reading {path} needs PyTorch, which is not installed. Install the optional extra "
        "(pip install 'avjax[torch]'), or save the state dict as .npz where PyTorch is available: "
        "np.savez('model.npz', **{k: v.cpu().numpy() for k, v in state_dict.items()}).") from e
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    raise ConversionError(
        f"torch.load({path!r}, weights_only=True) failed ({type(e).__name__}: "
        f"{str(e).splitlines()[0] if str(e) else ''}). Only tensors and plain containers are read "
        "(no pickled code); re-save just the model's state_dict, or as .npz.") from e
  return strip_prefixes({str(k): _to_numpy(v) for k, v in _unwrap(obj, path).items()})
