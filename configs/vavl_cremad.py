r"""VAVL on CREMA-D, six emotion classes (Goncalves et al., arXiv 2305.07216).

  python -m avjax.main --config configs/vavl_cremad.py
  python -m avjax.main --config configs/vavl_cremad.py:smoke   # synthetic_av stand-in

Values follow ilucasgoncalves/VAVL at HEAD c128439 (run_cremad.sh, train.py, net/); the source of
each is noted next to it. Needs crema_d built with its 'features' config: precomputed
wav2vec2-large-robust (T, 1024) and EfficientNet-B2 (T, 1408) features per clip and VAVL's speaker-
independent partition CSVs (labels_consensus_6class_M/label_consensus_5.csv: partition 5, the
builder's vavl_partition default). Targets: the argmax of the CSV's consensus soft labels (rule M).
Model selection: lowest dev cross-entropy.
"""

import importlib.util
import os

from avjax.config import apply_smoke, base_config


def _sibling(name: str):
  """configs/<name>.py as a module (config files are loaded by path, not as a package)."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"_avjax_config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "vavl_cremad"
  c.seed = 0  # train.py --seed (unused by the reference).
  c.dataset.name = "crema_d"
  c.dataset.config = "features"  # VAVL partitions first (vavl_partition 5: run_cremad.sh).
  c.dataset.val_split = "validation"  # Split_Set Development.
  c.dataset.test_split = "test"
  # Sequences padded / cropped to a fixed length (static shapes). CREMA-D clips last 1-5 s:
  # 5 s of wav2vec2 frames at 50 Hz and of video at 30 fps.
  c.input.max_audio_frames = 250
  c.input.max_visual_frames = 150

  c.model.name = "vavl"
  vavl_msp = _sibling("vavl_msp")  # One VAVL architecture (net/avmodel.py) for both corpora.
  c.model.vavl = vavl_msp.get_config().model.vavl.to_dict()

  c.method.name = "vavl"
  c.evals.predictions = {"splits": ("test",)}  # train.py's per-mode prediction CSVs.
  c.task.name = "classification"  # run_cremad.sh --label_type categorical, --output_num 6.
  c.task.labels = "soft_label"  # train.py: CE on the argmax of the consensus soft labels.
  c.method.recon_weight = 2.0  # train.py: CE + 2 * MSE_rec (categorical).

  c.optimizer.name = "adam"  # modelWrapper.py: one torch Adam per module.
  c.optimizer.learning_rate = 5e-5  # run_cremad.sh --lr 5e-5.
  c.optimizer.b1 = 0.95  # betas=(0.95, 0.999).
  c.optimizer.b2 = 0.999
  c.optimizer.weight_decay = 5e-7  # torch Adam weight_decay: L2 added to the gradient.
  c.optimizer.schedule = "constant"
  c.train.batch_size = 32  # run_cremad.sh --batch_size 32.
  c.train.num_epochs = 20  # run_cremad.sh --epochs 20.
  c.train.best_metric = "loss"  # train.py: lowest dev CE.
  c.train.best_mode = "min"
  c.train.log_every_steps = 50
  if arg == "smoke":
    apply_smoke(c)
    vavl_msp.smoke_vavl(c)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
