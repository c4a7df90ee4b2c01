r"""Input-pipeline throughput per CPU core, per paper config family (and against a reference-style
loader for OGM-GE CREMA-D).

  python scripts/benchmark_input.py [--cases ogm_ge_cremad,cmvqvae_cremad,vavl_msp,vat_mer | all] \
      [--examples 512] [--batch 0] [--frames 0] [--num_workers 0] [--storage_dtype float32] \
      [--crop_on_device] [--noreference] [--workdir DIR] [--json out.json]

Each case builds its dataset once from the test fixtures' generated download (tests/data_builders:
the real folder layouts and containers) and times `avjax.data.train_batches` with the config's
training transform, as scripts/benchmark.py times it: the difference of two complete runs, CPU
seconds of this process and its grain workers. Cases (the config's batch size unless --batch):

  ogm_ge_cremad   crema_d/ogm_ge: (257, 188) log-STFT + 1 fps JPEG frames (256x341), one
                  224x224 RandomResizedCrop + flip per clip.
  cmvqvae_cremad  crema_d/cmvqvae: (256, 256) log-mel + 31 stored 128x128 JPEG frames, one sampled.
  vavl_msp        msp_improv/features_p1: wav2vec2 (T, 1024) + EfficientNet (T, 1408) sequences
                  padded to 600 / 360 frames. The fixture's feature files are rewritten with
                  utterance-like lengths (2-8 s: 100-400 audio, 60-240 visual frames).
  vat_mer         mer2023/vat: (1024, 128) Kaldi fbank + 8 stored 224x224 JPEG frames, each
                  RandomResizedCrop (0.5, 1) + flip.

--storage_dtype float16 builds with float16 spectrograms / feature sequences (the builder options
audio_dtype / features_dtype);
--crop_on_device draws RandomResizedCrop / flip on the host and resamples in the jitted step
(input.crop_on_device), so the host ships whole frames.

The reference-style loader (OGM-GE only) does what the OGM-GE dataset class does per item, in one
process like a PyTorch DataLoader worker: librosa.load at 22.05 kHz (resampling), tile to 3 s, STFT
(512, hop 353), log; PIL-open 1 fps JPEG frames extracted beforehand (as the reference's
preprocessing does), RandomResizedCrop(224) + flip with PIL, normalise.

Examples per CPU-second says how many cores a host needs per accelerator: cores = train-step
examples/s / pipeline examples per CPU-second. The fixture's frames are synthetic (flat colours,
a moving square), so they decode faster than camera frames; load from other jobs lowers every
number (the load average is printed with the results).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

from absl import app, flags, logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from benchlib import json_flag, write_json  # noqa: E402

_CASES = flags.DEFINE_string("cases", "ogm_ge_cremad", "Comma-separated cases, or 'all'.")
_EXAMPLES = flags.DEFINE_integer("examples", 512, "Examples timed per case (and reference).")
_BATCH = flags.DEFINE_integer("batch", 0, "Batch size (0: the config's train.batch_size).")
_FRAMES = flags.DEFINE_integer("frames", 0, "Frames per clip (0: the config's input.num_frames).")
_WORKERS = flags.DEFINE_integer("num_workers", 0, "avjax grain worker processes.")
_STORAGE_DTYPE = flags.DEFINE_enum(
    "storage_dtype", "float32", ["float32", "float16"],
    "Storage of spectrograms / feature sequences (builder configs' audio_dtype / features_dtype).")
_CROP_ON_DEVICE = flags.DEFINE_bool("crop_on_device", False,
                                    "input.crop_on_device: the step resamples the crops.")
_REFERENCE = flags.DEFINE_bool("reference", True, "Also time the reference-style OGM-GE loader.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the fixture downloads and builds go "
                               "(default: a temporary directory, removed at the end).")
_JSON = json_flag(flags)

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------------------------
# Fixture downloads and builds (each returns the TFDS data_dir and the built config's name).


def _build(module: Any, config: str, manual: Path, data_dir: str, stored: str) -> str:
  """Builds module/config (a float16 variant of the `stored` part, 'audio' or 'features', with
  --storage_dtype float16); returns the built config's name."""
  dtype = _STORAGE_DTYPE.value
  overrides = {f"{stored}_dtype": dtype} if dtype != "float32" else {}
  builder = module.build(config, data_dir=data_dir, manual_dir=str(manual), num_workers=0,
                         **overrides)
  return builder.builder_config.name


