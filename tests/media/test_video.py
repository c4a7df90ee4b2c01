"""Tests for avjax.media.video on real MP4 / FLV containers written with PyAV."""

from __future__ import annotations

import fractions
import pathlib

import av
import numpy as np
import pytest

from avjax import media

FPS = 30
NUM_FRAMES = 90  # 3 s
WIDTH, HEIGHT = 160, 120
AUDIO_RATE = 44100
TONE_HZ = 440.0


def frame_colour(index: int) -> tuple[int, int, int]:
  """Flat RGB colour encoding a frame index < 100: R = tens, G = units digit.

  Steps of 20 grey levels survive lossy coding and RGB <-> YUV conversion.
  """
  return (20 + 20 * (index // 10), 20 + 20 * (index % 10), 128)


def colour_to_index(frame: np.ndarray) -> int:
  r, g, _ = frame.reshape(-1, 3).mean(axis=0)
  return 10 * int(round((r - 20) / 20)) + int(round((g - 20) / 20))


def write_video(path: pathlib.Path, *, video_codec: str,
                audio_codec: str | None,
                num_frames: int = NUM_FRAMES, fps: int = FPS,
                width: int = WIDTH, height: int = HEIGHT,
                tone_hz: float = TONE_HZ) -> pathlib.Path:
  """Writes flat frames whose colour encodes their index and a 44.1 kHz tone.

  audio_codec None writes a video-only container.
  """
  with av.open(str(path), mode='w') as out:
    vs = out.add_stream(video_codec, rate=fps)
    vs.width, vs.height, vs.pix_fmt = width, height, 'yuv420p'
    if video_codec == 'flv':
      vs.options = {'qscale': '2'}
      vs.codec_context.qmin = 1
      vs.codec_context.qmax = 2
      vs.bit_rate = 8_000_000
    else:
      vs.options = {'crf': '10', 'preset': 'ultrafast'}
    aus = None
    if audio_codec is not None:
      aus = out.add_stream(audio_codec, rate=AUDIO_RATE)
      aus.layout = 'mono'
    for i in range(num_frames):
      img = np.full((height, width, 3), frame_colour(i), np.uint8)
      frame = av.VideoFrame.from_ndarray(img, format='rgb24')
      frame.pts = i
      frame.time_base = fractions.Fraction(1, fps)
      for packet in vs.encode(frame):
        out.mux(packet)
    for packet in vs.encode(None):
      out.mux(packet)
    if aus is None:
      return path
    total = int(AUDIO_RATE * num_frames / fps)
    t = np.arange(total) / AUDIO_RATE
    wave = (0.5 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
    chunk = 1024
    for start in range(0, total, chunk):
      piece = wave[None, start:start + chunk]
      frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(piece),
                                         format='fltp', layout='mono')
      frame.sample_rate = AUDIO_RATE
      frame.pts = start
      frame.time_base = fractions.Fraction(1, AUDIO_RATE)
      for packet in aus.encode(frame):
        out.mux(packet)
    for packet in aus.encode(None):
      out.mux(packet)
  return path


@pytest.fixture(scope='module')
def clips(tmp_path_factory) -> dict[str, pathlib.Path]:
  root = tmp_path_factory.mktemp('video')
  mp4 = write_video(root / 'clip.mp4', video_codec='libx264', audio_codec='aac')
  flv = write_video(root / 'clip.flv', video_codec='flv',
                    audio_codec='libmp3lame')
  data = mp4.read_bytes()
  truncated = root / 'truncated.mp4'
  truncated.write_bytes(data[:len(data) // 2])
  truncated_flv = root / 'truncated.flv'
  truncated_flv.write_bytes(flv.read_bytes()[:flv.stat().st_size // 2])
  empty = root / 'empty.flv'
  empty.write_bytes(b'')
  garbage = root / 'garbage.mp4'
  garbage.write_bytes(np.random.default_rng(0).bytes(4096))
  return {'mp4': mp4, 'flv': flv, 'truncated': truncated,
          'truncated_flv': truncated_flv, 'empty': empty, 'garbage': garbage}


@pytest.mark.parametrize('kind', ['mp4', 'flv'])
def test_probe(clips, kind):
  info = media.probe(clips[kind])
  assert (info.width, info.height) == (WIDTH, HEIGHT)
  assert info.fps == pytest.approx(FPS, rel=0.01)
  assert info.duration_s == pytest.approx(NUM_FRAMES / FPS, abs=0.1)
  assert abs(info.num_frames - NUM_FRAMES) <= 2
  assert info.has_audio


@pytest.mark.parametrize('kind', ['mp4', 'flv'])
def test_decode_all_frames_in_order(clips, kind):
  frames = media.decode_frames(clips[kind], num_frames=NUM_FRAMES)
  assert frames.shape == (NUM_FRAMES, HEIGHT, WIDTH, 3)
  assert frames.dtype == np.uint8
  assert [colour_to_index(f) for f in frames] == list(range(NUM_FRAMES))
  # Flat frames stay flat through the codec.
  spatial_mean = frames.mean(axis=(1, 2), keepdims=True)
  assert np.abs(frames - spatial_mean).max() <= 4


@pytest.mark.parametrize('kind', ['mp4', 'flv'])
def test_decode_fps_mode(clips, kind):
  frames = media.decode_frames(clips[kind], fps=1.0)
  assert frames.shape == (3, HEIGHT, WIDTH, 3)
  assert [colour_to_index(f) for f in frames] == [0, 30, 60]
  two_fps = media.decode_frames(clips[kind], fps=2.0)
  assert [colour_to_index(f) for f in two_fps] == [0, 15, 30, 45, 60, 75]
  capped = media.decode_frames(clips[kind], fps=2.0, max_frames=2)
  assert [colour_to_index(f) for f in capped] == [0, 15]


@pytest.mark.parametrize('kind', ['mp4', 'flv'])
def test_decode_num_frames_mode(clips, kind):
  frames = media.decode_frames(clips[kind], num_frames=4)
  assert frames.shape == (4, HEIGHT, WIDTH, 3)
  # Centres of 4 segments of 90 frames: floor((i + 0.5) * 22.5).
  assert [colour_to_index(f) for f in frames] == [11, 33, 56, 78]
  one = media.decode_frames(clips[kind], num_frames=1)
  assert [colour_to_index(f) for f in one] == [45]


def test_decode_resize_options(clips):
  short = media.decode_frames(clips['mp4'], num_frames=2, resize_short_side=60)
  assert short.shape == (2, 60, 80, 3)
  exact = media.decode_frames(clips['mp4'], num_frames=2, size=(32, 48))
  assert exact.shape == (2, 32, 48, 3)
  assert [colour_to_index(f) for f in exact] == [22, 67]
  with pytest.raises(ValueError):
    media.decode_frames(clips['mp4'], fps=1.0, num_frames=3)
  with pytest.raises(ValueError):
    media.decode_frames(clips['mp4'])


@pytest.mark.parametrize('kind', ['truncated', 'empty', 'garbage'])
def test_bad_files_raise_media_error(clips, kind):
  path = clips[kind]
  with pytest.raises(media.MediaError, match=path.name):
    media.decode_frames(path, fps=1.0)
  with pytest.raises(media.MediaError, match=path.name):
    media.probe(path)


def test_truncated_flv(clips):
  # FLV has no index: a file cut in half opens and decodes up to the cut, so
  # truncation is detected against the declared duration.
  path = clips['truncated_flv']
  with pytest.raises(media.MediaError, match=r'truncated\.flv: truncated video'):
    media.decode_frames(path, num_frames=3)
  with pytest.raises(media.MediaError, match='truncated video'):
    media.decode_frames(path, fps=1.0)
  partial = media.decode_frames(path, fps=1.0, check_truncation=False)
  assert 1 <= partial.shape[0] <= 2
  assert colour_to_index(partial[0]) == 0
  # Stopping early via max_frames skips the check.
  assert media.decode_frames(path, fps=1.0, max_frames=1).shape[0] == 1


def test_corrupt_flv(clips, tmp_path):
  data = bytearray(clips['flv'].read_bytes())
  mid = len(data) // 2
  data[mid:mid + 2000] = np.random.default_rng(1).bytes(2000)
  path = tmp_path / 'corrupt.flv'
  path.write_bytes(bytes(data))
  with pytest.raises(media.MediaError, match='corrupt.flv'):
    media.decode_frames(path, num_frames=3)


def test_missing_file_raises_media_error(tmp_path):
  with pytest.raises(media.MediaError, match='nope.flv'):
    media.decode_frames(tmp_path / 'nope.flv', num_frames=3)


def test_sample_segment_indices_test_mode():
  # n=30, num=3: seg=10, t_i = 10 i + 5.
  np.testing.assert_array_equal(
      media.sample_segment_indices(30, 3, train=False, rng=None), [5, 15, 25])
  # n=10: seg=3, t_i = 3 i + 1.
  np.testing.assert_array_equal(
      media.sample_segment_indices(10, 3, train=False, rng=None), [1, 4, 7])
  # n=3: seg=1, max(0, 1) = 1 -> [1, 2, 3] clipped to n - 1.
  np.testing.assert_array_equal(
      media.sample_segment_indices(3, 3, train=False, rng=None), [1, 2, 2])
  # n < num repeats frames in order.
  np.testing.assert_array_equal(
      media.sample_segment_indices(2, 3, train=False, rng=None), [0, 0, 1])
  np.testing.assert_array_equal(
      media.sample_segment_indices(1, 3, train=True,
                                   rng=np.random.default_rng(0)), [0, 0, 0])


def test_sample_segment_indices_train_mode():
  rng = np.random.default_rng(123)
  seen = np.zeros((3, 10), bool)
  for _ in range(500):
    t = media.sample_segment_indices(31, 3, train=True, rng=rng)  # seg = 10
    assert t.shape == (3,)
    for i in range(3):
      assert 10 * i <= t[i] <= 10 * i + 9
      seen[i, t[i] - 10 * i] = True
  assert seen.all()  # every index of each segment is reachable
  a = media.sample_segment_indices(31, 3, train=True,
                                   rng=np.random.default_rng(7))
  b = media.sample_segment_indices(31, 3, train=True,
                                   rng=np.random.default_rng(7))
  np.testing.assert_array_equal(a, b)


def test_jpeg_round_trip_and_crops():
  rng = np.random.default_rng(0)
  img = np.zeros((48, 64, 3), np.uint8)
  img[:, :32] = (200, 30, 60)
  img[:, 32:] = (20, 180, 90)
  data = media.encode_jpeg(img, quality=95)
  assert data[:2] == b'\xff\xd8'
  out = media.decode_jpeg(data)
  assert out.shape == img.shape and out.dtype == np.uint8
  assert np.abs(out[4:-4, 4:28].astype(int) - img[4:-4, 4:28]).max() <= 6
  with pytest.raises(media.MediaError):
    media.decode_jpeg(b'not a jpeg')

  noise = rng.integers(0, 256, (100, 60, 3), dtype=np.uint8)
  assert media.resize_short_side(noise, 30).shape == (50, 30, 3)
  crop = media.center_crop(noise, (20, 10))
  np.testing.assert_array_equal(crop, noise[40:60, 25:35])
  np.testing.assert_array_equal(media.center_crop(noise, 60), noise[20:80])
  with pytest.raises(ValueError):
    media.center_crop(noise, 61)
