"""The Apache Beam path of ClipBuilder, for building large datasets on a cluster (optional extra).

TFDS runs a builder on Beam when its DownloadConfig has a `beam_runner` or `beam_options`
(`tfds build ... --beam_pipeline_options=runner=DirectRunner,direct_num_workers=8`, or Dataflow /
Flink / Spark options). Each split then becomes one Beam branch:

  Create(jobs) -> Map(decode: the builder's PROCESS_TARGET, the function the local workers run)
    -> the good clips become examples (written by TFDS's BeamWriter, ArrayRecord, no TensorFlow)
    -> the bad ones are gathered into `<split>.build_problems.json` in the (incomplete) build
       folder, read back into the BuildReport once the pipeline has run, then deleted.

Strict builds raise StrictBuildError inside the pipeline, which fails the whole build. Planning
(reading label and split files, finding media) still runs where `tfds build` runs, so the manual
folder must be readable from there and from the Beam workers (a shared file system or GCS).
"""

from __future__ import annotations

import json
import os
from typing import Any

from etils import epath

from data_builders.common import parallel
from data_builders.common.report import BuildReport


def problems_path(builder: Any, split: str) -> epath.Path:
  """Where the split's skipped clips are gathered during a Beam build."""
  return epath.Path(builder.data_dir) / f'{split}.build_problems.json'


def decode(job: tuple[str, dict, dict], spec: dict[str, Any], target: str, strict: bool,
           name: str) -> tuple:
  """('ok', key, example) or ('bad', key, kind, message, files) for one (key, files, labels)."""
  key, files, labels = job
  result = parallel._resolve(target)(files, spec)  # pylint: disable=protected-access
  if result[0] == 'ok':
    return ('ok', key, {'id': key, **labels, **result[1]})
  _, kind, message, paths = result
  if strict:  # Raises StrictBuildError with the local build's message.
    BuildReport(name, strict=True).add(key, kind, message, paths)
  return ('bad', key, kind, message, list(paths))


def is_ok(result: tuple) -> bool:
  return result[0] == 'ok'


def is_bad(result: tuple) -> bool:
  return result[0] == 'bad'


def to_example(result: tuple) -> tuple[str, dict]:
  return result[1], result[2]


def write_problems(problems: list[tuple], path: str) -> None:
  epath.Path(path).write_text(json.dumps(sorted([list(p[1:]) for p in problems])))


def examples(builder: Any, split: str, clips: list[Any]) -> Any:
  """The beam.PTransform (PBegin -> (key, example)) that builds one split's examples."""
  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  cfg = builder.builder_config
  jobs = [(c.key, c.files, c.labels) for c in clips]
  kwargs = dict(spec=cfg.media_spec(), target=builder.PROCESS_TARGET, strict=builder.strict,
                name=f'{builder.name}/{cfg.name}')
  path = os.fspath(problems_path(builder, split))

  def expand(root: Any) -> Any:
    decoded = (root | f'Create_{split}' >> beam.Create(jobs)
               | f'Decode_{split}' >> beam.Map(decode, **kwargs))
    _ = (decoded | f'Bad_{split}' >> beam.Filter(is_bad)
         | f'GatherBad_{split}' >> beam.combiners.ToList()
         | f'WriteBad_{split}' >> beam.Map(write_problems, path=path))
    return (decoded | f'Good_{split}' >> beam.Filter(is_ok)
            | f'Examples_{split}' >> beam.Map(to_example))

  return beam.ptransform_fn(expand)()


def collect(builder: Any) -> None:
  """After the pipeline: skipped clips into builder.report, per-split counts, files removed."""
  for split, info in builder.info.splits.items():
    path = problems_path(builder, split)
    if path.exists():
      for key, kind, message, files in json.loads(path.read_text()):
        builder.report.add(key, kind, message, files)
      path.unlink()
    builder.report.examples[split] = int(info.num_examples)