def _crema_d_download(workdir: Path) -> Path:
  from tests.data_builders import fixtures
  root = workdir / "download" / "crema_d"
  if not (root / "AudioWAV").exists():
    fixtures.make_crema_d(root)
  return root


def prepare_crema_d(config: str) -> Callable[[Path], tuple[str, str]]:
  def prepare(workdir: Path) -> tuple[str, str]:
    import data_builders.crema_d as crema_d
    data_dir = str(workdir / "tfds")
    return data_dir, _build(crema_d, config, _crema_d_download(workdir), data_dir, "audio")
  return prepare


def prepare_msp_features(workdir: Path) -> tuple[str, str]:
  """msp_improv/features_p1 with utterance-like sequence lengths in the fixture's layout."""
  import numpy as np

  import data_builders.msp_improv as msp_improv
  from tests.data_builders import fixtures
  root = workdir / "download" / "msp_improv"
  if not (root / "Evaluation.txt").exists():
    fixture = fixtures.make_msp_improv(root)
    fixtures.add_vavl_msp(root, fixture.good + list(fixture.bad), partitions=(1,))
    rng = np.random.default_rng(0)
    for name in fixture.good:
      seconds = rng.uniform(2.0, 8.0)
      for kind, rate, dim in (("audio", 50, 1024), ("visual", 30, 1408)):
        folder = root / "features" / kind
        folder.mkdir(parents=True, exist_ok=True)
        values = rng.standard_normal((int(seconds * rate), dim)).astype(np.float32)
        np.save(folder / f"{name}.npy", values)
  data_dir = str(workdir / "tfds")
  return data_dir, _build(msp_improv, "features_p1", root, data_dir, "features")


def prepare_mer2023(workdir: Path) -> tuple[str, str]:
  import data_builders.mer2023 as mer2023
  from tests.data_builders import fixtures_av
  root = workdir / "download" / "mer2023"
  if not (root / "train-label.csv").exists():
    fixtures_av.make_mer2023(root)
  data_dir = str(workdir / "tfds")
  return data_dir, _build(mer2023, "vat", root, data_dir, "audio")


@dataclasses.dataclass(frozen=True)
class Case:
  config: str  # configs/<config>.py
  prepare: Callable[[Path], tuple[str, str]]
  summary: str


CASES = {
    "ogm_ge_cremad": Case("ogm_ge_cremad", prepare_crema_d("ogm_ge"),
                          "(257, 188) log-STFT + 224x224 RandomResizedCrop/flip frame"),
    "cmvqvae_cremad": Case("cmvqvae_cremad", prepare_crema_d("cmvqvae"),
                           "(256, 256) log-mel + one of 31 128x128 frames"),
    "vavl_msp": Case("vavl_msp", prepare_msp_features,
                     "(600, 1024) + (360, 1408) padded feature sequences"),
    "vat_mer": Case("vat_mer", prepare_mer2023,
                    "(1024, 128) fbank + 8 224x224 RandomResizedCrop/flip frames"),
}


# ---------------------------------------------------------------------------------------------
# The reference-style OGM-GE loader.


def prepare_reference(workdir: Path) -> tuple[str, list[str]]:
  """Extracts 1 fps JPEGs from the CREMA-D fixture for the reference loader (as its
  preprocessing does). Returns (download folder, clip ids the reference can read)."""
  import numpy as np
  from PIL import Image

  from avjax.media import video
  root = _crema_d_download(workdir)
  names = sorted(p.stem for p in (root / "AudioWAV").glob("*.wav")
                 if (root / "VideoFlash" / f"{p.stem}.flv").exists())
  good = []
  for name in names:
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
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa's fallback warnings on the defective wavs.
        reference_item(str(root), name, 1, np.random.default_rng(0))
    except Exception:  # pylint: disable=broad-except
      continue
    good.append(name)
  return str(root), good


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


# ---------------------------------------------------------------------------------------------
# avjax.


