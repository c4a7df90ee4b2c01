"""The config contract: the default tree every experiment config starts from, and its validation.

Every `configs/*.py` calls `base_config()` and edits values; the tree is locked, so a misspelt key
(in a file or a `--config.x=...` override) is an error instead of a silently ignored setting.
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Iterable

import ml_collections
from ml_collections import config_dict

from avjax.registry import ConfigError


RESNET18_WIDTHS = (64, 128, 256, 512)  # torchvision ResNet-18's stage widths.


def base_config() -> ml_collections.ConfigDict:
  """Defaults shared by all experiments; each config file overrides what its paper specifies."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # One root seed: init, data order, augmentation and per-step keys derive from it.
  c.name = "experiment"  # Default workdir name: runs/<name>.
  c.init_from = ""  # Optional checkpoint directory to initialise parameters from.

  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = "synthetic_av"  # TFDS builder name.
  c.dataset.config = "audio_dominant"  # TFDS builder config.
  c.dataset.data_dir = ml_collections.FieldReference(None, field_type=str)  # None: TFDS default.
  c.dataset.train_split = "train"
  # Split that selects the checkpoint: the dataset's own, 'heldout' (a seeded, class-stratified
  # fold of train, disjoint by speaker / video; avjax/protocol.py), or '' (keep the final state).
  c.dataset.val_split = "validation"
  c.dataset.heldout_fraction = 0.1  # val_split='heldout': the fold's share of the training split.
  c.dataset.heldout_seed = 0  # Fixed across seeds: every method and seed trains on the same data.
  c.dataset.heldout_group = "auto"  # Record feature grouping examples (speaker, video); '' none.
  c.dataset.test_split = "test"  # '' to skip the final test evaluation.
  c.dataset.auto_build = True  # Build datasets that need no download (synthetic_av) when missing.
  c.dataset.build_overrides = ml_collections.ConfigDict()  # synthetic_av size overrides (smoke runs).

  c.input = ml_collections.ConfigDict()
  c.input.num_frames = 0  # Frames per clip fed to the model; 0: all stored frames.
  c.input.image_size = 0  # Crop/resize side; 0: keep the stored size.
  # Which stored frames: 'segment' | 'ks' | 'ks_no_short' | 'ave' | 'random' (data/transforms.py).
  c.input.frame_sampling = "segment"
  c.input.audio_crop_seconds = 0.0  # > 0: a window of the stored spectrogram (VGGSound: 5 s).
  # > 0: evaluation's window instead, from the clip's start (MMCosine's VoxCeleb: the first 4.015 s);
  # 0: evaluation takes the training window's length, centred.
  c.input.eval_audio_crop_seconds = 0.0
  c.input.random_resized_crop = True  # Training frames: RandomResizedCrop(scale) + flip.
  c.input.crop_scale = (0.08, 1.0)
  # Training crops: the host draws each crop box and flip, the jitted step resamples whole frames
  # (avjax.data.device_augment): True / False, or None (default): on when the backend is a GPU /
  # TPU (where it frees ~2/3 of the host's per-example work), off on a CPU backend (slower than PIL).
  c.input.crop_on_device = config_dict.placeholder(bool)
  c.input.flip = True
  c.input.mean = (0.485, 0.456, 0.406)  # ImageNet statistics, as the references.
  c.input.std = (0.229, 0.224, 0.225)
  c.input.spec_augment = False  # SpecAugment on training spectrograms.
  c.input.freq_masks = 1
  c.input.freq_mask_width = 8
  c.input.time_masks = 1
  c.input.time_mask_width = 8
  c.input.max_audio_frames = 0  # Precomputed feature sequences: pad / crop to this many frames.
  c.input.max_visual_frames = 0
  c.input.modality_dropout = 0.0  # Per-example probability of zeroing each modality (training).
  # What the model's audio slot reads: 'audio' (the stored spectrogram) or 'flow' (UCF101's
  # optical flow frames, sampled, cropped and flipped with the RGB frames; needs
  # model.av_resnet.audio_encoder='frames').
  c.input.audio_source = "audio"
  c.input.num_workers = 0  # grain worker processes (0: decode in the main process).

  # What the run predicts (avjax/tasks.py), independent of the method.
  c.task = ml_collections.ConfigDict()
  c.task.name = "classification"  # 'classification' | 'regression' | 'classification_regression'.
  c.task.labels = "label"  # Class targets: 'label', or 'soft_label' (argmax of the soft labels).
  c.task.targets = ()  # Regression: target names (metrics ccc_<name>, ...).
  c.task.target_indices = ()  # Regression: columns of batch['attributes'] (default 0..R-1).
  c.task.regression_loss = "ccc"  # 'ccc': sum_k (1 - CCC_k) (VAVL); 'mse'.
  c.task.target_range = (0.0, 1.0)  # Regression outputs' range, for models that bound them (VAT).
  c.task.regression_weight = 1.0  # classification_regression: weight of the regression loss.

  # Evaluators run at every evaluation (avjax/evaluators): name -> settings. Built in: report (the
  # task's metrics), contributions (Shapley per modality), ablation (masked-input uni-modal
  # metrics), predictions (per-example CSVs), robustness (noisy / missing modality), ground_truth
  # (by which modality carries the label), cmvqvae (codebook / mask / pictures), matching (VAT
  # pre-training's objectives).
  c.evals = ml_collections.ConfigDict()
  c.evals.report = ml_collections.ConfigDict()
  c.evals.contributions = ml_collections.ConfigDict(dict(value_fn="size"))

  c.model = ml_collections.ConfigDict()
  c.model.name = "av_resnet"
  c.model.fusion = "concat"
  c.model.fusion_kwargs = ml_collections.ConfigDict()
  # film / gated only: 'ogm_ge' (asymmetric, as OGM-GE) or 'mmcosine' (symmetric, as MMCosine).
  c.model.fusion_kwargs.form = "ogm_ge"
  c.model.fusion_kwargs.condition = "audio"  # ogm_ge-form film / gated: the conditioning modality.
  # Each model's own settings sit under config.model.<model name> (vat, vavl, auxformer, cmvqvae,
  # av_resnetse: set by their config files). av_resnet's are here; its variants av_resnet_mmtm and
  # av_resnet_aug read the same section (the same encoders; their extras are method overrides).
  c.model.av_resnet = ml_collections.ConfigDict()
  c.model.av_resnet.widths = RESNET18_WIDTHS  # The references' encoders.
  c.model.av_resnet.init = "ogm_ge"  # 'ogm_ge' or 'mmcosine' initialisation scheme.
  c.model.av_resnet.visual_channels = 3
  # The audio slot: 'spectrogram' ((B, F, T, C) image) or 'frames' ((B, T, H, W, C) frames through
  # a frame encoder, e.g. optical flow with audio_channels=2).
  c.model.av_resnet.audio_encoder = "spectrogram"
  c.model.av_resnet.audio_channels = 1
  # Recompute each residual block in the backward pass (memory); av_resnet only.
  c.model.av_resnet.remat = False

  c.method = ml_collections.ConfigDict()
  c.method.name = "baseline"

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "sgd"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.momentum = 0.9
  c.optimizer.nesterov = False
  c.optimizer.weight_decay = 1e-4
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-8
  c.optimizer.schedule = "step"
  c.optimizer.step_epochs = 70  # StepLR step size, in epochs.
  c.optimizer.gamma = 0.1
  c.optimizer.warmup_epochs = 0
  c.optimizer.grad_clip_norm = 0.0

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 64  # Global batch size.
  c.train.eval_batch_size = 0  # 0: same as batch_size.
  c.train.num_epochs = 100
  c.train.log_every_steps = 50
  c.train.eval_every_epochs = 1
  c.train.checkpoint_every_epochs = 1
  c.train.checkpoint_every_steps = 0  # Also checkpoint every N steps (0: only at epoch ends).
  c.train.grad_accum_steps = 1  # Average gradients over N steps per update (batch N x batch_size).
  c.train.keep_checkpoints = 2  # Latest N kept, plus the best by `best_metric`.
  c.train.best_metric = "accuracy"  # Validation metric that selects the best checkpoint.
  c.train.best_mode = "max"
  # 'validation' (val_split) or 'test': only to reproduce a reference that selected on the test
  # split; such runs label their rows as test results and warn at every evaluation.
  c.train.select_on = "validation"
  c.train.compute_dtype = "float32"  # 'bfloat16': mixed precision (float32 master weights).
  c.train.nonfinite = "stop"  # 'stop' the run, or 'skip' the update and count it.
  c.train.progress = True

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # Data-parallel devices; -1: all.
  c.mesh.distributed = "auto"  # 'auto' | 'on' | 'off': jax.distributed.initialize().
  c.mesh.coordinator_address = ""
  c.mesh.num_processes = 1
  c.mesh.process_id = 0
  return c


