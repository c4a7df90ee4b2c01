r"""The `tfds` command line without TensorFlow: `python -m avjax.tfds build data_builders/<name> ...`.

tensorflow-datasets 4.9.10's CLI imports every subcommand at start-up, and two of them
(`convert_format`, `build_croissant`) import TensorFlow / mlcroissant at module level, so plain
`tfds build` fails without TensorFlow even though `build` itself never needs it. This entry point
replaces those two subcommands with stand-ins that say what they need, then runs the real CLI:
`build` and `new` behave exactly as `tfds build` / `tfds new` (same flags), except that a
`--manual_dir` that is not a folder with files, and errors raised by avjax's builder code (no usable
clip, a strict build's first problem, a list file missing from the download), end with their
message and where they were raised instead of a traceback (AVJAX_TRACEBACK=1 keeps it), and
the folders a failed first build created are removed. A manual-download builder built without
--manual_dir (and nothing in TFDS's default manual folder) stops before anything is created.
`--help` starts with avjax's builders, their configs and the environment variables the builds
read.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
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


def _fail(message: str) -> None:
  print(f"avjax.tfds: error: {message}", file=sys.stderr)
  sys.exit(2)


def _check_manual_dir(argv: list[str]) -> None:
  """`--manual_dir DIR` / `--manual_dir=DIR` must name a folder that holds the download."""
  for i, arg in enumerate(argv):
    if arg == "--manual_dir" or arg.startswith("--manual_dir="):
      value = arg.partition("=")[2] if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else "")
      if not value:
        return  # The CLI's own usage error.
      path = os.path.expanduser(value)
      if not os.path.isdir(path):
        _fail(f"--manual_dir {value!r} is not a folder; point it at the unpacked download "
              "(the builder's README.md shows the layout it expects).")
      if not os.listdir(path):
        _fail(f"--manual_dir {value!r} is empty; point it at the unpacked download.")


_ENVIRONMENT = (("AVJAX_BUILD_WORKERS", "decoding processes of a build (default: the usable CPUs; "
                                        "0 decodes in this process)"),
                ("AVJAX_BUILD_STRICT", "1: stop at a build's first problem clip instead of "
                                       "skipping it and counting it in the summary"),
                ("AVJAX_TRACEBACK", "1: show the traceback of a builder's input error"),
                ("TFDS_DATA_DIR", "default --data_dir (else ~/tensorflow_datasets)"))


def _builders_root() -> str:
  return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data_builders")


def _builder_class(name: str):
  """data_builders.<name>.Builder, or None."""
  import importlib  # pylint: disable=import-outside-toplevel
  try:
    return getattr(importlib.import_module(f"data_builders.{name}"), "Builder", None)
  except ImportError:
    return None


def _help() -> str:
  """avjax's part of `--help`: its builders, their configs and the environment variables."""
  root = _builders_root()
  lines = ["avjax: `python -m avjax.tfds build data_builders/<name> --config=<config> "
           "[--manual_dir=DOWNLOAD] [--data_dir=DIR]` builds avjax's datasets without TensorFlow.",
           "", "Builders (data_builders/<name>/README.md: what to download, the layout expected):"]
  for name in sorted(os.listdir(root)):
    builder = _builder_class(name) if os.path.isfile(os.path.join(root, name, "__init__.py")) \
        and name != "common" else None
    if builder is None:
      continue
    configs = ", ".join(c.name for c in getattr(builder, "BUILDER_CONFIGS", ()))
    manual = (" (needs --manual_dir)" if getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
              else "")
    lines.append(f"  {name}{manual}: --config= {configs}")
  lines += ["", "Environment variables:"]
  lines += [f"  {k}: {v}" for k, v in _ENVIRONMENT]
  return "\n".join(lines + ["", "The tfds command line's own help follows.", ""])


