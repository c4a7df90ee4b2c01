"""synthetic_av's signals: the class prototypes and the audio / frame synthesis each record draws.

Prototypes are functions of the pattern index only (never of the seed); synthesis is a function of
the generator passed in, so records stay pure functions of (seed, split, index).
"""

from __future__ import annotations

import colorsys
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
  from .synthetic_av_dataset_builder import SyntheticAVConfig


# --- Class prototypes. -----------------------------------------------------------------------


def class_attributes(num_classes: int) -> np.ndarray:
  """Fixed (arousal, valence, dominance) point per class in [0.15, 0.85], float32 (K, 3)."""
  return np.random.default_rng([20240, num_classes]).uniform(0.15, 0.85, (num_classes, 3)).astype(
      np.float32)


def _audio_prototype(pattern: int, num_patterns: int) -> tuple[float, float]:
  """(fundamental Hz, amplitude-modulation Hz): pitch rises, modulation rate falls with pattern."""
  frac = pattern / max(num_patterns - 1, 1)
  return 220.0 * 4.0 ** frac, 12.0 - 9.0 * frac


def _visual_prototype(pattern: int, num_patterns: int) -> tuple[np.ndarray, float, bool]:
  """(RGB colour in [0, 255], stripe angle in radians, is_square)."""
  rgb = np.array(colorsys.hsv_to_rgb(pattern / num_patterns, 0.9, 0.95), np.float32) * 255.0
  return rgb, np.pi * pattern / num_patterns, bool(pattern % 2)


# --- Signal synthesis. ------------------------------------------------------------------------


def _pink_noise(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
  """Unit-RMS 1/f noise, float64 (n,)."""
  spec = np.fft.rfft(rng.standard_normal(n))
  freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
  noise = np.fft.irfft(spec / np.sqrt(np.maximum(freqs, 20.0)), n)
  return noise / (np.sqrt(np.mean(noise ** 2)) + 1e-12)


def synth_audio(rng: np.random.Generator, pattern: int | None, cfg: SyntheticAVConfig,
                snr_db: float) -> np.ndarray:
  """Waveform float32 (cfg.num_samples,): pattern's tone (none if `pattern` is None) + pink noise."""
  n = int(round(cfg.clip_seconds * cfg.sample_rate))
  t = np.arange(n) / cfg.sample_rate
  rms = 0.1
  wave = np.zeros(n)
  if pattern is not None:
    f0, am = _audio_prototype(pattern, cfg.num_audio_groups)
    f0 *= np.exp(rng.normal(0.0, cfg.pitch_jitter))
    am *= np.exp(rng.normal(0.0, 0.05))
    for h in range(1, 5):
      if h * f0 < 0.45 * cfg.sample_rate:
        wave += np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 2 * np.pi)) / h
    wave *= 1.0 - 0.35 * (1.0 + np.sin(2 * np.pi * am * t + rng.uniform(0, 2 * np.pi)))
    wave *= rms / (np.sqrt(np.mean(wave ** 2)) + 1e-12)
  wave += _pink_noise(rng, n, cfg.sample_rate) * rms * 10.0 ** (-snr_db / 20.0)
  m = cfg.num_samples  # Crop / zero-pad to the length giving exactly n_audio_frames frames.
  wave = wave[:m] if n >= m else np.pad(wave, (0, m - n))
  return wave.astype(np.float32)


def _blob_mask(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float,
               rx: float) -> np.ndarray:
  return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def render_frames(rng: np.random.Generator, pattern: int | None, cfg: SyntheticAVConfig,
                  visibility: float) -> tuple[np.ndarray, np.ndarray]:
  """Frames uint8 (T, S, S, 3): clutter, and the pattern's striped shape unless `pattern` is None;
  and their true forward flow float32 (T, S, S, 2) in pixels (dx, dy): each shape's velocity on
  its pixels (the frontmost shape's where they overlap), 0 on the background."""
  s, nt = cfg.image_size, cfg.num_frames
  yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
  # Background: random tint, a smooth random gradient.
  bg = rng.uniform(70.0, 180.0, 3)
  gy, gx = rng.normal(0.0, 20.0 / s, 2)
  base = bg[None, None, :] + ((yy - s / 2) * gy + (xx - s / 2) * gx)[..., None]
  lo, hi = cfg.num_distractors
  nb = int(rng.integers(lo, hi + 1))
  blob_c = rng.uniform(0.0, s, (nb, 2))
  blob_r = rng.uniform(0.05, 0.14, (nb, 2)) * s
  blob_rgb = rng.uniform(0.0, 255.0, (nb, 3))
  blob_v = rng.normal(0.0, 1.0, (nb, 2))
  blob_top = rng.random(nb) < 0.3  # Drawn over the target: partial occlusion.
  if pattern is not None:
    rgb, angle, square = _visual_prototype(pattern, cfg.num_visual_groups)
    rgb = np.clip(rgb * rng.uniform(0.85, 1.1), 0, 255)
    angle += rng.normal(0.0, 0.08)
    radius = rng.uniform(0.17, 0.22) * s
    centre = rng.uniform(radius, s - radius, 2)
    vel = rng.normal(0.0, 1.5, 2)
    period = rng.uniform(0.10, 0.14) * s
    phase = rng.uniform(0, 2 * np.pi)
  frames = np.empty((nt, s, s, 3), np.float32)
  flow = np.zeros((nt, s, s, 2), np.float32)
  for i in range(nt):
    img = base.copy()
    c = blob_c + i * blob_v
    for b in np.flatnonzero(~blob_top):
      blob = _blob_mask(yy, xx, c[b, 0], c[b, 1], blob_r[b, 0], blob_r[b, 1])
      img[blob], flow[i][blob] = blob_rgb[b], blob_v[b, ::-1]
    if pattern is not None:
      cy, cx = centre + i * vel
      if square:
        mask = (np.abs(yy - cy) <= radius * 0.89) & (np.abs(xx - cx) <= radius * 0.89)
      else:
        mask = _blob_mask(yy, xx, cy, cx, radius, radius)
      proj = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
      stripes = np.sin(2 * np.pi * proj / period + phase) > 0
      tex = rgb[None, None, :] * np.where(stripes, 1.0, 0.45)[..., None]
      alpha = visibility * mask[..., None]
      img = img * (1.0 - alpha) + tex * alpha
      flow[i][mask] = vel[::-1]
    for b in np.flatnonzero(blob_top):
      blob = _blob_mask(yy, xx, c[b, 0], c[b, 1], blob_r[b, 0], blob_r[b, 1])
      img[blob], flow[i][blob] = blob_rgb[b], blob_v[b, ::-1]
    frames[i] = img
  frames += rng.normal(0.0, cfg.pixel_noise, frames.shape)
  return np.clip(np.rint(frames), 0, 255).astype(np.uint8), flow