def apply_smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Points an experiment at a tiny synthetic_av build with tiny sizes: about a minute on a CPU."""
  c.dataset.name = "synthetic_av"
  if c.dataset.config not in ("audio_dominant", "balanced", "debiased", "complementary"):
    c.dataset.config = "audio_dominant"
  c.dataset.data_dir = None
  c.dataset.build_overrides = ml_collections.ConfigDict(
      dict(num_train=256, num_validation=64, num_test=64))
  c.input.num_frames = 2
  c.input.audio_crop_seconds = 0.0  # synthetic_av's spectrograms are already short.
  c.input.image_size = 32
  c.model.av_resnet.widths = (8, 16, 32, 64)
  c.train.batch_size = 32
  c.train.num_epochs = 2
  c.train.log_every_steps = 4
  c.name = c.name + "_smoke"
  return c


_ONE_OF = {
    "optimizer.name": ("sgd", "adam", "adamw"),
    "optimizer.schedule": ("constant", "step", "cosine"),
    "train.nonfinite": ("stop", "skip"),
    "train.compute_dtype": ("float32", "bfloat16"),
    "input.frame_sampling": ("segment", "ks", "ks_no_short", "ave", "random", "mmcosine_vox"),
    "input.audio_source": ("audio", "flow"),
    "model.av_resnet.audio_encoder": ("spectrogram", "frames"),
    "train.best_mode": ("max", "min"),
    "mesh.distributed": ("auto", "on", "off"),
}


def validate(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks what can be checked before any data is read or anything compiled; returns the config
  to run: `with_method(c)`, i.e. config.method with the chosen method's settings only."""
  for key, allowed in _ONE_OF.items():
    *sections, name = key.split(".")
    value = functools.reduce(lambda d, k: d[k], sections, c)[name]
    if value not in allowed:
      raise ConfigError(f"config.{key}={value!r} is not one of {allowed}.")
  if c.train.grad_accum_steps < 1:
    raise ConfigError("config.train.grad_accum_steps must be >= 1 (1: no accumulation).")
  if c.train.batch_size < 1 or c.train.num_epochs < 0:
    raise ConfigError("config.train.batch_size must be >= 1 and config.train.num_epochs >= 0.")
  positive = ("log_every_steps", "eval_every_epochs", "checkpoint_every_epochs", "keep_checkpoints")
  for key in positive:
    if c.train[key] < 1:
      raise ConfigError(f"config.train.{key}={c.train[key]!r} must be >= 1 (the last epoch is "
                        "always evaluated and checkpointed: a large interval skips the others).")
  if c.train.checkpoint_every_steps < 0:
    raise ConfigError("config.train.checkpoint_every_steps must be >= 0 (0: at epoch ends only).")
  counts = ("num_frames", "image_size", "freq_masks", "freq_mask_width", "time_masks",
            "time_mask_width", "max_audio_frames", "max_visual_frames", "num_workers",
            "audio_crop_seconds", "eval_audio_crop_seconds")
  negative = [f"input.{k}={c.input[k]!r}" for k in counts if c.input[k] < 0]
  if negative:
    raise ConfigError(f"config.{', config.'.join(negative)} must be >= 0 (0: the documented "
                      "default behaviour, see avjax/config.py).")
  if not 0 <= c.input.modality_dropout < 1:
    raise ConfigError(f"config.input.modality_dropout={c.input.modality_dropout!r} must be in "
                      "[0, 1).")
  low, high = c.input.crop_scale
  if not 0 < low <= high <= 1:
    raise ConfigError(f"config.input.crop_scale={tuple(c.input.crop_scale)} must satisfy "
                      "0 < low <= high <= 1.")
  _check_audio_source(c)
  from avjax import protocol  # pylint: disable=import-outside-toplevel
  protocol.validate(c)
  from avjax import methods, models  # Late import: registries fill on import.
  models.MODELS.get(c.model.name)
  if c.model.av_resnet.remat and c.model.name != "av_resnet":
    key = models.MODELS.get(c.model.name).remat_key
    raise ConfigError("config.model.av_resnet.remat is for the av_resnet model; "
                      + (f"{c.model.name!r} takes recomputation as config.{key}."
                         if key else f"{c.model.name!r} has no recomputation option."))
  models.check_fusion(c.model.fusion)
  blocks = method_sections(c)
  sections = [("config.method", c.method.name, set(c.method.keys()) - {"name", *blocks})]
  sections += [(f"config.method.{name}", name, set(block.keys())) for name, block in blocks.items()]
  for where, name, keys in sections:
    takes = methods.METHODS.get(name).settings_keys()
    unknown = sorted(keys - set(takes))
    if unknown:
      raise ConfigError(f"{where} has key(s) {unknown} that method {name!r} does not take; its "
                        f"settings are {sorted(takes)} (defaults where unset).")
  # Other methods' settings are checked now, not when a later run of several methods reaches
  # them; their needs of the model are checked when they run (a comparison may run a method with
  # another model or fusion: AUG's summed classifiers, Greedy's MMTM blocks).
  for name in blocks:
    if name != c.method.name:
      try:
        methods.base.parse_settings(methods.METHODS.get(name).Settings, with_method(c, name))
      except ConfigError as e:
        raise ConfigError(f"config.method.{name} (used when method {name!r} runs): {e}") from e
  run = with_method(c)
  from avjax import evaluators, tasks  # pylint: disable=import-outside-toplevel
  tasks.TASKS.get(run.task.name).validate(run)
  check_capabilities(run)
  evaluators.validate(run, models.capabilities(run))
  methods.METHODS.get(run.method.name).validate(run)
  return run


