r"""Input-pipeline throughput per CPU core: avjax's grain pipeline against a reference-style loader.

  python scripts/benchmark_input.py [--examples 256] [--batch 64] [--frames 1] [--workdir DIR] \
      [--json out.json]

Both produce the OGM-GE CREMA-D training input: a (257, 188) log-STFT and `--frames` 224x224
RandomResizedCrop + flip + normalised frames per clip, from the same generated CREMA-D download
(the test fixture: 480x360 FLV video, 16 kHz WAV):

  * reference-style: what the OGM-GE dataset class does per item, in one process like a PyTorch
    DataLoader worker: librosa.load at 22.05 kHz (resampling), tile to 3 s, STFT (512, hop 353),
    log; PIL-open 1 fps JPEG frames extracted beforehand (as the reference's preprocessing does),
    RandomResizedCrop(224) + flip with PIL, normalise.
  * avjax: `data_builders/crema_d` ('ogm_ge' config) built once, then `avjax.data.train_batches`
    with the trainer's transform (JPEG decode, crop, flip, normalise), timed as scripts/benchmark.py
    times it (difference of two complete runs; CPU time of this process and its workers).

Examples per CPU-second is the number that says how many cores a host needs per accelerator.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from typing import Any

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

_EXAMPLES = flags.DEFINE_integer("examples", 256, "Examples timed on each side.")
_BATCH = flags.DEFINE_integer("batch", 64, "avjax batch size.")
_FRAMES = flags.DEFINE_integer("frames", 1, "Frames per clip.")
_WORKERS = flags.DEFINE_integer("num_workers", 0, "avjax grain worker processes.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the fixture download and build go "
                               "(default: a temporary directory, removed at the end).")
_JSON = flags.DEFINE_string("json", None, "Optional path to write the numbers as JSON.")

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def prepare(workdir: str) -> tuple[str, str, list[str]]:
  """Generates the CREMA-D fixture download, extracts 1 fps JPEGs for the reference loader and
  builds crema_d/ogm_ge. Returns (download folder, tfds data_dir, good clip ids)."""
  from pathlib import Path

  import numpy as np
  from PIL import Image

  import data_builders.crema_d as crema_d
  from avjax.media import video
  from tests.data_builders import fixtures

  root = Path(workdir) / "download"
  data_dir = os.path.join(workdir, "tfds")
  if not (root / "AudioWAV").exists():
    fixtures.make_crema_d(root)
  fixture_good = sorted(p.stem for p in (root / "AudioWAV").glob("*.wav")
                        if (root / "VideoFlash" / f"{p.stem}.flv").exists())
  good = []
  for name in fixture_good:
    out = root / "visual" / name
    if not out.exists():
      try:
        frames = video.decode_frames(str(root / "VideoFlash" / f"{name}.flv"), fps=1.0)
      except Exception:  # pylint: disable=broad-except  # The fixture's defective clips.
        continue
      out.mkdir(parents=True)
      for i, frame in enumerate(frames):
        Image.fromarray(frame).save(out / f"{i:04d}.jpg", quality=95)
    try:  # Keep the clips the reference loader can read (the fixture has defective ones).
      reference_item(str(root), name, 1, np.random.default_rng(0))
    except Exception:  # pylint: disable=broad-except
      continue
    good.append(name)
  crema_d.build("ogm_ge", data_dir=data_dir, manual_dir=str(root), num_workers=0)
  return str(root), data_dir, good


def reference_item(root: str, name: str, frames: int, rng: Any) -> tuple[Any, Any]:
  """One training example the way the OGM-GE CREMA-D dataset class makes it."""
  import librosa
  import numpy as np
  from PIL import Image

  samples, _ = librosa.load(os.path.join(root, "AudioWAV", f"{name}.wav"), sr=22050)
  resamples = np.clip(np.tile(samples, 3)[:22050 * 3], -1.0, 1.0)
  spec = np.log(np.abs(librosa.stft(resamples, n_fft=512, hop_length=353)) + 1e-7)
  folder = os.path.join(root, "visual", name)
  files = sorted(os.listdir(folder))
  images = []
  for f in rng.choice(files, size=frames, replace=len(files) < frames):
    img = Image.open(os.path.join(folder, f)).convert("RGB")
    w, h = img.size
    for _ in range(10):  # torchvision RandomResizedCrop(224), scale (0.08, 1), ratio (3/4, 4/3).
      area = w * h * rng.uniform(0.08, 1.0)
      ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
      cw, ch = int(round((area * ratio) ** 0.5)), int(round((area / ratio) ** 0.5))
      if 0 < cw <= w and 0 < ch <= h:
        break
    else:
      cw, ch = min(w, h), min(w, h)
    x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
    img = img.resize((224, 224), Image.BILINEAR, box=(x, y, x + cw, y + ch))
    if rng.random() < 0.5:
      img = img.transpose(Image.FLIP_LEFT_RIGHT)
    arr = np.asarray(img, np.float32) / 255.0
    images.append((arr - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32))
  return spec.astype(np.float32), np.stack(images)


def benchmark_reference(root: str, good: list[str], examples: int, frames: int) -> dict[str, float]:
  """Examples/s and examples per CPU-second of the reference-style per-item loop (one process)."""
  import librosa
  import numpy as np
  rng = np.random.default_rng(0)
  librosa.stft(np.zeros(22050, np.float32), n_fft=512, hop_length=353)  # One-off numba warm-up.
  reference_item(root, good[0], frames, rng)
  cpu0, tic = time.process_time(), time.perf_counter()
  for i in range(examples):
    reference_item(root, good[i % len(good)], frames, rng)
  wall, cpu = time.perf_counter() - tic, time.process_time() - cpu0
  return {"reference_examples_per_s": examples / wall,
          "reference_examples_per_s_per_core": examples / cpu}


def benchmark_avjax(data_dir: str, examples: int, batch: int, frames: int,
                    num_workers: int) -> dict[str, float]:
  """scripts/benchmark.py's pipeline measurement on the ogm_ge_cremad config's training input."""
  from avjax import data
  from benchlib import benchmark_pipeline, load_config

  config = load_config("ogm_ge_cremad")
  config.dataset.data_dir = data_dir
  config.input.num_frames = frames
  config.input.num_workers = num_workers
  config.train.batch_size = batch
  dataset = data.open_dataset(config.dataset, [config.dataset.train_split])
  source = dataset.sources[config.dataset.train_split]
  r = benchmark_pipeline(source, config, max(1, examples // batch), warmup=1,
                         metadata=dataset.info.metadata)
  return {"avjax_examples_per_s": r["pipeline_examples_per_s"],
          "avjax_examples_per_s_per_core": r.get("pipeline_examples_per_s_per_core"),
          "avjax_cores_busy": r.get("pipeline_cores_busy")}


def main(argv: list[str]) -> None:
  del argv
  with tempfile.TemporaryDirectory() as tmp:
    workdir = _WORKDIR.value or tmp
    os.makedirs(workdir, exist_ok=True)
    tic = time.perf_counter()
    root, data_dir, good = prepare(workdir)
    print(f"Prepared {len(good)} fixture clips in {time.perf_counter() - tic:.1f} s ({workdir}).")
    r: dict[str, Any] = {"examples": _EXAMPLES.value, "frames": _FRAMES.value,
                         "batch": _BATCH.value, "num_workers": _WORKERS.value,
                         "cpu_count": os.cpu_count()}
    r.update(benchmark_reference(root, good, _EXAMPLES.value, _FRAMES.value))
    r.update(benchmark_avjax(data_dir, _EXAMPLES.value, _BATCH.value, _FRAMES.value,
                             _WORKERS.value))
  ratio = None
  if r["avjax_examples_per_s_per_core"]:
    ratio = r["avjax_examples_per_s_per_core"] / r["reference_examples_per_s_per_core"]
  r["ratio_per_core"] = ratio
  print(f"OGM-GE CREMA-D input, {_FRAMES.value} frame(s) of 224x224 + (257, 188) log-STFT:")
  print(f"  reference-style loader: {r['reference_examples_per_s']:8.1f} examples/s, "
        f"{r['reference_examples_per_s_per_core']:8.1f} per core")
  per_core = r["avjax_examples_per_s_per_core"]
  print(f"  avjax grain pipeline  : {r['avjax_examples_per_s']:8.1f} examples/s, "
        + (f"{per_core:8.1f} per core" if per_core else "per-core n/a"))
  if ratio:
    print(f"  avjax / reference per core: {ratio:.1f}x")
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(r, f, indent=2)


if __name__ == "__main__":
  app.run(main)
