"""Tests for avjax.media.audio: loading real containers and each front end.

Every spectrogram is checked against an independent computation written here
with the reference parameters (librosa.stft / scipy.signal.spectrogram / a
per-frame Kaldi loop).
"""

from __future__ import annotations

import math
import pathlib

import librosa
import numpy as np
import pytest
import scipy.signal
import soundfile as sf

from avjax import media

from .test_video import AUDIO_RATE, FPS, NUM_FRAMES, TONE_HZ, write_video

WAV_RATE = 16000
WAV_TONE_HZ = 1000.0
WAV_SECONDS = 1.5


def peak_hz(wave: np.ndarray, rate: int) -> float:
  spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.shape[0])))
  return float(np.argmax(spectrum) * rate / wave.shape[0])


@pytest.fixture(scope='module')
def files(tmp_path_factory) -> dict[str, pathlib.Path]:
  root = tmp_path_factory.mktemp('audio')
  t = np.arange(int(WAV_RATE * WAV_SECONDS)) / WAV_RATE
  tone = 0.5 * np.sin(2 * np.pi * WAV_TONE_HZ * t)
  sf.write(root / 'tone.wav', tone, WAV_RATE, subtype='PCM_16')
  stereo = np.stack([tone, 0.5 * tone], axis=1)
  sf.write(root / 'stereo.flac', stereo, WAV_RATE)
  sf.write(root / 'silent.wav', np.zeros((0,)), WAV_RATE)
  data = (root / 'tone.wav').read_bytes()
  (root / 'truncated.wav').write_bytes(data[:len(data) // 2])
  (root / 'empty.wav').write_bytes(b'')
  (root / 'garbage.wav').write_bytes(b'RIFF' + bytes(range(200)))
  mp4 = write_video(root / 'clip.mp4', video_codec='libx264', audio_codec='aac')
  flv = write_video(root / 'clip.flv', video_codec='flv',
                    audio_codec='libmp3lame')
  write_video(root / 'mute.mp4', video_codec='libx264', audio_codec=None,
              num_frames=10)
  data = mp4.read_bytes()
  (root / 'truncated.mp4').write_bytes(data[:len(data) // 2])
  data = flv.read_bytes()
  (root / 'truncated.flv').write_bytes(data[:len(data) // 2])
  return {p.stem + p.suffix: p for p in root.iterdir()} | {'mp4': mp4,
                                                            'flv': flv}


def test_load_wav(files):
  wave, rate = media.load_audio(files['tone.wav'])
  assert rate == WAV_RATE and wave.dtype == np.float32
  assert wave.shape == (int(WAV_RATE * WAV_SECONDS),)
  expected, _ = sf.read(files['tone.wav'], dtype='float32')
  np.testing.assert_array_equal(wave, expected)
  assert peak_hz(wave, rate) == pytest.approx(WAV_TONE_HZ, abs=1.0)


def test_load_wav_resampled(files):
  wave, rate = media.load_audio(files['tone.wav'], sample_rate=22050)
  assert rate == 22050 and wave.dtype == np.float32
  assert wave.shape == (int(22050 * WAV_SECONDS),)
  assert peak_hz(wave, rate) == pytest.approx(WAV_TONE_HZ, abs=1.0)
  native, _ = media.load_audio(files['tone.wav'])
  expected = librosa.resample(native, orig_sr=WAV_RATE, target_sr=22050,
                              res_type='soxr_hq')
  np.testing.assert_allclose(wave, expected, atol=1e-6)


def test_load_stereo(files):
  both, rate = media.load_audio(files['stereo.flac'], mono=False)
  assert both.shape == (2, int(WAV_RATE * WAV_SECONDS)) and rate == WAV_RATE
  mono, _ = media.load_audio(files['stereo.flac'])
  np.testing.assert_allclose(mono, both.mean(axis=0), atol=1e-7)
  np.testing.assert_allclose(both[1], 0.5 * both[0], atol=1e-4)


@pytest.mark.parametrize('kind', ['mp4', 'flv'])
def test_load_container_audio(files, kind):
  wave, rate = media.load_audio(files[kind])
  assert rate == AUDIO_RATE and wave.ndim == 1 and wave.dtype == np.float32
  expected = AUDIO_RATE * NUM_FRAMES // FPS
  # Codec priming / padding adds or drops at most a few frames of 1024-1152.
  assert abs(wave.shape[0] - expected) <= 2500
  middle = wave[4096:-4096]  # lossy codecs ring at the abrupt ends
  rms = float(np.sqrt(np.mean(middle ** 2)))
  assert rms == pytest.approx(0.5 / math.sqrt(2), rel=0.05)
  assert peak_hz(wave, rate) == pytest.approx(TONE_HZ, abs=1.0)

  wave16, rate16 = media.load_audio(files[kind], sample_rate=16000)
  assert rate16 == 16000
  assert wave16.shape[0] == pytest.approx(wave.shape[0] * 16000 / AUDIO_RATE,
                                          abs=2)
  assert peak_hz(wave16, rate16) == pytest.approx(TONE_HZ, abs=1.0)


@pytest.mark.parametrize('name', ['empty.wav', 'silent.wav', 'garbage.wav',
                                  'truncated.wav',
                                  'truncated.mp4', 'truncated.flv',
                                  'mute.mp4'])
def test_bad_audio_raises_media_error(files, name):
  with pytest.raises(media.MediaError, match=name):
    media.load_audio(files[name])


def test_truncated_wav_without_check(files):
  wave, _ = media.load_audio(files['truncated.wav'], check_truncation=False)
  assert abs(wave.shape[0] - WAV_RATE * WAV_SECONDS / 2) < 100


def test_truncated_flv_audio_without_check(files):
  wave, rate = media.load_audio(files['truncated.flv'], check_truncation=False)
  assert rate == AUDIO_RATE
  assert 0.3 * AUDIO_RATE < wave.shape[0] < 0.7 * AUDIO_RATE * NUM_FRAMES / FPS


def test_missing_audio_raises_media_error(tmp_path):
  with pytest.raises(media.MediaError, match='missing.wav'):
    media.load_audio(tmp_path / 'missing.wav')


def test_tile_to_length():
  x = np.array([1.0, 2.0, 3.0], np.float32)
  np.testing.assert_array_equal(media.tile_to_length(x, 7),
                                [1, 2, 3, 1, 2, 3, 1])
  np.testing.assert_array_equal(media.tile_to_length(x, 2), [1, 2])
  long = np.arange(100.0)
  np.testing.assert_array_equal(media.tile_to_length(long, 250),
                                np.tile(long, 3)[:250])


@pytest.fixture(scope='module')
def noise() -> np.ndarray:
  rng = np.random.default_rng(0)
  return (0.3 * rng.standard_normal(int(22050 * 1.7))).astype(np.float32)


def test_ogm_ge_log_stft_crema_d(noise):
  wave = noise.copy()
  wave[100:200] = 1.7  # exercises the clip to [-1, 1]
  spec = media.ogm_ge_log_stft(wave)
  assert spec.shape == (257, 188) and spec.dtype == np.float32
  ref = np.tile(wave, 3)[:66150]
  ref[ref > 1.0] = 1.0
  ref[ref < -1.0] = -1.0
  s = librosa.stft(ref, n_fft=512, hop_length=353)
  np.testing.assert_allclose(spec, np.log(np.abs(s) + 1e-7), atol=1e-5)


def test_ogm_ge_log_stft_vggsound():
  rng = np.random.default_rng(1)
  wave = (0.2 * rng.standard_normal(16000 * 3)).astype(np.float32)
  start = 12345
  spec = media.ogm_ge_log_stft(wave, n_fft=256, hop_length=128,
                               num_samples=80000, start=start, clip=False)
  assert spec.shape == (129, 626)
  ref = wave
  while ref.shape[0] / 16000 < 10.0:  # the reference doubles until >= 10 s
    ref = np.tile(ref, 2)
  ref = ref[start:start + 80000]
  s = librosa.stft(ref, n_fft=256, hop_length=128)
  np.testing.assert_allclose(spec, np.log(np.abs(s) + 1e-7), atol=1e-5)


def test_mmcosine_log_psd():
  rng = np.random.default_rng(2)
  wave = 0.3 * rng.standard_normal(16000 * 2)
  spec = media.mmcosine_log_psd(wave)
  assert spec.shape == (257, 299) and spec.dtype == np.float32
  ref = np.clip(np.tile(wave, 3)[:48000], -1.0, 1.0)
  _, _, p = scipy.signal.spectrogram(ref, 16000, nperseg=512, noverlap=353)
  logp = np.log(p + 1e-7)
  expected = (logp - logp.mean()) / (logp.std() + 1e-9)
  np.testing.assert_allclose(spec, expected, atol=1e-5)
  assert abs(float(spec.mean())) < 1e-4
  assert float(spec.std()) == pytest.approx(1.0, abs=1e-4)


def test_log_mel_spectrogram(noise):
  kw = dict(n_fft=2048, win_length=512, hop_length=353)
  out = media.log_mel_spectrogram(noise, 44100, n_mels=256, **kw)
  n_frames = 1 + noise.shape[0] // 353
  assert out.shape == (256, n_frames) and out.dtype == np.float32
  power = np.abs(librosa.stft(noise, **kw)) ** 2
  mel = librosa.filters.mel(sr=44100, n_fft=2048, n_mels=256) @ power
  np.testing.assert_allclose(out, np.log(mel + 1e-6), atol=2e-4)

  db = media.log_mel_spectrogram(noise, 44100, n_mels=256, to_db=True, **kw)
  ref_db = 10 * np.log10(np.maximum(mel, 1e-10)) - 10 * np.log10(mel.max())
  ref_db = np.maximum(ref_db, ref_db.max() - 80.0)
  np.testing.assert_allclose(db, ref_db, atol=2e-3)
  assert db.max() == pytest.approx(0.0, abs=1e-6)


def loop_kaldi_fbank(wave: np.ndarray, rate: int, num_bins: int) -> np.ndarray:
  """Straightforward per-frame Kaldi fbank (htk_compat, hanning, no energy)."""
  win, shift, n_fft = int(rate * 0.025), int(rate * 0.010), 1
  while n_fft < win:
    n_fft *= 2
  mel = lambda f: 1127.0 * math.log(1.0 + f / 700.0)
  lo, hi = mel(20.0), mel(rate / 2.0)
  step = (hi - lo) / (num_bins + 1)
  banks = np.zeros((num_bins, n_fft // 2 + 1))
  for b in range(num_bins):
    left, centre, right = lo + b * step, lo + (b + 1) * step, lo + (b + 2) * step
    for k in range(n_fft // 2):
      m = mel(k * rate / n_fft)
      if left < m <= centre:
        banks[b, k] = (m - left) / (centre - left)
      elif centre < m < right:
        banks[b, k] = (right - m) / (right - centre)
  x = wave.astype(np.float64) - wave.mean()
  rows = []
  for f in range((len(x) - win) // shift + 1):
    frame = x[f * shift:f * shift + win].copy()
    frame -= frame.mean()
    emph = frame.copy()
    emph[0] = frame[0] - 0.97 * frame[0]
    for i in range(1, win):
      emph[i] = frame[i] - 0.97 * frame[i - 1]
    padded = np.zeros(n_fft)
    padded[:win] = emph * np.hanning(win)
    power = np.abs(np.fft.fft(padded)[:n_fft // 2 + 1]) ** 2
    energies = banks @ power
    rows.append(np.log(np.maximum(energies, np.finfo(np.float32).eps)))
  return np.array(rows)


def test_kaldi_fbank_matches_loop():
  rng = np.random.default_rng(3)
  wave = (0.1 * rng.standard_normal(4000) + 0.05).astype(np.float32)
  raw = media.kaldi_fbank(wave, target_frames=None, normalize=False)
  expected = loop_kaldi_fbank(wave, 16000, 128)
  assert raw.shape == (1 + (4000 - 400) // 160, 128) == expected.shape
  assert raw.dtype == np.float32
  np.testing.assert_allclose(raw, expected, rtol=1e-5, atol=1e-4)

  # Pad / crop to target_frames and the Kinetics-Sounds normalisation.
  padded = media.kaldi_fbank(wave, target_frames=30)
  assert padded.shape == (30, 128)
  np.testing.assert_allclose(padded[:23], (raw + 4.503877) / (2 * 5.141276),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(padded[23:], 4.503877 / (2 * 5.141276), rtol=1e-6)
  cropped = media.kaldi_fbank(wave, target_frames=10, normalize=False)
  np.testing.assert_array_equal(cropped, raw[:10])
  default = media.kaldi_fbank(wave)
  assert default.shape == (1024, 128)


def test_kaldi_fbank_tone_lands_in_right_bin():
  t = np.arange(16000) / 16000
  wave = np.sin(2 * np.pi * 1000.0 * t)
  feats = media.kaldi_fbank(wave, target_frames=None, normalize=False,
                            num_mel_bins=40)
  mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)
  centres = mel(20.0) + (np.arange(40) + 1) * (mel(8000.0) - mel(20.0)) / 41
  assert np.argmax(feats.mean(axis=0)) == np.argmin(np.abs(centres -
                                                           mel(1000.0)))


def test_kaldi_fbank_matches_torchaudio():
  torch = pytest.importorskip('torch')
  kaldi = pytest.importorskip('torchaudio.compliance.kaldi')
  rng = np.random.default_rng(4)
  wave = (0.1 * rng.standard_normal(16000)).astype(np.float32)
  centred = torch.from_numpy(wave - wave.mean())[None]
  ref = kaldi.fbank(centred, htk_compat=True, sample_frequency=16000,
                    use_energy=False, window_type='hanning', num_mel_bins=128,
                    dither=0.0, frame_shift=10).numpy()
  ours = media.kaldi_fbank(wave, target_frames=None, normalize=False)
  np.testing.assert_allclose(ours, ref, atol=2e-3)


def test_warm_up_runs():
  media.warm_up()