def check_capabilities(c: ml_collections.ConfigDict) -> None:
  """The method's required model capabilities against the configured model's (one line naming
  what is missing, how to get it with this model if it can, and the models that have it)."""
  from avjax import methods, models  # Late import: registries fill on import.
  from avjax.models.contract import CAPABILITIES  # pylint: disable=import-outside-toplevel
  from avjax.tasks import TASKS  # pylint: disable=import-outside-toplevel
  required = methods.METHODS.get(c.method.name).requires | TASKS.get(c.task.name).requires
  spec = models.MODELS.get(c.model.name)
  missing = sorted(required - spec.capabilities(c))
  if not missing:
    return
  hints = [spec.hints[m] for m in missing if m in spec.hints]
  having = [n for n in models.MODELS.names()
            if set(missing) <= models.MODELS.get(n).capabilities(c)]
  described = "; ".join(f"{m}: {CAPABILITIES[m]}" for m in missing)
  if hints:
    fix = "; ".join(hints)
  elif len(having) == 1:
    fix = f"set config.model.name={having[0]!r}"
  elif having:
    fix = f"set config.model.name to one of {having}"
  else:
    fix = "no registered model has them"
  raise ConfigError(f"method {c.method.name!r} with task {c.task.name!r} needs model capabilities "
                    f"{missing} ({described}), "
                    f"which model {c.model.name!r} does not have with these settings: {fix}.")


