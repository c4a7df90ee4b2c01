r"""MMCosine on VoxCeleb (Xu et al., ICASSP 2023): speaker identification on VoxCeleb2 dev,
verification (EER, minDCF) on VoxCeleb1 test (VC1) and MMCosine's VoxCeleb2 test pairs (VC2).

  python -m avjax.tfds build data_builders/voxceleb --config=mmcosine --manual_dir=<voxceleb>
  python -m avjax.main --config configs/mmcosine_vox.py                  # concat + MMCosine
  python -m avjax.main --config configs/mmcosine_vox.py:gated            # gated + MMCosine
  python -m avjax.main --config configs/mmcosine_vox.py:film,baseline    # FiLM, plain softmax
  python -m avjax.main --config configs/mmcosine_vox.py:smoke            # tiny synthetic stand-in
  python -m avjax.evaluate --workdir <run> --split vc2_test              # the VC2 trials

The argument is a comma list: a fusion ('concat', default; 'film', 'gated' in MMCosine's symmetric
form: the reference's VoxCeleb FiLM / gated crash, docs/deviations.md), 'baseline' (no MMCosine)
and 'smoke'. Values follow GeWu-Lab/MMCosine_ICASSP23 main_vox2.py at HEAD 00ba0a9 (sources next to
each). Checkpoints are selected on speaker identification accuracy over the builder's held-out
VoxCeleb2 dev utterances (the reference selects on the VC2 test trials); the test split (VC1) is
evaluated once at the selected checkpoint. Reported (MMCosine result1.png): concat VC1 EER 6.81 /
minDCF 0.578, with MMCosine 4.26 / 0.461; VC2 6.21 / 0.580, 4.13 / 0.371.
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
  c.name = "mmcosine_vox" + "".join(f"_{t}" for t in tokens if t != "smoke")
  c.seed = 0  # setup_seed(0) (main_vox2.py:228).
  c.dataset.name = "voxceleb"
  c.dataset.config = "mmcosine"  # 16 kHz PCM, MTCNN-aligned 2 fps faces (data_builders/voxceleb).
  c.dataset.train_split = "train"  # VoxCeleb2 dev.
  c.dataset.val_split = "validation"  # Held-out dev utterances: speaker identification accuracy.
  c.dataset.test_split = "vc1_test"  # VoxCeleb1 test trials; vc2_test via avjax.evaluate.
  # Speaker accuracy (held-out dev utterances) and EER / minDCF on the trials (P_target 0.01,
  # main_vox2.py:85-90); no Shapley contributions (per-example valuation of ~6k-way scores).
  c.evals = {"report": {}, "verification": {"p_target": 0.01}}
  c.input.audio_crop_seconds = 2.015  # max_frames 200: 200 * 160 + 240 = 32240 samples.
  c.input.eval_audio_crop_seconds = 4.015  # 400 frames: the first 64240 samples.
  c.input.frame_sampling = "mmcosine_vox"  # Frames (2, 6) etc. by count; frame 2 at evaluation.
  c.input.num_frames = 2
  c.input.image_size = 224  # RandomResizedCrop(224) + flip per frame; Resize(224, 224) to test.
  c.model.name = "av_resnetse"  # ResNetSE34V2 (SAP, 512) + ResNet-34 faces.
  c.model.fusion = fusion  # main_vox2.py --fusion_method (only concat runs there).
  if fusion != "concat":
    c.model.fusion_kwargs.form = "mmcosine"
  # ResNetSE34V2_audio.py:158-162; ResNet-34; init: no weight_init call, BN gamma ~ N(1, 0.02) in
  # the face ResNet.
  c.model.av_resnetse = {"audio_widths": (32, 64, 128, 256), "face_widths": (64, 128, 256, 512),
                         "attention_dim": 128, "init": "mmcosine"}
  c.model.av_resnet.init = "mmcosine"  # The same for the :smoke stand-in (av_resnet).

  if "baseline" in tokens:
    c.method.name = "baseline"
  else:
    c.method.name = "mmcosine"  # --mmcosine (a type=bool flag: any value is True).
    c.method.scaling = 10.0 if fusion == "concat" else 50.0  # --scaling 10; 50 for FiLM / gated
    # as the author advises (MMCosine issue #1).
    c.method.nce_weight = 0.0  # No NCE term in main_vox2.py.
    c.method.nce_temperature = 0.1

  c.optimizer.name = "sgd"  # --optimizer sgd.
  c.optimizer.learning_rate = 1e-3  # --learning_rate 0.001.
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.optimizer.schedule = "step"  # StepLR per epoch.
  c.optimizer.step_epochs = 70  # --lr_decay_step 70.
  c.optimizer.gamma = 0.1  # --lr_decay_ratio 0.1.
  c.train.batch_size = 256  # --batch_size 256.
  c.train.num_epochs = 200  # --epochs 200.
  if "smoke" in tokens:
    # synthetic_av holds spectrograms, not waveforms: the stand-in trains the CREMA-D model with
    # this config's method and optimizer; tests/data_builders/test_voxceleb.py trains av_resnetse
    # and scores trials on a generated VoxCeleb download.
    apply_smoke(c)
    c.dataset.train_split, c.dataset.val_split, c.dataset.test_split = (
        "train", "validation", "test")
    c.input.eval_audio_crop_seconds = 0.0
    c.input.frame_sampling = "segment"
    c.model.name = "av_resnet"
  return c