def _build_target(argv: list[str]) -> tuple[str, str] | None:
  """(builder name, data dir) of `build data_builders/<name> ...`, else None."""
  if "build" not in argv:
    return None
  target = next((a for a in argv[argv.index("build") + 1:] if not a.startswith("-")), "")
  name = os.path.basename(os.path.normpath(target))
  if not target.rstrip("/").startswith("data_builders") or not name:
    return None
  data_dir = next((a.partition("=")[2] for a in argv if a.startswith("--data_dir=")), None)
  if "--data_dir" in argv and argv.index("--data_dir") + 1 < len(argv):
    data_dir = argv[argv.index("--data_dir") + 1]
  return name, os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR",
                                                             "~/tensorflow_datasets"))


def _check_manual_build(argv: list[str]) -> None:
  """`build data_builders/<name>` of a manual-download builder without --manual_dir (and nothing in
  TFDS's default <data_dir>/downloads/manual) would fail deep inside TFDS after creating folders."""
  target = _build_target(argv)
  if target is None or any(a.startswith("--manual_dir") for a in argv):
    return
  name, data_dir = target
  builder = _builder_class(name)
  if builder is None or not getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
    return
  default = os.path.join(data_dir, "downloads", "manual")
  if not (os.path.isdir(default) and os.listdir(default)):
    _fail(f"data_builders/{name} builds from a manual download: pass --manual_dir=<the unpacked "
          f"download> (data_builders/{name}/README.md shows what to download and its layout).")


def launch() -> None:
  import avjax.cli  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import  (its filter)
  argv = sys.argv[1:]
  if any(a in ("-h", "--help", "--helpfull") for a in argv):
    print(_help(), flush=True)
  _check_manual_dir(argv)
  _check_manual_build(argv)
  _install_stand_ins()
  from tensorflow_datasets.scripts.cli import main as tfds_main  # pylint: disable=g-import-not-at-top
  target = _build_target(argv)
  new_folders = [] if target is None else [p for p in _build_folders(*target)
                                           if not os.path.exists(p)]
  try:
    tfds_main.launch_cli()
  except (FileNotFoundError, RuntimeError, ValueError) as e:  # "found no usable clip", strict...
    where = _builder_frame(e)
    if where is None or os.environ.get("AVJAX_TRACEBACK"):
      raise
    _remove_unbuilt(new_folders)
    _fail(f"{e}\n(raised at {where}; AVJAX_TRACEBACK=1 shows the traceback)")


def _build_folders(name: str, data_dir: str) -> list[str]:
  """What TFDS creates before a build can fail, innermost first: the dataset's folder (config
  metadata, empty config folders), the downloads folder, the data dir."""
  return [os.path.join(data_dir, name), os.path.join(data_dir, "downloads"), data_dir]


def _remove_unbuilt(folders: list[str]) -> None:
  """Removes the folders a failed build created, unless anything built or downloaded is in them
  (a dataset_info.json, or a file under downloads/): a failed first build leaves nothing behind."""
  for folder in folders:
    if not os.path.isdir(folder):
      continue
    files = [os.path.join(root, f) for root, _, names in os.walk(folder) for f in names]
    if folder.endswith(f"{os.sep}downloads") and files:
      continue
    if any(os.path.basename(f) == "dataset_info.json" for f in files):
      continue
    if folder == folders[-1] and files:
      continue  # The data dir: only when the two above left it empty.
    shutil.rmtree(folder, ignore_errors=True)


def _builder_frame(error: BaseException) -> str | None:
  """'file:line' where `error` was raised when that is avjax's builder code, whose input errors
  say what to fix; None for anything else (shown with its traceback)."""
  tb = error.__traceback__
  while tb is not None and tb.tb_next is not None:
    tb = tb.tb_next
  if tb is None:
    return None
  path = tb.tb_frame.f_code.co_filename
  marker = f"{os.sep}data_builders{os.sep}"
  if marker not in path:
    return None
  return f"data_builders{os.sep}{path.split(marker, 1)[1]}:{tb.tb_lineno}"


if __name__ == "__main__":
  launch()