def benchmark_avjax(case: Case, data_dir: str, dataset_config: str) -> dict[str, Any]:
  """scripts/benchmark.py's pipeline measurement on the case config's training input."""
  from avjax import data
  from benchlib import benchmark_pipeline, load_config

  config = load_config(case.config)
  config.dataset.data_dir = data_dir
  config.dataset.config = dataset_config
  if _FRAMES.value:
    config.input.num_frames = _FRAMES.value
  if _BATCH.value:
    config.train.batch_size = _BATCH.value
  config.input.num_workers = _WORKERS.value
  config.input.crop_on_device = _CROP_ON_DEVICE.value
  dataset = data.open_dataset(config.dataset, [config.dataset.train_split])
  source = dataset.sources[config.dataset.train_split]
  batch = config.train.batch_size
  r = benchmark_pipeline(source, config, max(1, _EXAMPLES.value // batch), warmup=1,
                         metadata=dataset.info.metadata)
  return {"batch": batch, "dataset": f"{config.dataset.name}/{dataset_config}",
          "examples_per_s": r["pipeline_examples_per_s"],
          "examples_per_s_per_core": r.get("pipeline_examples_per_s_per_core"),
          "cores_busy": r.get("pipeline_cores_busy")}


def _fmt(value: float | None) -> str:
  return f"{value:9.1f}" if value else "      n/a"


def main(argv: list[str]) -> None:
  del argv
  names = list(CASES) if _CASES.value == "all" else _CASES.value.split(",")
  unknown = [n for n in names if n not in CASES]
  if unknown:
    raise app.UsageError(f"Unknown case(s) {unknown}; known: {sorted(CASES)} or 'all'.")
  r: dict[str, Any] = {"examples": _EXAMPLES.value, "num_workers": _WORKERS.value,
                       "storage_dtype": _STORAGE_DTYPE.value,
                       "crop_on_device": _CROP_ON_DEVICE.value,
                       "cpu_count": os.cpu_count(), "load_before": os.getloadavg(), "cases": {}}
  import tensorflow_datasets as tfds
  logging.set_verbosity(logging.WARNING)  # Builds report their fixture's defects as warnings.
  tfds.disable_progress_bar()
  with tempfile.TemporaryDirectory() as tmp:
    workdir = Path(_WORKDIR.value or tmp)
    workdir.mkdir(parents=True, exist_ok=True)
    for name in names:
      tic = time.perf_counter()
      data_dir, dataset_config = CASES[name].prepare(workdir)
      print(f"{name}: built {dataset_config} in {time.perf_counter() - tic:.1f} s ({workdir}).")
      r["cases"][name] = benchmark_avjax(CASES[name], data_dir, dataset_config)
    if _REFERENCE.value and "ogm_ge_cremad" in names:
      root, good = prepare_reference(workdir)
      frames = _FRAMES.value or 1
      ours = r["cases"]["ogm_ge_cremad"]
      ours.update(benchmark_reference(root, good, _EXAMPLES.value, frames))
      if ours["examples_per_s_per_core"]:
        ours["ratio_per_core"] = (ours["examples_per_s_per_core"]
                                  / ours["reference_examples_per_s_per_core"])
  r["load_after"] = os.getloadavg()
  print(f"Input pipelines ({_STORAGE_DTYPE.value} storage, crop_on_device="
        f"{_CROP_ON_DEVICE.value}, {_WORKERS.value} workers); load average "
        f"{r['load_before'][0]:.1f} before, {r['load_after'][0]:.1f} after, "
        f"{os.cpu_count()} cores:")
  print(f"  {'case':16s} {'batch':>5s} {'ex/s':>9s} {'ex/CPU-s':>9s} {'cores':>6s}  input")
  for name, c in r["cases"].items():
    busy = f"{c['cores_busy']:6.2f}" if c["cores_busy"] else "   n/a"
    print(f"  {name:16s} {c['batch']:5d} {_fmt(c['examples_per_s'])} "
          f"{_fmt(c['examples_per_s_per_core'])} {busy}  {CASES[name].summary}")
    if "reference_examples_per_s" in c:
      print(f"  {'  reference-style':16s} {1:5d} {_fmt(c['reference_examples_per_s'])} "
            f"{_fmt(c['reference_examples_per_s_per_core'])}    1.00  OGM-GE dataset class, "
            "one process")
      if c.get("ratio_per_core"):
        print(f"  avjax / reference per core: {c['ratio_per_core']:.1f}x")
  if _JSON.value:
    write_json(_JSON.value, r, indent=2)


if __name__ == "__main__":
  app.run(main)
