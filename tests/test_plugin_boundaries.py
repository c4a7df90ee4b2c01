"""The plug-in boundaries, read from the source: methods see models only through the contract."""

from __future__ import annotations

import ast
import dataclasses
import glob
import importlib.util
import os

import pytest
from flax import nnx

from avjax import methods as methods_lib
from avjax.models import MODELS, build_model, info_of
from avjax.models.contract import CAPABILITIES
from avjax.models.outputs import ModelOutput

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHOD_FILES = sorted(glob.glob(os.path.join(REPO, "avjax", "methods", "*.py")))
# One :smoke config per registered model (building is abstract: nothing is compiled).
MODEL_CONFIGS = {"av_resnet": "demo.py", "auxformer": "auxformer_cremad.py",
                 "cmvqvae": "cmvqvae_cremad.py", "vat": "vat_pretrain.py",
                 "vat_classifier": "vat_mer.py", "vavl": "vavl_cremad.py",
                 "av_resnet_mmtm": "greedy_cremad.py", "av_resnet_aug": "aug_cremad.py",
                 # Its smoke stand-in trains av_resnet (synthetic_av has no waveforms): shapes only.
                 "av_resnetse": "mmcosine_vox.py:"}


def _smoke_config(name: str):
  name, arg = name.split(":") if ":" in name else (name, "smoke")
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "configs", name))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg or None)


@pytest.fixture(scope="module")
def model_infos():
  assert set(MODEL_CONFIGS) == set(MODELS.names()), "add the new model's config here"
  infos = {}
  for name, path in MODEL_CONFIGS.items():
    config = _smoke_config(path)
    overrides = methods_lib.METHODS.get(config.method.name)(config).model_overrides()
    model = nnx.eval_shape(lambda c=config, o=overrides: build_model(c, 4, o))
    infos[name] = info_of(config, model)
  return infos


def test_every_parameter_is_in_a_group_and_capabilities_are_known(model_infos):
  for name, info in model_infos.items():
    assert info.capabilities <= set(CAPABILITIES), name
    config = _smoke_config(MODEL_CONFIGS[name])
    model = nnx.eval_shape(lambda c=config: build_model(
        c, 4, methods_lib.METHODS.get(c.method.name)(c).model_overrides()))
    params = set(nnx.state(model, nnx.Param).raw_mapping)
    variables = set(nnx.state(model).raw_mapping)
    grouped = {p for _, group in info.groups for p in group}
    assert params <= grouped <= variables, (name, params - grouped, grouped - variables)


def test_methods_require_only_known_capabilities():
  for name in methods_lib.METHODS.names():
    assert methods_lib.METHODS.get(name).requires <= set(CAPABILITIES), name


def test_method_files_never_name_model_attributes(model_infos):
  """No method file names a model's parameter paths (attribute or string), reaches into a model
  with getattr, or reads a ModelOutput field that does not exist."""
  group_names = {g for info in model_infos.values() for g, _ in info.groups}
  paths = {p for info in model_infos.values() for _, group in info.groups for p in group}
  internals = paths - group_names  # 'fusion' / 'shared' are group names too.
  fields = {f.name for f in dataclasses.fields(ModelOutput)}
  for path in METHOD_FILES:
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
      where = f"{os.path.basename(path)}:{getattr(node, 'lineno', '?')}"
      if isinstance(node, ast.Attribute):
        assert node.attr not in internals, f"{where} names model attribute {node.attr!r}"
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in ("output", "teacher"):
          assert node.attr in fields or node.attr == "replace", f"{where} reads .{node.attr}"
      if (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
          and isinstance(node.value, ast.Name)
          and any(w in node.value.id for w in ("param", "grad"))):
        assert node.slice.value not in internals, f"{where} indexes model path {node.slice.value!r}"
      if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr":
        target = node.args[0]
        assert not (isinstance(target, ast.Name) and target.id in ("model", "m", "mdl")), \
            f"{where} reaches into the model with getattr"


# Calls that write files (or make folders): methods return data; the trainer, evaluators and
# avjax.workdir own every file of a run.
FILE_WRITES = ("makedirs", "mkdir", "write_text", "write_bytes", "save", "savez",
               "savez_compressed", "dump", "write_artifacts", "write_table", "write_config",
               "write_final", "folder")


def test_method_files_write_no_files():
  for path in METHOD_FILES:
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
      if not isinstance(node, ast.Call):
        continue
      where = f"{os.path.basename(path)}:{node.lineno}"
      assert getattr(node.func, "id", None) != "open", f"{where} opens a file"
      assert getattr(node.func, "attr", None) not in FILE_WRITES, \
          f"{where} writes a file ({node.func.attr}); return the data (e.g. in EpochUpdate)"


def test_models_with_encoders_declare_their_feature_width(model_infos):
  """Methods size per-feature state from ModelInfo.feature_dim, never from model settings."""
  for name, info in model_infos.items():
    if info.capabilities & {"modality_encoders", "shared_head"}:
      assert info.feature_dim > 0 and dict(info.input_channels).keys() == {"audio", "visual"}, name


@pytest.mark.parametrize("fusion,form", [("concat", "ogm_ge"), ("sum", "ogm_ge"),
                                         ("film", "ogm_ge"), ("film", "mmcosine"),
                                         ("gated", "ogm_ge"), ("gated", "mmcosine")])
def test_one_definition_of_fusions_that_sum_modality_logits(fusion, form):
  """Slices of the fusion head (objective-level methods) and AMCo's class mask need the same
  property of the fusion; one function decides both."""
  from avjax.config import base_config  # pylint: disable=import-outside-toplevel
  from avjax.models import capabilities, modality_heads  # pylint: disable=import-outside-toplevel
  from avjax.registry import ConfigError  # pylint: disable=import-outside-toplevel
  config = base_config()
  config.model.fusion, config.model.fusion_kwargs.form = fusion, form
  additive = modality_heads.sums_modality_logits(config)
  assert additive == (fusion in ("concat", "sum") or form == "mmcosine")
  assert additive == ("class_mask" in capabilities(config))
  if additive:
    modality_heads.check_fusion(config, "slices")
  else:
    with pytest.raises(ConfigError, match="modality_heads='separate'"):
      modality_heads.check_fusion(config, "slices")


# Which plug-in packages a package may not import: a method, an evaluator and a model meet only
# through the interfaces (avjax/models/contract.py, Method, Evaluator), never through each other's
# modules; what two of them share lives below them (avjax/models: vat_objectives, modality_heads;
# top-level modules such as avjax/valuation.py).
FORBIDDEN_IMPORTS = {"models": ("avjax.methods", "avjax.evaluators"),
                     "evaluators": ("avjax.methods",),
                     "methods": ("avjax.evaluators",)}


@pytest.mark.parametrize("package", sorted(FORBIDDEN_IMPORTS))
def test_plugin_packages_do_not_import_each_other(package):
  forbidden = FORBIDDEN_IMPORTS[package]
  paths = sorted(glob.glob(os.path.join(REPO, "avjax", package, "**", "*.py"), recursive=True))
  assert paths
  for path in paths:
    for node in ast.walk(ast.parse(open(path).read(), path)):
      if isinstance(node, ast.ImportFrom):
        names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
      elif isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      else:
        continue
      bad = [n for n in names if any(n == f or n.startswith(f + ".") for f in forbidden)]
      assert not bad, f"avjax/{package}/{os.path.basename(path)}:{node.lineno} imports {bad[0]}"
