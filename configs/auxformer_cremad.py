r"""AuxFormer on CREMA-D, six emotion classes (Goncalves & Busso, ICASSP 2022).

  python -m avjax.main --config configs/auxformer_cremad.py
  python -m avjax.main --config configs/auxformer_cremad.py:smoke   # synthetic_av stand-in

Values follow ilucasgoncalves/AuxFormer at HEAD 708ba72 (run_model.sh, train.py, net/avmodel_AF.py,
modules/transformer.py); the source of each is noted next to it. Needs crema_d built with its
'features' config. The reference feeds 50-d EMOCA visual features (no projection); the crema_d
records hold VAVL's 1408-d EfficientNet-B2 features, which avjax projects to 50 with the same kind
of bias-free Conv1d the audio gets (docs/deviations.md). Model selection: lowest dev cross-entropy.
"""

from avjax.config import apply_smoke, base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "auxformer_cremad"
  c.seed = 0
  c.dataset.name = "crema_d"
  # VAVL-style partitions first: the builder's vavl_partition 5 (run_model.sh trains partition 1).
  c.dataset.config = "features"
  c.dataset.val_split = "validation"
  c.dataset.test_split = "test"
  c.input.max_audio_frames = 250  # 5 s of wav2vec2 frames at 50 Hz (CREMA-D clips: 1-5 s).
  c.input.max_visual_frames = 150  # 5 s at 30 fps.

  c.model.name = "auxformer"
  c.model.auxformer = dict(
      inputs="features",
      audio_dim=1024,  # wav2vec2-large-robust features -> Conv1d 1024 -> 50.
      visual_dim=1408,  # crema_d 'features' visual records (the reference: EMOCA, 50-d).
      dim=50,  # avmodel_AF.py d_v.
      heads=10,  # --num_heads 10.
      layers=5,  # --layers 5.
      attn_dropout=0.1,  # --attn_dropout (self-attention encoders; cross-modal ones use 0).
      relu_dropout=0.1,  # --relu_dropout.
      res_dropout=0.1,  # --res_dropout.
      embed_dropout=0.25,  # --embed_dropout.
      out_dropout=0.2,  # --out_dropout.
      causal_mask=True,  # --attn_mask (on by default).
      aux_hidden=(512, 256),  # proj_aux1 50 -> 512, proj_aux2 512 -> 256, proj_aux3 256 -> 50.
      aux_repeats=3,  # a_mem / v_mem applied three times.
      stem_channels=32,  # inputs='raw' only (avjax's stems).
  )

  c.method.name = "auxformer"
  c.evals.ablation = {}  # The missing-modality cases: predictions with one input removed.
  c.evals.predictions = {"splits": ("test",)}  # Per-mode prediction CSVs, as VAVL's.
  c.task.name = "classification"
  c.task.labels = "soft_label"  # CE on the argmax of the soft labels.
  c.method.drop_audio = 0.2  # train.py: r < 0.2 zeroes the audio.
  c.method.drop_visual = 0.2  # 0.2 <= r < 0.4 zeroes the visual features.

  c.optimizer.name = "adam"  # train.py: optim.Adam(lr).
  c.optimizer.learning_rate = 0.725e-3  # run_model.sh --lr 0.725e-3.
  c.optimizer.b1 = 0.9  # torch Adam defaults.
  c.optimizer.b2 = 0.999
  c.optimizer.weight_decay = 0.0
  c.optimizer.schedule = "constant"
  c.train.batch_size = 32  # --batch_size 32.
  c.train.num_epochs = 30  # --epochs 30.
  c.train.best_metric = "loss"  # Lowest dev CE.
  c.train.best_mode = "min"
  c.train.log_every_steps = 50
  if arg == "smoke":
    apply_smoke(c)
    c.model.auxformer.update(dict(inputs="raw", audio_dim=64, dim=8, heads=2, layers=1,
                                  aux_hidden=(16, 8), stem_channels=8))
    c.optimizer.learning_rate = 1e-3
    c.train.batch_size = 16
    c.train.num_epochs = 6
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
