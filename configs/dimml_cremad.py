r"""DI-MML (Fan et al., ACM MM 2024) on CREMA-D: two runs, as the authors' two scripts.

  python -m avjax.main --config configs/dimml_cremad.py --workdir runs/dimml_s1        # stage 1
  python -m avjax.main --config configs/dimml_cremad.py:stage2 --workdir runs/dimml_s2 \
      --config.init_from=runs/dimml_s1                                                  # stage 2
  python -m avjax.main --config configs/dimml_cremad.py:smoke   # tiny synthetic stand-in (stage 1)

Values follow fanyunfeng-bit/DI-MML @ 83b9b7a ("DIM": main_CFT.py for stage 1,
main_CFT_stage2.py for stage 2, run.sh); the source of each is next to it. DIM reads its own
CREMA-D spectrograms (scipy, 160,000 samples, (257, 1004), per-clip z-normalised); avjax's closest
build is crema_d's 'ogm_ge' config (OGM-GE's (257, 188) log-STFT), which this config uses.
"""

from avjax import recipes
from avjax.config import apply_smoke, base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "dimml_cremad"
  # The reference selects its checkpoint on the TEST split.
  # num_frames: run.sh: CREMA-D --fps / frames 3.
  # image_size: DIM dataset: RandomResizedCrop(224) + flip; test Resize(224).
  recipes.audio_visual_input(c, "crema_d", num_frames=3, image_size=224)
  c.input.crop_scale = (0.08, 1.0)
  # fusion: Stage 2: ConcatFusion, Linear(1024 -> C) (main_CFT_stage2.py:230).
  # init: Stage 1 applies no weight_init: backbone's own init, torch Linears.
  recipes.resnet18_pair(c, init="mmcosine", fusion="concat")

  c.method.name = "dimml"
  c.method.stage = 1
  c.method.shared_weight = 1.0  # main_CFT.py:44.
  c.method.duc_start = 20  # main_CFT.py:93,318 (hard-coded).
  c.method.temperature = 50.0  # run.sh: CREMA-D tau 50.
  c.method.certainty_temperature = 1.0  # run.sh: CREMA-D T 1.

  c.optimizer.name = "sgd"  # main_CFT.py:32-34,250-251: SGD 1e-3, momentum 0.9, wd 1e-4.
  c.optimizer.learning_rate = 1e-3
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.optimizer.schedule = "step"  # StepLR(70, 0.1), per epoch.
  c.optimizer.step_epochs = 70
  c.optimizer.gamma = 0.1
  c.train.batch_size = 16  # main_CFT.py:26.
  c.train.num_epochs = 150  # main_CFT.py:27.
  parts = set((arg or "").split("_")) - {""}
  if not parts <= {"stage2", "smoke"}:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke', 'stage2', 'stage2_smoke' or "
                     "nothing.")
  if "stage2" in parts:
    c.name += "_stage2"
    c.method.stage = 2
    c.train.num_epochs = 20  # main_CFT_stage2.py: 20 epochs, SGD as stage 1, StepLR(70) idle.
  if "smoke" in parts:
    apply_smoke(c)
    c.method.duc_start = 1  # Select dimensions (and start DUC) in the second smoke epoch.
  return c
