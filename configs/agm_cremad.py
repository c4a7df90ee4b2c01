r"""AGM on CREMA-D (Li et al., ICCV 2023), concatenation fusion, the authors' code's form.

  python -m avjax.main --config configs/agm_cremad.py
  python -m avjax.main --config configs/agm_cremad.py:smoke   # tiny synthetic stand-in

Values follow lihong2303/AGM_ICCV2023 @ 5a65542 (utils/config.py, tasks/CREMAD_task.py,
run/CREMAD_main.py) and the authors' answers in lihongcs/AGM issues; the source of each is noted
next to it. Needs the crema_d dataset built with its 'ogm_ge' config (AGM's CREMA-D loader uses
OGM-GE's audio front end: 22.05 kHz, 3 s, log-STFT (257, 188); one frame per clip).
Differences that remain (docs/deviations.md, AGM): the loader's first-90 % subsets of train.csv /
test.csv, its frame fixed by np.random.seed(999), and kaiming-uniform conv init are not
reproduced (avjax: the whole splits, random frames, kaiming-normal).
"""

from avjax import recipes
from avjax.config import apply_smoke, base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.name = "agm_cremad"
  c.seed = 999  # utils/config.py --random_seed 999.
  # The reference selects its checkpoint on the TEST split (run/CREMAD_main.py).
  # dataset config: dataloader/CREMAD_loader.py: OGM-GE's STFT front end.
  # num_frames: one frame per clip (CREMAD_loader.py:147-155).
  recipes.audio_visual_input(c, "crema_d", num_frames=1, build_config="ogm_ge")
  # fusion: model/CREMAD_net.py: late-fusion concat head.
  # init: kaiming fan_out (the original draws it uniform), xavier, BN 1 / 0.
  recipes.resnet18_pair(c, init="ogm_ge", fusion="concat")

  c.method.name = "agm"
  c.method.variant = "original"
  c.method.alpha = 1.5  # Authors' CREMA-D value (lihongcs/AGM issues #3, #5).
  c.method.exponent_cap = 10.0  # run/CREMAD_main.py:151-152: min(r* - r, 10).
  c.method.clip_threshold = 1.0  # run/CREMAD_main.py:233-238: head grad outside [-1, 1] ...
  c.method.clip_norm = 1.0  # ... clips the global norm to 1.
  c.method.modulation_starts = 0  # Authors: modulate the whole run (issue #10).
  c.method.modulation_ends = None

  c.optimizer.name = "sgd"  # tasks/CREMAD_task.py:35-38 (--optim is ignored).
  c.optimizer.learning_rate = 1e-4  # README example; the CREMA-D value is "in the paper" (#5).
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.optimizer.schedule = "step"  # StepLR(70, 0.1), stepped per epoch.
  c.optimizer.step_epochs = 70
  c.optimizer.gamma = 0.1
  c.train.batch_size = 64  # README example --batch_size 64 (config default 16).
  c.train.num_epochs = 100  # README example; the authors' CREMA-D runs are 1500 epochs (#10).
  if arg == "smoke":
    apply_smoke(c)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; use 'smoke' or nothing.")
  return c
