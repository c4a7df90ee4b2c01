"""Media decoding and the per-paper audio / visual front ends (numpy, no JAX)."""

from avjax.media.audio import (MediaError, kaldi_fbank, load_audio,
                               log_mel_spectrogram, mmcosine_log_psd,
                               ogm_ge_log_stft, tile_to_length, warm_up)
from avjax.media.video import (VideoInfo, center_crop, decode_frames,
                               decode_jpeg, encode_jpeg, probe,
                               resize_short_side, sample_segment_indices)

__all__ = [
    'MediaError', 'VideoInfo', 'center_crop', 'decode_frames', 'decode_jpeg',
    'encode_jpeg', 'kaldi_fbank', 'load_audio', 'log_mel_spectrogram',
    'mmcosine_log_psd', 'ogm_ge_log_stft', 'probe', 'resize_short_side',
    'sample_segment_indices', 'tile_to_length', 'warm_up',
]