# Settings that moved from config.method to config.task (old name -> config.task key).
_MOVED_TO_TASK = {"target_indices": "target_indices", "target_names": "targets",
                  "target_range": "target_range", "regression_weight": "regression_weight"}
_EMOTION_METHODS = ("vavl", "auxformer")  # Their class targets were always the soft labels.
# What each method evaluated before config.evals existed.
_LEGACY_EVALS = {"cmvqvae": {"report": {}, "contributions": {}, "cmvqvae": {}},
                 "vat_pretrain": {"matching": {}},
                 "vavl": {"report": {}, "contributions": {}, "predictions": {}},
                 "auxformer": {"report": {}, "contributions": {}, "ablation": {},
                               "predictions": {}}}


def upgrade_saved(saved: dict) -> dict:
  """A config.json (nested dict) written before config.task / config.evals existed, as today's
  keys: the emotion methods' config.method.task ('categorical': classification on the soft labels;
  'dimensional': regression of arousal / valence / dominance with the CCC loss) and vat_finetune's
  task settings move to config.task; what each method evaluated becomes config.evals (with the
  contributions' value_fn and CM-VQVAE's num_pictures); av_resnet's top-level config.model keys
  move under config.model.av_resnet (`_upgrade_model`). Newer configs come back unchanged."""
  out = copy.deepcopy(saved)
  _upgrade_protocol(out)
  _upgrade_model(out)
  method = out.setdefault("method", {})
  if "evals" not in out:  # Before config.evals: what the method evaluated, with its settings.
    evals = copy.deepcopy(_LEGACY_EVALS.get(method.get("name"),
                                            {"report": {}, "contributions": {}}))
    if "contributions" in evals:
      evals["contributions"]["value_fn"] = method.get("value_fn", "size")
    if "cmvqvae" in evals and "num_pictures" in method:
      evals["cmvqvae"]["num_pictures"] = method["num_pictures"]
    out["evals"] = evals
  if "task" in out:
    return out
  task = base_config().task.to_dict()
  task = {k: list(v) if isinstance(v, tuple) else v for k, v in task.items()}
  old = method.pop("task", None)
  if old == "dimensional":
    task.update(name="regression", targets=["arousal", "valence", "dominance"],
                regression_loss="ccc")
  elif old in ("classification", "regression", "classification_regression"):  # vat_finetune.
    task.update(name=old, regression_loss="mse")
  elif method.get("name") in _EMOTION_METHODS:  # 'categorical', given or by default.
    task["labels"] = "soft_label"
  for key, new in _MOVED_TO_TASK.items():
    if key in method:
      task[new] = method.pop(key)
  out["task"] = task
  return out


