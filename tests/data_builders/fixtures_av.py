"""Tiny downloads of Kinetics-Sounds, VGGSound + MM-Debiased, AVE, UCF101, MER2023 and MuSe-Mimic
in their real layouts (MP4 / AVI containers made with PyAV, label files in the real formats), each
with a few good clips of 1-2 s and known defects. `downloads(base)` makes all six once per process
under base/downloads/<name> (one folder can also serve as the manual folder of all six at once).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from tests.data_builders import fixtures as fx

SIZE = (72, 96)  # (h, w) of the generated videos.
FPS = 10
_CACHE: dict[str, dict[str, fx.Fixture]] = {}


def video(path: Path, seconds: float, seed: int, *, fmt: str = 'mp4', audio: bool = True,
          rate: int = 22050) -> None:
  """A clip with a moving square and maybe a tone: H.264 + AAC in MP4, MPEG-4 + PCM in AVI."""
  codecs = {'mp4': ('libx264', 'aac'), 'avi': ('mpeg4', 'pcm_s16le')}[fmt]
  wave = fx.tone(seconds, rate, 200.0 + 37.0 * (seed % 17), seed) if audio else None
  fx.write_video(path, fmt=fmt, vcodec=codecs[0], acodec=codecs[1], size=SIZE, fps=FPS,
                 seconds=seconds, colour=((40 * seed) % 255, 90, 60), wave=wave, audio_rate=rate)


def _seconds(i: int) -> float:
  return 1.0 + 0.25 * (i % 4)


def make_kinetics_sounds(root: Path) -> fx.Fixture:
  """my_train.txt 3 good (+ a bad label, a clip without media), my_test.txt 2 good + 1 corrupt."""
  base = [f'ks_a{i:07d}_{5 * i}' for i in range(6)]
  ids = {c: (7 * i) % 31 for i, c in enumerate(base)}
  ids['k-s_0000009_12'] = 30  # '_' and '-' inside a YouTube id.
  good = base[:5] + ['k-s_0000009_12']
  for i, clip in enumerate(good):
    ytid, start = clip[:11], int(clip[12:])
    name = f'{ytid}_{start:06d}_{start + 10:06d}' if i % 2 else clip  # Kinetics-400 / OGM-GE.
    video(root / 'kinetics' / f'{name}.mp4', _seconds(i), i)
  corrupt = base[5]
  fx.garbage(root / 'kinetics' / f'{corrupt}.mp4')
  train = good[:3] + ['ks_missing1_3']
  test = good[3:] + [corrupt]
  (root / 'my_train.txt').write_text(''.join(f'{c},10,{ids.get(c, 4)}\n' for c in train) +
                                     'ks_badlabl_0,10,31\n')
  (root / 'my_test.txt').write_text(''.join(f'{c},10,{ids[c]}\n' for c in test))
  (root / 'classes.txt').write_text(''.join(f'class {k}\n' for k in range(31)))
  splits = {c: 'train' for c in train[:3]} | {c: 'test' for c in test[:-1]}
  return fx.Fixture(root, good, {corrupt: 'corrupt', 'ks_missing1_3': 'missing_media',
                                 'ks_badlabl_0': 'bad_label'}, {'labels': ids, 'splits': splits})


def make_vggsound(root: Path) -> fx.Fixture:
  """vggsound.csv (train 2, test 2, a cut-off MP4 that reads as corrupt, a missing clip) and
  MM-Debiased.json (VGGSound and Kinetics-style ids and a bare ytid; each subset at least once;
  one id without media)."""
  rows = [('vg_aaaaaaaa', 30, 'dog barking', 'train'), ('vg_bbbbbbbb', 1, 'playing cello', 'train'),
          ('vg_cccccccc', 12, 'dog barking', 'test'), ('vg_dddddddd', 0, 'singing', 'test'),
          ('vg_eeeeeeee', 7, 'singing', 'train'), ('vg_missingg', 3, 'singing', 'test')]
  for i, (ytid, start, _, _) in enumerate(rows[:5]):
    name = f'{ytid}_{start:06d}_{start + 10:06d}' if i % 2 == 0 else f'{ytid}_{start}'
    video(root / 'video' / f'{name}.mp4', 2.0 if i == 4 else _seconds(i), 10 + i)
  fx.truncate(root / 'video' / 'vg_eeeeeeee_000007_000017.mp4', 0.35)
  (root / 'vggsound.csv').write_text(''.join(f'{y},{s},{lab},{sp}\n' for y, s, lab, sp in rows))
  video(root / 'kinetics' / 'mm_k400aaaa_000020_000030.mp4', 1.5, 20)
  video(root / 'video' / 'mm_bareaaaa_000004_000014.mp4', 1.25, 21)
  mmd = {'vg_aaaaaaaa_000030_000040': ('training', 'playing cello'),
         'vg_bbbbbbbb_000001_000011': ('training', 'singing'),
         'mm_k400aaaa_20': ('validation', 'lawn mowing'), 'mm_bareaaaa': ('testing', 'bowling'),
         'vg_cccccccc_12': ('testing', 'whistling'), 'mm_missingg_5': ('validation', 'singing')}
  (root / 'MM-Debiased.json').write_text(json.dumps(
      {k: {'subset': s, 'label': lab} for k, (s, lab) in mmd.items()}, indent=1))
  good = [f'{y}_{s}' for y, s, _, _ in rows[:4]]
  return fx.Fixture(root, good, {'vg_eeeeeeee_7': 'corrupt', 'vg_missingg_3': 'missing_media'},
                    {'rows': rows, 'mmd': mmd})


AVE_CLASSES = ('Accordion', 'Acoustic guitar', 'Baby cry, infant cry', 'Banjo', 'Bark', 'Bus',
               'Cat', 'Chainsaw', 'Church bell', 'Clock', 'Female speech, woman speaking',
               'Fixed-wing aircraft, airplane', 'Flute', 'Frying (food)', 'Goat', 'Helicopter',
               'Horse', 'Male speech, man speaking', 'Mandolin', 'Motorcycle',
               'Race car, auto racing', 'Rodents, rats, mice', 'Shofar', 'Toilet flush',
               'Train horn', 'Truck', 'Ukulele', 'Violin, fiddle')


def make_ave(root: Path) -> fx.Fixture:
  """AVE/*.mp4, Annotations.txt (28 categories), train 3 good + a duplicated id + a missing one,
  val 1, test 2 good + 1 corrupt."""
  vids = [f'ave{i:08d}' for i in range(9)]
  cats = {v: AVE_CLASSES[(5 * i) % 28] for i, v in enumerate(vids)}
  for i, v in enumerate(vids[:7]):
    video(root / 'AVE' / f'{v}.mp4', _seconds(i), 30 + i)
  fx.garbage(root / 'AVE' / f'{vids[6]}.mp4', seed=6)
  line = lambda v, c: f'{c}&{v}&good&0&10\n'
  notes = [line(v, cats[v]) for v in vids] + [line(f'aveextra{i:03d}', c)
                                               for i, c in enumerate(AVE_CLASSES)]
  (root / 'Annotations.txt').write_text('Category&VideoID&Quality&StartTime&EndTime\n' +
                                        ''.join(notes))
  (root / 'trainSet.txt').write_text(''.join(line(v, cats[v]) for v in vids[:3]) +
                                     line(vids[7], cats[vids[7]]) + line(vids[8], 'Bus') +
                                     line(vids[8], 'Cat'))
  (root / 'valSet.txt').write_text(line(vids[3], cats[vids[3]]))
  (root / 'testSet.txt').write_text(''.join(line(v, cats[v]) for v in vids[4:7]))
  splits = {v: 'train' for v in vids[:3]} | {vids[3]: 'validation'} | {v: 'test' for v in vids[4:6]}
  return fx.Fixture(root, vids[:6], {vids[6]: 'corrupt', vids[7]: 'missing_media'},
                    {'categories': cats, 'splits': splits})


def ucf_classes() -> list[str]:
  """101 class names: 3 real ones, then letter-only stand-ins (UCF names are [A-Za-z]+)."""
  fill = [f'Other{chr(65 + k // 26)}{chr(65 + k % 26)}' for k in range(98)]
  return sorted(['ApplyEyeMakeup', 'Basketball', 'YoYo'] + fill)


def _flow_jpegs(root: Path, stem: str, n: int, seed: int) -> None:
  rng = np.random.default_rng(seed)
  for comp in ('u', 'v'):
    folder = root / 'flow' / comp / stem
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
      img = np.clip(128 + rng.normal(0, 20, SIZE), 0, 255).astype(np.uint8)
      Image.fromarray(img).save(folder / f'frame{k + 1:06d}.jpg', quality=95)


def make_ucf101(root: Path) -> fx.Fixture:
  """UCF-101/<Class>/v_*.avi (no audio), ucfTrainTestlist (splits 1-3 alike), precomputed flow
  JPEGs for every clip (the flow of info['computed'] is dropped in the in-process variant)."""
  classes = ucf_classes()
  names = [f'v_{c}_g{g:02d}_c01' for c in ('ApplyEyeMakeup', 'Basketball', 'YoYo') for g in (1, 8)]
  for i, stem in enumerate(names + ['v_YoYo_g09_c01']):
    cls = stem.split('_')[1]
    video(root / 'UCF-101' / cls / f'{stem}.avi', 1.0 + 0.2 * (i % 3), 40 + i, fmt='avi',
          audio=False)
    _flow_jpegs(root, stem, int(round((1.0 + 0.2 * (i % 3)) * FPS)) - 1, i)
  fx.garbage(root / 'UCF-101' / 'YoYo' / 'v_YoYo_g09_c01.avi', seed=9)
  lists = root / 'ucfTrainTestlist'
  lists.mkdir(parents=True, exist_ok=True)
  (lists / 'classInd.txt').write_text(''.join(f'{k + 1} {c}\n' for k, c in enumerate(classes)))
  train = [n for n in names if '_g08_' in n]
  test = [n for n in names if '_g01_' in n] + ['v_YoYo_g09_c01', 'v_YoYo_g10_c01']
  for k in (1, 2, 3):  # The same lists for the three official splits.
    (lists / f'trainlist0{k}.txt').write_text(''.join(
        f'{n.split("_")[1]}/{n}.avi {classes.index(n.split("_")[1]) + 1}\n' for n in train))
    (lists / f'testlist0{k}.txt').write_text(''.join(f'{n.split("_")[1]}/{n}.avi\n' for n in test))
  return fx.Fixture(root, names, {'v_YoYo_g09_c01': 'corrupt', 'v_YoYo_g10_c01': 'missing_media'},
                    {'classes': classes, 'train': train, 'computed': 'v_Basketball_g08_c01'})


def make_mer2023(root: Path) -> fx.Fixture:
  """train/*.avi + train-label.csv (6 good, a corrupt video, an unknown class, a missing video),
  test1/*.avi + test1-label.csv (2); no test2."""
  from data_builders.mer2023 import CLASS_NAMES, fold_of  # pylint: disable=g-import-not-at-top
  train = [f'sample_{i:08d}' for i in range(1, 8)]
  folds = fold_of(train + ['sample_00000098', 'sample_00000099'], 5, 0)
  corrupt = next(n for n in train if folds[n] != 0)
  rows, labels = [], {}
  for i, name in enumerate(train):
    video(root / 'train' / f'{name}.avi', _seconds(i), 50 + i, fmt='avi', rate=16000)
    labels[name] = (CLASS_NAMES[i % 6], round(-4.0 + 1.3 * i, 2))
  fx.garbage(root / 'train' / f'{corrupt}.avi', seed=5)
  rows = [f'{n},{labels[n][0]},{labels[n][1]}\n' for n in train]
  rows += ['sample_00000098,excited,1.0\n', 'sample_00000099,happy,2.5\n']
  (root / 'train-label.csv').write_text('name,discrete,valence\n' + ''.join(rows))
  test = ['sample_00000201', 'sample_00000202']
  for i, name in enumerate(test):
    video(root / 'test1' / f'{name}.avi', 1.25, 60 + i, fmt='avi', rate=16000)
    labels[name] = (CLASS_NAMES[(i + 2) % 6], -1.5 + i)
  (root / 'test1-label.csv').write_text('name,discrete,valence\n' + ''.join(
      f'{n},{labels[n][0]},{labels[n][1]}\n' for n in test))
  video(root / 'test3' / 'sample_00000301.avi', 1.0, 70, fmt='avi', rate=16000)  # Unlabelled.
  good = [n for n in train if n != corrupt] + test
  return fx.Fixture(root, good, {corrupt: 'corrupt', 'sample_00000098': 'bad_label',
                                 'sample_00000099': 'missing_media'},
                    {'labels': labels, 'folds': folds})


def make_muse_mimic(root: Path) -> fx.Fixture:
  """raw/videos/<id>.mp4, partition.csv (train 3, devel 2, test 2 unlabelled), labels.csv; one
  corrupt video, one labelled id without video."""
  ids = {str(100 + i): p for i, p in enumerate(['train'] * 4 + ['devel'] * 2 + ['test'] * 2)}
  ids['200'] = 'train'
  for i, key in enumerate(sorted(ids)[:-1]):
    video(root / 'raw' / 'videos' / f'{key}.mp4', _seconds(i), 80 + i, rate=16000)
  fx.garbage(root / 'raw' / 'videos' / '103.mp4', seed=3)
  (root / 'metadata').mkdir(parents=True, exist_ok=True)
  (root / 'metadata' / 'partition.csv').write_text(
      'Id,Partition\n' + ''.join(f'{k},{p}\n' for k, p in sorted(ids.items())))
  targets = {k: [round(0.1 * ((int(k) * 7 + j * 3) % 10), 2) for j in range(3)]
             for k, p in ids.items() if p != 'test'}
  (root / 'labels.csv').write_text('Id,Approval,Disappointment,Uncertainty\n' + ''.join(
      f'{k},{",".join(map(str, v))}\n' for k, v in sorted(targets.items())))
  good = [k for k in targets if k not in ('103', '200')]
  return fx.Fixture(root, sorted(good), {'103': 'corrupt', '200': 'missing_media'},
                    {'targets': targets, 'partitions': ids})


MAKERS = {'kinetics_sounds': make_kinetics_sounds, 'vggsound': make_vggsound, 'ave': make_ave,
          'ucf101': make_ucf101, 'mer2023': make_mer2023, 'muse_mimic': make_muse_mimic}


def downloads(base: Path) -> dict[str, fx.Fixture]:
  """All six fixtures under base/downloads/<name>, generated once per process and base."""
  key = str(base)
  if key not in _CACHE:
    _CACHE[key] = {name: make(base / 'downloads' / name) for name, make in MAKERS.items()}
  return _CACHE[key]


# --- Building and reading back (shared by the test modules; one build per process). --------------

_BUILT: dict[tuple, object] = {}


def build_once(module, config: str, manual: Path, base: Path, **overrides):
  """module.build(config, ...) into base/tfds_av, in-process, once per process and arguments."""
  key = (module.__name__, config, str(manual), tuple(sorted(overrides.items())))
  if key not in _BUILT:
    _BUILT[key] = module.build(config, data_dir=str(base / 'tfds_av'), manual_dir=str(manual),
                               num_workers=0, **overrides)
  return _BUILT[key]


def records(builder) -> list[dict]:
  """All records of all splits (with '_split' and '_id'), sorted by id."""
  out = []
  for split in builder.info.splits:
    src = builder.as_data_source(split=split)
    out += [dict(src[i], _split=split, _id=src[i]['id'].decode()) for i in range(len(src))]
  return sorted(out, key=lambda r: r['_id'])


def skipped(builder) -> dict[str, str]:
  return {p['id']: p['kind'] for p in builder.info.metadata['build_report']['skipped']}


def paper_config(path: str, data_dir: str | None, arg: str | None = None, open_data: bool = True):
  """A configs/*.py experiment pointed at data_dir, validated, and its dataset opened (config,
  Dataset), or only the validated config when not open_data."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  from avjax import config as config_lib  # pylint: disable=g-import-not-at-top
  from avjax.data.sources import open_dataset  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(Path(path).stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(arg)
  c.dataset.data_dir = data_dir
  config_lib.validate(c)
  if not open_data:
    return c
  from avjax import protocol  # pylint: disable=g-import-not-at-top
  return c, open_dataset(c.dataset, protocol.dataset_splits(c))
