"""Tiny CREMA-D and MSP-IMPROV downloads in the real layouts and containers, with known defects.

CREMA-D: AudioWAV/<name>.wav (16 kHz mono 16-bit), VideoFlash/<name>.flv (H.264 480x360 30 fps +
AAC 44.1 kHz mono), VideoDemographics.csv, processedResults/summaryTable.csv; optional OGM-GE
train.csv / test.csv, VAVL partition CSVs and per-utterance feature files. MSP-IMPROV: utterance-id
named wav / avi (MPEG-4 + PCM) in nested session folders, the corpus Evaluation.txt, VAVL-style
partition CSVs and feature files. Clips last 1-2 s. Everything is a pure function of its arguments.
"""

from __future__ import annotations

import dataclasses
import fractions
import os
from pathlib import Path

import av
import numpy as np
import scipy.signal
import soundfile as sf

CREMA_EMOTIONS = ('ANG', 'DIS', 'FEA', 'HAP', 'NEU', 'SAD')
CREMA_ACTORS = (1001, 1002, 1003, 1004)
MSP_SCENARIOS = ('S01A', 'S01H', 'S01N', 'S01S')
VAVL_COLUMNS = ('angry', 'sad', 'disgust', 'fear', 'neutral', 'happy')
# MSP-IMPROV VAVL partitions: (validation session, test session).
MSP_PARTITIONS = {1: (4, 5), 2: (2, 3), 3: (1, 2), 4: (6, 1), 5: (5, 6)}


@dataclasses.dataclass
class Fixture:
  """A generated download: its folder, the good clip ids, and the defective ones by kind."""

  root: Path
  good: list[str]
  bad: dict[str, str]  # id -> expected problem kind (for a config reading every file)
  info: dict


# --- Containers. ----------------------------------------------------------------------------------


def tone(seconds: float, rate: int, freq: float, seed: int) -> np.ndarray:
  """float32 (N,) harmonic tone + noise, peak ~0.5."""
  t = np.arange(int(round(seconds * rate))) / rate
  rng = np.random.default_rng(seed)
  wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.1 * np.sin(2 * np.pi * 2.5 * freq * t)
  wave *= 0.6 + 0.4 * np.sin(2 * np.pi * 3.0 * t)
  return (wave + 0.03 * rng.standard_normal(t.shape)).astype(np.float32)


def write_wav(path: Path, wave: np.ndarray, rate: int) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  sf.write(str(path), wave, rate, subtype='PCM_16')