def _upgrade_protocol(out: dict) -> None:
  """Before config.train.select_on / dataset.heldout_*: the defaults, and select_on='test' where the
  run selected on its test split (val_split == test_split), so its rows read as what they are."""
  dataset, train = out.setdefault("dataset", {}), out.setdefault("train", {})
  defaults = base_config()
  for key in ("heldout_fraction", "heldout_seed", "heldout_group"):
    dataset.setdefault(key, defaults.dataset[key])
  if "select_on" not in train:
    on_test = bool(dataset.get("test_split")) and dataset.get("val_split") == dataset["test_split"]
    train["select_on"] = "test" if on_test else "validation"


# av_resnet's settings, top-level config.model keys before they moved under config.model.av_resnet.
AV_RESNET_KEYS = ("widths", "init", "visual_channels", "audio_encoder", "audio_channels", "remat")
# Old override -> its key today (python -m avjax.main --config.model.widths=... names the new one).
MOVED_KEYS = {f"model.{k}": f"model.av_resnet.{k}" for k in AV_RESNET_KEYS}


def _upgrade_model(out: dict) -> None:
  """Before config.model.<model name> sections: av_resnet's top-level keys go under
  config.model.av_resnet; the ones other models read from there too go to their own sections
  (av_resnetse's `init`, CM-VQVAE's ablation-4 `widths`)."""
  model = out.get("model")
  if not isinstance(model, dict) or "av_resnet" in model:
    return
  old = {k: model.pop(k) for k in AV_RESNET_KEYS if k in model}
  if not old:
    return
  section = json.loads(base_config().model.av_resnet.to_json())  # As config.json stores it.
  section.update(old)
  model["av_resnet"] = section
  if isinstance(model.get("av_resnetse"), dict):
    model["av_resnetse"].setdefault("init", section["init"])
  if isinstance(model.get("cmvqvae"), dict):
    model["cmvqvae"].setdefault("widths", section["widths"])


