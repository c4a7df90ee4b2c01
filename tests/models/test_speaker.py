"""MMCosine's VoxCeleb model: the log-mel front end against a PyTorch restatement, the mel
filters by hand, ResNetSE34V2's size and shapes, self-attentive pooling over time, the fused model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from avjax.models.speaker import (AVSpeakerClassifier, ResNetSE34V2, hz_to_mel,
                                  log_mel_instance_norm, mel_filterbank, mel_to_hz, stft_window)


def test_mel_filters_by_hand():
  fb = mel_filterbank(40)
  assert fb.shape == (257, 40) and fb.min() == 0.0 and fb.max() <= 1.0
  np.testing.assert_allclose(mel_to_hz(hz_to_mel([0.0, 700.0, 8000.0])), [0.0, 700.0, 8000.0])
  assert hz_to_mel(700.0) == pytest.approx(2595.0 * np.log10(2.0))
  # Filter k rises from point k to point k+1 and falls to point k+2 (HTK mel points, 0-8000 Hz).
  points = mel_to_hz(np.linspace(0.0, hz_to_mel(8000.0), 42))
  freqs = np.linspace(0, 8000, 257)
  k, f = 10, freqs[60]
  expected = max(0.0, min((f - points[k]) / (points[k + 1] - points[k]),
                          (points[k + 2] - f) / (points[k + 2] - points[k + 1])))
  assert fb[60, k] == pytest.approx(expected, rel=1e-6)


def test_front_end_matches_a_torch_restatement():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  wave = rng.normal(0, 0.1, (2, 4000)).astype(np.float32)
  ours = np.asarray(log_mel_instance_norm(jnp.asarray(wave), jnp.asarray(mel_filterbank(40))))
  x = torch.from_numpy(wave)
  x = torch.cat([x[:, 1:2], x], dim=1)
  x = x[:, 1:] - 0.97 * x[:, :-1]
  window = torch.nn.functional.pad(torch.hamming_window(400, periodic=True), (56, 56))
  spec = torch.stft(x, n_fft=512, hop_length=160, window=window, center=True, pad_mode="reflect",
                    return_complex=True).abs() ** 2  # (B, 257, T)
  mel = torch.log(torch.einsum("bft,fm->bmt", spec, torch.from_numpy(mel_filterbank(40))) + 1e-6)
  ref = torch.nn.functional.instance_norm(mel, eps=1e-5).numpy()
  assert ours.shape == ref.shape == (2, 40, 1 + 4000 // 160)
  np.testing.assert_allclose(ours, ref, atol=2e-3)
  assert stft_window()[:56].sum() == 0 and stft_window()[56] == pytest.approx(0.08)


def test_resnetse34v2_size_and_pooling_over_time():
  model = nnx.eval_shape(lambda: ResNetSE34V2(rngs=nnx.Rngs(0)))  # Shapes only: no compute.
  assert sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))) == 6_389_324
  tiny = ResNetSE34V2(widths=(4, 8, 8, 8), blocks=(1, 1, 1, 1), attention_dim=4, embedding_dim=6,
                      rngs=nnx.Rngs(1))
  tiny.eval()
  wave = jnp.asarray(np.random.default_rng(1).normal(0, 0.1, (2, 8000)), jnp.float32)
  out = tiny(wave)
  assert out.shape == (2, 6)
  np.testing.assert_allclose(tiny(wave[..., None]), out, rtol=1e-6)  # (B, N, 1) accepted.
  # Each example pooled on its own (eval mode): the batch does not mix.
  np.testing.assert_allclose(tiny(wave[:1]), out[:1], rtol=1e-5, atol=1e-6)


def test_speaker_classifier_groups_and_outputs():
  model = AVSpeakerClassifier(num_classes=5, audio_widths=(4, 8, 8, 8), face_widths=(4, 8, 8, 16),
                              attention_dim=4, rngs=nnx.Rngs(0))
  assert set(model.param_groups()) == {"encoder/audio", "encoder/visual", "fusion"}
  assert len(model.visual_encoder.backbone.layer3) == 6  # ResNet-34 faces.
  inputs = {"audio": jnp.zeros((2, 4000)).at[:, ::7].set(0.3),
            "visual": jnp.ones((2, 1, 16, 16, 3))}
  out = model(inputs)
  assert out.logits.shape == (2, 5) and out.features["audio"].shape == (2, 16)
  np.testing.assert_allclose(out.modality_logits["audio"] + out.modality_logits["visual"],
                             out.logits, rtol=1e-5, atol=1e-5)  # Concat: slices + b/2 each.