def frame_image(i: int, height: int, width: int, colour: tuple[int, int, int]) -> np.ndarray:
  """uint8 (H, W, 3): a coloured background with a white square moving right with i."""
  img = np.empty((height, width, 3), np.uint8)
  img[:] = colour
  img[:, :, 2] = (np.arange(width) * 255 // width).astype(np.uint8)[None]  # A horizontal ramp.
  x = (i * 7) % (width - 40)
  img[height // 3:height // 3 + 40, x:x + 40] = 255
  return img


def _ellipse(h: int, w: int, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
  ys, xs = np.mgrid[0:h, 0:w]
  return ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1.0


def draw_face(height: int, width: int, cx: float, cy: float, size: float,
              background: tuple[int, int, int] = (60, 90, 140)) -> tuple[np.ndarray, np.ndarray]:
  """uint8 (H, W, 3): a drawn frontal face (skin ellipse, hair, eyes with irises, brows, nose,
  mouth) of height ~size centred at (cx, cy) on a plain background; and its five points (5, 2)
  (x, y): image-left eye, image-right eye, nose tip, image-left / image-right mouth corner."""
  img = np.empty((height, width, 3), np.float64)
  img[:] = background
  s = size / 100.0
  skin = np.array([224.0, 172.0, 140.0])
  shape = lambda x, y, rx, ry: _ellipse(height, width, x, y, rx * s, ry * s)
  img[shape(cx, cy, 38, 50)] = skin
  img[shape(cx, cy - 38 * s, 40, 20) & ~shape(cx, cy - 5 * s, 38, 40)] = (50, 35, 25)
  points = np.array([[cx - 15 * s, cy - 10 * s], [cx + 15 * s, cy - 10 * s], [cx, cy + 6 * s],
                     [cx - 12 * s, cy + 22 * s], [cx + 12 * s, cy + 22 * s]])
  for x, y in points[:2]:
    img[shape(x, y, 7, 3.5)] = (250, 250, 250)
    img[shape(x, y, 3, 3)] = (40, 30, 20)
    img[shape(x, y - 8 * s, 8, 1.8)] = (70, 50, 30)
  img[shape(cx, cy + 2 * s, 3, 8)] = skin * 0.8
  img[shape(cx, cy + 6 * s, 5, 2.5)] = skin * 0.6
  img[shape(cx, cy + 22 * s, 12, 3)] = (160, 60, 60)
  return np.clip(img, 0, 255).astype(np.uint8), points


def write_video(path: Path, *, fmt: str, vcodec: str, acodec: str, size: tuple[int, int],
                fps: int, seconds: float, colour: tuple[int, int, int], wave: np.ndarray | None,
                audio_rate: int, draw=None) -> None:
  """A video container with one video stream and (when `wave`) one mono audio stream; frame i is
  draw(i) (uint8 (H, W, 3)) when given, else frame_image."""
  path.parent.mkdir(parents=True, exist_ok=True)
  h, w = size
  with av.open(str(path), 'w', format=fmt) as out:
    vs = out.add_stream(vcodec, rate=fps)
    vs.width, vs.height, vs.pix_fmt = w, h, 'yuv420p'
    if vcodec == 'libx264':
      vs.options = {'preset': 'ultrafast', 'crf': '23'}
    astream = None
    if wave is not None:
      astream = out.add_stream(acodec, rate=audio_rate, layout='mono')
    n = int(round(seconds * fps))
    for i in range(n):
      image = draw(i) if draw is not None else frame_image(i, h, w, colour)
      frame = av.VideoFrame.from_ndarray(image, format='rgb24')
      frame.pts = i
      frame.time_base = fractions.Fraction(1, fps)
      for packet in vs.encode(frame):
        out.mux(packet)
    for packet in vs.encode():
      out.mux(packet)
    if astream is not None:
      fmt_a = 'fltp' if acodec == 'aac' else 's16'
      chunk = 1024
      for start in range(0, len(wave), chunk):
        part = wave[start:start + chunk]
        data = part[None] if fmt_a == 'fltp' else (part * 32767).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt_a, layout='mono')
        frame.sample_rate = audio_rate
        frame.pts = start
        frame.time_base = fractions.Fraction(1, audio_rate)
        for packet in astream.encode(frame):
          out.mux(packet)
      for packet in astream.encode():
        out.mux(packet)


def truncate(path: Path, fraction: float) -> None:
  """Cuts a file to `fraction` of its bytes (headers keep declaring the full length)."""
  data = path.read_bytes()
  path.write_bytes(data[:int(len(data) * fraction)])


def garbage(path: Path, n: int = 4096, seed: int = 0) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes())


def link_tree(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> Path:
  """A new folder whose top-level entries are symlinks into src (cheap layout variants)."""
  dst.mkdir(parents=True, exist_ok=True)
  for entry in sorted(src.iterdir()):
    if entry.name not in skip:
      os.symlink(entry, dst / entry.name)
  return dst


def mirror_tree(src: Path, dst: Path, skip_stems: tuple[str, ...] = ()) -> Path:
  """A copy of src's folders whose files are symlinks, without files whose stem is in skip_stems."""
  for path in sorted(src.rglob('*')):
    if path.is_file() and path.stem not in skip_stems:
      target = dst / path.relative_to(src)
      target.parent.mkdir(parents=True, exist_ok=True)
      os.symlink(path, target)
  return dst


# --- CREMA-D. -------------------------------------------------------------------------------------


def _crema_clip(root: Path, name: str, seconds: float, emotion: int, seed: int, *,
                video_seconds: float | None = None, wav: bool = True, flv: bool = True) -> None:
  wave44 = tone(seconds, 44100, 180.0 + 70.0 * emotion, seed)
  if wav:
    write_wav(root / 'AudioWAV' / f'{name}.wav',
              scipy.signal.resample_poly(wave44, 160, 441).astype(np.float32), 16000)
  if flv:
    vsec = seconds if video_seconds is None else video_seconds
    write_video(root / 'VideoFlash' / f'{name}.flv', fmt='flv', vcodec='libx264', acodec='aac',
                size=(360, 480), fps=30, seconds=vsec, colour=(40 * emotion, 90, 60),
                wave=wave44[:int(vsec * 44100)], audio_rate=44100)


def make_crema_d(root: Path) -> Fixture:
  """4 actors x 6 emotions (24 good clips) + 6 defective clips, and the metadata CSVs."""
  root.mkdir(parents=True, exist_ok=True)
  good = []
  for a, actor in enumerate(CREMA_ACTORS):
    for e, emo in enumerate(CREMA_EMOTIONS):
      k = a * len(CREMA_EMOTIONS) + e
      sentence, level = ('DFA', 'XX') if k % 4 == 3 else ('IEO', ('LO', 'MD', 'HI')[k % 4])
      name = f'{actor}_{sentence}_{emo}_{level}'
      _crema_clip(root, name, 1.2 + 0.1 * ((k * 7) % 11), e, k)
      good.append(name)
  bad = {'1001_TIE_ANG_XX': 'empty', '1002_TIE_DIS_XX': 'truncated',
         '1003_TIE_FEA_XX': 'truncated', '1004_TIE_HAP_XX': 'missing_counterpart',
         '1001_TIE_NEU_XX': 'length_mismatch', '1002_TIE_SAD_XX': 'corrupt'}
  for i, name in enumerate(bad):
    e = CREMA_EMOTIONS.index(name.split('_')[2])
    _crema_clip(root, name, 2.4 if name == '1001_TIE_NEU_XX' else 1.5, e, 100 + i,
                video_seconds=0.8 if name == '1001_TIE_NEU_XX' else None,
                flv=name != '1004_TIE_HAP_XX')
  (root / 'AudioWAV' / '1001_TIE_ANG_XX.wav').write_bytes(b'')  # Empty wav.
  truncate(root / 'AudioWAV' / '1002_TIE_DIS_XX.wav', 0.5)  # Header declares twice the data.
  truncate(root / 'VideoFlash' / '1003_TIE_FEA_XX.flv', 0.4)
  garbage(root / 'VideoFlash' / '1002_TIE_SAD_XX.flv')
  with open(root / 'VideoDemographics.csv', 'w') as f:
    f.write('ActorID,Age,Sex,Race,Ethnicity\n')
    for i, actor in enumerate(CREMA_ACTORS):
      f.write(f'{actor},{30 + i},{"Male" if i % 2 == 0 else "Female"},Caucasian,Not Hispanic\n')
  (root / 'processedResults').mkdir(exist_ok=True)
  with open(root / 'processedResults' / 'summaryTable.csv', 'w') as f:
    f.write('"","FileName","VoiceVote","VoiceLevel","FaceVote","FaceLevel","MultiModalVote",'
            '"MultiModalLevel"\n')
    for i, name in enumerate(good + list(bad)):
      code = name.split('_')[2][0]
      f.write(f'"{i + 1}","{name}","{code}",55.5,"{code}",60,"{code}",57.25\n')
  return Fixture(root, good, bad, {})


def add_ogm_ge_splits(root: Path, good: list[str]) -> dict[str, list[str]]:
  """OGM-GE train.csv / test.csv (`name,LABEL`, no header): every 4th clip to test, one clip of
  neither, and one listed clip without media."""
  test = good[::4]
  train = [n for n in good if n not in test][1:] + ['1004_WSI_SAD_XX']
  for split, names in (('train', train), ('test', test)):
    with open(root / f'{split}.csv', 'w') as f:
      f.writelines(f'{n},{n.split("_")[2]}\n' for n in names)
  return {'train': train, 'test': test}


def vavl_soft_label(name: str) -> list[float]:
  """Deterministic soft ratings in VAVL's column order with VAVL's 0.01 floor."""
  rng = np.random.default_rng(sum(map(ord, name)))
  p = rng.dirichlet(np.ones(6)) * 0.94
  acted = {'ANG': 0, 'SAD': 1, 'DIS': 2, 'FEA': 3, 'NEU': 4, 'HAP': 5}[name.split('_')[2]]
  p[acted] += 0.5
  p = np.maximum(p / p.sum(), 0.01)
  return [round(float(x), 3) for x in p]


def add_vavl_crema_d(root: Path, good: list[str], partitions: tuple[int, ...] = (1, 5)) -> dict:
  """labels_consensus_6class_M/label_consensus_{p}.csv: actor 1001 Test, 1002 Development, the
  rest Train (partition 1 swaps 1001 and 1002); leaves out good[-1], lists one clip without
  media."""
  folder = root / 'labels_consensus_6class_M'
  folder.mkdir(parents=True, exist_ok=True)
  listed = good[:-1] + ['1004_WSI_SAD_XX']
  for p in partitions:
    test, dev = (1001, 1002) if p != 1 else (1002, 1001)
    with open(folder / f'label_consensus_{p}.csv', 'w') as f:
      f.write('FileName,' + ','.join(VAVL_COLUMNS) + ',SpkrID,Gender,Split_Set\n')
      for name in listed:
        actor = int(name[:4])
        split = 'Test' if actor == test else 'Development' if actor == dev else 'Train'
        soft = ','.join(str(x) for x in vavl_soft_label(name))
        f.write(f'{name}.wav,{soft},{actor},{"Male" if actor % 2 else "Female"},{split}\n')
  return {'listed': listed, 'left_out': good[-1]}


def add_features(root: Path, ids: list[str], *, audio_dim: int = 1024,
                 visual_dim: int = 1408) -> dict[str, str]:
  """features/audio|visual/<id>.npy (T, dim) float32; ids[0]'s audio is garbage, ids[1]'s visual
  has the wrong width, ids[2] has no visual file. Returns {id: expected problem kind}."""
  for i, name in enumerate(ids):
    rng = np.random.default_rng(i)
    (root / 'features' / 'audio').mkdir(parents=True, exist_ok=True)
    (root / 'features' / 'visual').mkdir(parents=True, exist_ok=True)
    np.save(root / 'features' / 'audio' / f'{name}.npy',
            rng.standard_normal((20 + i, audio_dim)).astype(np.float32))
    if i != 2:
      width = visual_dim if i != 1 else 100
      np.save(root / 'features' / 'visual' / f'{name}.npy',
              rng.standard_normal((12 + i, width)).astype(np.float32))
  garbage(root / 'features' / 'audio' / f'{ids[0]}.npy', 300)
  return {ids[0]: 'bad_features', ids[1]: 'bad_features', ids[2]: 'missing_counterpart'}


# --- MSP-IMPROV. ----------------------------------------------------------------------------------


def msp_id(session: int, scenario: str) -> str:
  g = 'F' if session % 2 else 'M'
  return f'MSP-IMPROV-{scenario}-{g}0{session}-R-{g}{g}01'


def msp_attributes(uid: str) -> tuple[float, float, float]:
  """(EmoAct, EmoVal, EmoDom) in [1, 5] for the VAVL CSV."""
  rng = np.random.default_rng(sum(map(ord, uid)))
  return tuple(round(float(x), 6) for x in rng.uniform(1.0, 5.0, 3))


def make_msp_improv(root: Path) -> Fixture:
  """6 sessions x 4 scenarios (one speaker per session): 24 utterances, nested folders; the avi of
  session 3 / S01H is garbage, session 4 / S01N has no avi; Evaluation.txt also lists one
  utterance without media, and labels one utterance 'O' (no 4-class label)."""
  good, bad = [], {}
  for s in range(1, 7):
    for j, scen in enumerate(MSP_SCENARIOS):
      uid = msp_id(s, scen)
      seconds = 1.0 + 0.1 * ((s * 5 + j * 3) % 9)
      wave = tone(seconds, 44100, 150.0 + 60 * j + 10 * s, s * 10 + j)
      sub = Path(f'session{s}') / scen / 'R'
      write_wav(root / 'Audio' / sub / f'{uid}.wav', wave, 44100)
      if (s, scen) != (4, 'S01N'):
        write_video(root / 'Video' / sub / f'{uid}.avi', fmt='avi', vcodec='mpeg4',
                    acodec='pcm_s16le', size=(240, 320), fps=30, seconds=seconds,
                    colour=(50 * j, 40 * s % 255, 90), wave=wave, audio_rate=44100)
      if (s, scen) == (3, 'S01H'):
        garbage(root / 'Video' / sub / f'{uid}.avi', seed=3)
        bad[uid] = 'corrupt'
      elif (s, scen) == (4, 'S01N'):
        bad[uid] = 'missing_counterpart'
      else:
        good.append(uid)
  no_media = msp_id(1, 'S02A')
  bad[no_media] = 'missing_media'
  categories = {}
  with open(root / 'Evaluation.txt', 'w') as f:
    for uid in sorted(good + list(bad)):
      cat = uid.split('-')[2][-1]  # The scenario's target emotion ...
      if uid == msp_id(2, 'S01H'):
        cat = 'O'  # ... except: no agreement.
      if uid == msp_id(5, 'S01A'):
        cat = 'N'  # ... and a perceived label that differs from the target.
      categories[uid] = cat
      act, val, dom = (round(x + 0.25, 6) if x < 4.5 else x for x in msp_attributes(uid))
      f.write(f'{uid.replace("MSP-", "UTD-")}.avi; {cat}; A:{act:.6f}; V:{val:.6f}; '
              f'D:{dom:.6f}; N:5.000000;\n')
      f.write(f'1; {cat}; A:{act:.6f}; V:{val:.6f}; D:{dom:.6f}\n\n')
  return Fixture(root, good, bad, {'categories': categories})


def add_vavl_msp(root: Path, ids: list[str], partitions: tuple[int, ...] = (1,)) -> None:
  """labels_consensus_EmoP_4class_D/labels_consensus_{p}.csv in VAVL's format."""
  folder = root / 'labels_consensus_EmoP_4class_D'
  folder.mkdir(parents=True, exist_ok=True)
  for p in partitions:
    dev, test = MSP_PARTITIONS[p]
    with open(folder / f'labels_consensus_{p}.csv', 'w') as f:
      f.write('FileName,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set\n')
      for uid in sorted(ids):
        session = int(uid.split('-')[3][1:])
        split = 'Development' if session == dev else 'Test' if session == test else 'Train'
        act, val, dom = msp_attributes(uid)
        gender = 'Female' if uid.split('-')[3][0] == 'F' else 'Male'
        f.write(f'{uid}.wav,{act},{val},{dom},{session},{gender},{split}\n')


def crash_on_marker(job: dict, spec: dict) -> tuple:
  """A ClipRunner target for tests: kills its own process (as a decoder segfault would) when the
  job has 'crash', else returns ('ok', {'x': ...})."""
  del spec
  if job.get('crash'):
    os.kill(os.getpid(), 9)
  return ('ok', {'x': job['x']})
