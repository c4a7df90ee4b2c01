r"""MMCosine on SSW60 (Xu et al., ICASSP 2023, Table 1's bird column), with or without MMCosine.

  python -m avjax.tfds build data_builders/ssw60 --config=mmcosine --manual_dir=<unpacked ssw60>
  python -m avjax.main --config configs/mmcosine_ssw60.py                # concat + MMCosine
  python -m avjax.main --config configs/mmcosine_ssw60.py:gated          # gated + MMCosine
  python -m avjax.main --config configs/mmcosine_ssw60.py:film,baseline  # FiLM, plain softmax
  python -m avjax.main --config configs/mmcosine_ssw60.py:smoke          # tiny synthetic stand-in

The argument is a comma list: a fusion ('concat', default; 'film', 'gated' in MMCosine's symmetric
form), 'baseline' (cross-entropy without MMCosine, the table's rows without a dagger) and 'smoke'.
MMCosine released no SSW60 script or loader (its README points to SSW60's repository), so the
training settings are its CREMA-D ones (main_CD.py argparse defaults at HEAD 00ba0a9) and the data
settings are avjax's documented choices (data_builders/ssw60). Reported top-1 (MMCosine project
page, result1.png): concat 73.32 / 75.95 with MMCosine, FiLM 71.67 / 74.30, gated 70.64 / 75.70.
The checkpoint is selected on the builder's validation fold (15% of the training videos), and the
test split is evaluated once at it, unlike the reference's test-set selection.
"""

from avjax.config import apply_smoke, base_config

FUSIONS = ("concat", "film", "gated")


def get_config(arg: str | None = None):
  tokens = [t for t in (arg or "").split(",") if t]
  unknown = [t for t in tokens if t not in (*FUSIONS, "baseline", "smoke")]
  if unknown or sum(t in FUSIONS for t in tokens) > 1:
    raise ValueError(f"Unknown config argument {arg!r}; use a comma list of one fusion of "
                     f"{FUSIONS}, 'baseline' and 'smoke' (e.g. 'gated,baseline').")
  fusion = next((t for t in tokens if t in FUSIONS), "concat")
  c = base_config()
  c.name = "mmcosine_ssw60" + "".join(f"_{t}" for t in tokens if t != "smoke")
  c.seed = 0  # main_CD.py --random_seed 0.
  c.dataset.name = "ssw60"
  c.dataset.config = "mmcosine"  # data_builders/ssw60: 16 kHz PSD (257, 1004), 1 fps frames.
  c.dataset.val_split = "validation"  # The builder's seeded, species-stratified fold of train.
  c.dataset.test_split = "test"  # SSW60's official test videos.
  c.input.num_frames = 3  # Three of the ten stored 1 fps frames (segment centres at evaluation).
  c.input.image_size = 224  # main_CD.py's RandomResizedCrop(224) / Resize(224, 224).
  c.model.name = "av_resnet"
  c.model.fusion = fusion  # main_CD.py --fusion_method.
  if fusion != "concat":
    c.model.fusion_kwargs.form = "mmcosine"  # The symmetric FiLM / gated of MMCosine's models.
  c.model.av_resnet.init = "mmcosine"  # MMCosine never calls weight_init (BN gamma ~ N(1, 0.02)).
  c.model.av_resnet.widths = (64, 128, 256, 512)  # ResNet-18.

  if "baseline" in tokens:
    c.method.name = "baseline"  # main_CD.py --mmcosine False.
  else:
    c.method.name = "mmcosine"  # main_CD.py --mmcosine True.
    # --scaling 10 for concat; the author recommends a much larger s for FiLM / gated, "such as
    # 50" (MMCosine issue #1).
    c.method.scaling = 10.0 if fusion == "concat" else 50.0
    c.method.nce_weight = 0.0  # main_CD.py --lam 0.
    c.method.nce_temperature = 0.1  # NCELoss(temperature=0.1).

  c.optimizer.name = "sgd"  # main_CD.py --optimizer sgd.
  c.optimizer.learning_rate = 1e-3  # --learning_rate 0.001.
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.optimizer.schedule = "step"  # StepLR, stepped per epoch.
  c.optimizer.step_epochs = 100  # --lr_decay_step 100.
  c.optimizer.gamma = 0.1  # --lr_decay_ratio 0.1.
  c.train.batch_size = 32  # --batch_size 32.
  c.train.num_epochs = 200  # --epochs 200.
  if "smoke" in tokens:
    apply_smoke(c)
  return c
