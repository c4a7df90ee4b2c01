"""What the sweeps (synthetic, cremad, ks) share beyond their recipes: the entries that are not one
plain run of a registered method on the recipe's av_resnet model.

  VARIANTS          a method again under another label with other settings.
  NEEDS             chained runs: {entry: nested settings whose values name the entry whose run
                    (the same dataset, fusion and seed) the setting takes as a workdir}; the sweep
                    runs them after what they need (avjax/sweep.py).
  SETTINGS          per-entry settings every sweep pins: the model (and fusion) each
                    architecture-level method brings, as its configs/<method>_cremad.py sets them,
                    and `unimodal` as the frames-alone run (its audio twin is a variant).
"""

VARIANTS = {
    # The audio-alone twin of `unimodal` (whose settings in the recipes train the frames): UMT's
    # audio teacher and the audio-alone reference.
    "unimodal_audio": {"method": "unimodal", "settings": {"method": {"unimodal": {
        "modality": "audio"}}}},
    # DI-MML's second stage (configs/dimml_cremad.py:stage2): the fusion head trained on the frozen
    # stage-1 model, initialised from the stage-1 run: the paper's final model.
    "dimml_stage2": {"method": "dimml", "settings": {"method": {"dimml": {"stage": 2}}}},
}

NEEDS = {
    # UMT distils from uni-modal teachers: the two `unimodal` runs (configs/umt_cremad.py).
    "umt": {"method": {"umt": {"teacher_audio": "unimodal_audio", "teacher_visual": "unimodal"}}},
    # ReconBoost starts from pre-trained encoders (docs/comparison.md: the frames-alone run's).
    "reconboost": {"init_from": "unimodal"},
    "dimml_stage2": {"init_from": "dimml"},
}

SETTINGS = {
    "unimodal": {"method": {"unimodal": {"modality": "visual"}}},
    "greedy": {"model": {"name": "av_resnet_mmtm"}},  # configs/greedy_cremad.py: MMTM blocks.
    "aug": {"model": {"name": "av_resnet_aug", "fusion": "sum"}},  # configs/aug_cremad.py.
    "mla": {"model": {"fusion": "shared_head"}},  # configs/mla_cremad.py: one shared head.
}


def entries(methods) -> tuple[str, ...]:
  """The registered `methods` and the variants."""
  return tuple(methods) + tuple(VARIANTS)


def with_settings(method_overrides: dict) -> dict:
  """`method_overrides` ({entry: nested settings}) with SETTINGS merged in (SETTINGS win)."""
  def merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
      out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out
  out = dict(method_overrides)
  for entry, settings in SETTINGS.items():
    out[entry] = merge(out.get(entry, {}), settings)
  return out
