"""The allocator re-exec of avjax.main: when it happens, and that the child really gets the tunables."""

from __future__ import annotations

import os
import subprocess
import sys

from avjax import hostmem

ARGV = ["python", "-X", "utf8", "-m", "avjax.main", "--config", "configs/demo.py"]


def test_reexec_keeps_interpreter_options_and_arguments_and_adds_the_tunables():
  argv, env = hostmem.reexec_command({"PATH": "/bin"}, ARGV, "glibc")
  assert argv == [sys.executable, *ARGV[1:]]
  assert env == {"PATH": "/bin", "GLIBC_TUNABLES": hostmem.GLIBC_TUNABLES}


def test_no_reexec_when_chosen_already_opted_out_or_not_glibc():
  assert hostmem.reexec_command({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, ARGV,
                                "glibc") is None  # The user's (or an earlier re-exec's) choice.
  assert hostmem.reexec_command({hostmem.OPT_OUT: "off"}, ARGV, "glibc") is None
  assert hostmem.reexec_command({}, ARGV, "") is None


def test_reexec_runs_the_same_command_with_the_tunables(tmp_path):
  script = tmp_path / "child.py"
  script.write_text("import os, sys\n"
                    "from avjax import hostmem\n"
                    "hostmem.reexec_with_tunables()\n"
                    "print(os.getpid(), sys.argv[1:], os.environ.get('GLIBC_TUNABLES'))\n")
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", hostmem.OPT_OUT)}
  proc = subprocess.run([sys.executable, str(script), "a", "--b=c"], env=env, capture_output=True,
                        text=True, check=True, timeout=120)
  _, rest = proc.stdout.split(" ", 1)
  expected = hostmem.GLIBC_TUNABLES if hostmem.libc_name() == "glibc" else "None"
  assert rest.strip() == f"['a', '--b=c'] {expected}"
