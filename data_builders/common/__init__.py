"""Machinery shared by the audio-visual builders (synthetic_av uses make_config): not a dataset.

- config.ClipConfig: the media front end as config fields (all stored in the metadata); make_config
  for distinctly named variants; $AVJAX_BUILD_WORKERS / $AVJAX_BUILD_STRICT.
- media.process_clip: decode one clip (audio front ends, frame selection + crop + JPEG, feature
  files, audio/video length check); every failure is a report.ClipError with a kind.
- parallel.ClipRunner: spawned worker processes, warmed up once each, progress bar, crash recovery.
- report.BuildReport: report-and-skip, the end-of-build summary, strict mode.
- builder.ClipBuilder: the TFDS builder around them; files: finding files in the manual folder
  (recursive indexes, label files, YouTube-style clip ids).
- beam: the same decoding as a Beam pipeline (`tfds build --beam_pipeline_options=...`).
- flow.process_clip: media.process_clip plus an optical-flow modality (ucf101).

Nothing is imported here, so a decoding worker that unpickles parallel / media loads only those.
"""
