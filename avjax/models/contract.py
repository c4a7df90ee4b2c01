"""The model contract: what a model declares so methods never name its internals.

A model (any `nnx.Module` registered in `avjax.models.MODELS`) is called as
`model(inputs, modality_mask) -> ModelOutput`; models with the 'encode_fuse' capability also split
into `encode(inputs) -> features` and `fuse(features) -> ModelOutput`. Each model declares

  * capabilities (`CAPABILITIES`): which optional ModelOutput fields it fills and which optional
    calls it has. A method lists the capabilities it requires (`Method.requires`);
    `avjax.config.validate` compares the two before anything is built or compiled.
  * parameter groups (`param_groups()`): group name -> top-level parameter paths, e.g.
    'encoder/audio' -> ('audio_encoder',). Methods address parameters by group name only.

Group names: 'encoder/<modality>', 'head/<modality>', 'recon/<modality>', 'projection/<modality>',
'shared', 'fusion', plus model-specific ones a model documents.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Mapping

import jax
from flax import nnx

CAPABILITIES = {
    "task_outputs": "logits (and regression outputs) that predict the config's task targets; a "
                    "pre-training model's score a pretext task instead (VAT's pair matching)",
    "modality_logits": "per-modality logits from each modality's own pathway",
    "encode_fuse": "an encode(inputs) / fuse(features) split (Shapley valuation, re-sampling)",
    "cosine_head": "a fusion head that scores cosine logits when built with cosine_scale",
    "head_inputs": "the vectors its final classifier scores (ModelOutput.head_inputs)",
    "modality_encoders": "convolutional per-modality encoders as groups 'encoder/<modality>', "
                         "with ModelInfo.feature_dim and input_channels declared",
    "modality_heads": "separate linear heads per modality on request (a method's model override "
                      "modality_heads='separate'): modality_logits then come from groups "
                      "'head/<modality>' instead of slices of the fusion head",
    "class_mask": "on request (a method's model override logit_map=True) a learned C x C map on "
                  "the sum of the modality logits, each masked by a class_mask row (AMCo; "
                  "call(inputs, modality_mask, class_mask); group 'logit_map')",
    "shared_head": "a linear head shared by the modalities on request (a method's model override "
                   "shared_head=True): shared_logits(features) -> {modality: logits}, group "
                   "'head/shared'",
    "residual_classifiers": "per-modality classifiers sharing a last layer, with K pre-allocated "
                            "residual classifiers each (ModelOutput.residual_logits); "
                            "features(inputs, m) / classify(z, m) per modality; groups "
                            "'head/<m>', 'residual/<m>', 'shared'",
    "unimodal_branches": "unimodal(inputs, modality) branches with their own heads and "
                         "reconstructions (groups encoder / shared / head / recon / fusion)",
    "joint_logits": "a joint network's logits next to auxiliary uni-modal heads",
    "reconstructions": "reconstructions of its inputs",
    "quantization": "vector-quantizer statistics per modality",
    "fusion_mask": "a learned channel mask over the fused features",
    "embeddings": "contrastive embeddings per modality and a pair-matching head",
    "tokens": "the per-modality token sequences its fusion reads",
    "regression": "regression outputs next to (or instead of) class logits",
    "mmtm": "MMTM blocks between the encoders' stages: __call__(..., curation=c) freezes "
            "modality c's gates to their running means, squeeze_means= gives each gate the other "
            "modality's mean squeeze, mmtm_squeezes(inputs); groups 'mmtm/shared', 'mmtm/<m>'",
}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A registered model: its factory and what it declares before being built.

  Attributes:
    build: (config, num_classes, overrides, rngs) -> nnx.Module.
    capabilities: config -> the model's capabilities with these settings.
    hints: capability -> how to get it when these settings lack it (a config fix).
    remat_key: the config key that turns on recomputation in the backward pass ('' if none).
  """

  build: Callable[..., nnx.Module]
  capabilities: Callable[[Any], frozenset[str]]
  hints: Mapping[str, str] = dataclasses.field(default_factory=dict)
  remat_key: str = ""


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """What methods may know of a built model: hashable, so it can be closed over inside jit.

  Attributes:
    name: the registered model name.
    capabilities: its capabilities with the run's settings.
    groups: ((group name, (top-level parameter path, ...)), ...).
    num_outputs: the width of its logits (classes, or regression targets).
    feature_dim: the width D of each modality's pooled features (ModelOutput.features[m], (B, D));
      0 where the model does not declare it (a `feature_dim` attribute).
    input_channels: ((modality, channels of its input), ...), where the model declares them (an
      `input_channels` attribute): e.g. the audio slot's 1 (spectrogram) or 2 (optical flow).
  """

  name: str
  capabilities: frozenset[str]
  groups: tuple[tuple[str, tuple[str, ...]], ...]
  num_outputs: int = 0
  feature_dim: int = 0
  input_channels: tuple[tuple[str, int], ...] = ()

  def paths(self, *names: str) -> tuple[str, ...]:
    """Top-level parameter paths of the named groups, in group order, without repeats."""
    table = dict(self.groups)
    missing = [n for n in names if n not in table]
    if missing:
      raise KeyError(f"model {self.name!r} has no parameter group(s) {missing}; it has "
                     f"{sorted(table)}.")
    out: list[str] = []
    for n in names:
      out.extend(p for p in table[n] if p not in out)
    return tuple(out)

  def group_of(self, path: str) -> str | None:
    """The first group holding top-level parameter path `path` (None if in none)."""
    return next((name for name, paths in self.groups if path in paths), None)