def moved_key_hint(argv: Iterable[str]) -> str | None:
  """One line naming today's key for a command-line override of a key that moved (MOVED_KEYS), or
  None: `--config.model.widths=(8,16,32,64)` -> use --config.model.av_resnet.widths."""
  for arg in argv:
    name = arg.lstrip("-").split("=", 1)[0]
    flag, _, key = name.partition(".")
    if key in MOVED_KEYS:
      return (f"config.{key} moved: model settings sit under config.model.<model name>; use "
              f"--{flag}.{MOVED_KEYS[key]} (av_resnet, av_resnet_mmtm, av_resnet_aug)"
              + (f", or --{flag}.model.cmvqvae.widths for CM-VQVAE's ablation 4"
                 if key == "model.widths" else "")
              + (f", or --{flag}.model.av_resnetse.init" if key == "model.init" else "") + ".")
  return None


def method_sections(c: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  """config.method.<method name> sections: settings used only when that method runs."""
  return {k: v for k, v in c.method.items() if isinstance(v, (dict, ml_collections.ConfigDict))}


def with_method(c: ml_collections.ConfigDict, name: str | None = None,
                keep: Iterable[str] | None = None) -> ml_collections.ConfigDict:
  """A copy of `c` that runs method `name` (default: config.method.name) with its own settings only.

  config.method's keys are the settings of the method it names; a config may also carry other
  methods' settings, each under config.method.<method name> (configs/compare_balancing.py runs
  several methods from one file). The copy keeps the top-level settings in `keep` (default: all of
  them when `name` is the config's method, none for another method), adds those under
  config.method.<name>, and drops every method's section.
  """
  from avjax import methods  # Late import: the registry fills on import.
  name = name or c.method.name
  methods.METHODS.get(name)  # An unknown name fails here, with the known ones.
  blocks = method_sections(c)
  if keep is None:
    keep = c.method.keys() if name == c.method.name else ()
  keep = set(keep)
  out = copy.deepcopy(c)
  with out.unlocked():
    for key in [k for k in out.method.keys() if k != "name" and (k in blocks or k not in keep)]:
      del out.method[key]
    out.method.name = name
    for key, value in blocks.get(name, {}).items():
      out.method[key] = value
  return out


def _check_audio_source(c: ml_collections.ConfigDict) -> None:
  """Optical flow in the audio slot needs a frame encoder and none of the spectrogram options; a
  frame encoder in the audio slot needs frames there."""
  m = c.model.av_resnet
  if c.input.audio_source != "flow":
    if m.audio_encoder == "frames":
      raise ConfigError("config.model.av_resnet.audio_encoder='frames' encodes (T, H, W, C) frames "
                        "in the audio slot, but config.input.audio_source is 'audio' "
                        "(spectrograms): set input.audio_source='flow' (a dataset with optical "
                        "flow, e.g. ucf101) or model.av_resnet.audio_encoder='spectrogram'.")
    return
  if c.model.name != "av_resnet" or m.audio_encoder != "frames":
    raise ConfigError("config.input.audio_source='flow' feeds (T, H, W, 2) flow frames to the "
                      "audio slot: use config.model.name='av_resnet' with model.av_resnet."
                      "audio_encoder='frames' and model.av_resnet.audio_channels=2.")
  if m.audio_channels != 2:
    raise ConfigError(f"config.model.av_resnet.audio_channels={m.audio_channels}, but optical flow "
                      "has 2 channels (u, v): set config.model.av_resnet.audio_channels=2.")
  spectrogram_only = [k for k in ("spec_augment", "audio_crop_seconds", "eval_audio_crop_seconds")
                      if c.input[k]]
  if c.input.crop_on_device:  # None (automatic) resolves to off for flow.
    spectrogram_only.append("crop_on_device")
  if spectrogram_only:
    raise ConfigError(f"config.input.{', '.join(spectrogram_only)} cannot be used with "
                      "input.audio_source='flow' (spectrogram options, and flow frames are cropped "
                      "on the host); turn them off.")
