r"""The `tfds` command line without TensorFlow: `python -m avjax.tfds build data_builders/<name> ...`.

tensorflow-datasets 4.9.10's CLI imports every subcommand at start-up, and two of them
(`convert_format`, `build_croissant`) import TensorFlow / mlcroissant at module level, so plain
`tfds build` fails without TensorFlow even though `build` itself never needs it. This entry point
replaces those two subcommands with stand-ins that say what they need, then runs the real CLI:
`build` and `new` behave exactly as `tfds build` / `tfds new` (same flags).
"""

from __future__ import annotations

import dataclasses
import sys
import types


def _unavailable(command: str, needs: str) -> type:
  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Unavailable:
    def execute(self) -> None:
      raise SystemExit(f"`tfds {command}` needs {needs}, which avjax does not install; "
                       "`build` and `new` work without it.")
  Unavailable.__name__ = Unavailable.__qualname__ = f"{command}_unavailable"
  return Unavailable


def _install_stand_ins() -> None:
  package = "tensorflow_datasets.scripts.cli"
  for module, attr, command, needs in (("convert_format", "Args", "convert_format", "TensorFlow"),
                                       ("croissant", "CmdArgs", "build_croissant", "mlcroissant")):
    name = f"{package}.{module}"
    if name not in sys.modules:
      stand_in = types.ModuleType(name)
      setattr(stand_in, attr, _unavailable(command, needs))
      sys.modules[name] = stand_in


def launch() -> None:
  _install_stand_ins()
  from tensorflow_datasets.scripts.cli import main as tfds_main  # pylint: disable=g-import-not-at-top
  tfds_main.launch_cli()


if __name__ == "__main__":
  launch()