def model_info(name: str, capabilities: Iterable[str], model: nnx.Module,
               num_outputs: int = 0) -> ModelInfo:
  """A built model's ModelInfo (its `param_groups()`, one group 'all' when it declares none; its
  `feature_dim` and `input_channels` where it declares them)."""
  groups = getattr(model, "param_groups", None)
  if groups is None:
    table = {"all": tuple(nnx.state(model, nnx.Param).raw_mapping.keys())}
  else:
    table = groups()
  return ModelInfo(name=name, capabilities=frozenset(capabilities),
                   groups=tuple((k, tuple(v)) for k, v in table.items()), num_outputs=num_outputs,
                   feature_dim=int(getattr(model, "feature_dim", 0)),
                   input_channels=tuple(getattr(model, "input_channels", ())))


def top_key(path: tuple) -> Any:
  """The top-level key of a pytree path (from jax.tree_util.tree_flatten_with_path)."""
  entry = path[0] if path else None
  return getattr(entry, "key", getattr(entry, "name", None))


def select(params: nnx.State, paths: Iterable[str]) -> dict[str, Any]:
  """{path: params[path]} for top-level parameter paths."""
  return {p: params[p] for p in paths}


def replace(params: nnx.State, new: Mapping[str, Any]) -> nnx.State:
  """`params` with some top-level subtrees replaced (same pytree structure)."""
  mapping = dict(params.raw_mapping)
  for name, value in new.items():
    mapping[name] = value.raw_mapping if isinstance(value, nnx.State) else value
  return nnx.State(mapping)


def set_mode(model: nnx.Module, paths: Iterable[str], *, train: bool) -> None:
  """Puts the submodules at top-level `paths` in train or eval mode (dropout, BatchNorm)."""
  for p in paths:
    module = getattr(model, p)
    module.train() if train else module.eval()


def map_groups(tree: Any, info: ModelInfo,
               fn: Callable[[str | None, int, jax.Array], jax.Array]) -> Any:
  """Applies fn(group or None, leaf index, leaf) to every leaf of a params-shaped tree."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
  out = [fn(info.group_of(top_key(path)), i, leaf) for i, (path, leaf) in enumerate(leaves)]
  return jax.tree_util.tree_unflatten(treedef, out)
