r"""Runs a command as N local JAX processes joined through jax.distributed (loopback coordinator).

  python scripts/launch_local.py -n 2 --devices_per_process 4 -- \
      python -m avjax.main --config configs/demo.py:smoke --workdir runs/mp

Each process gets `--config.mesh.coordinator_address/num_processes/process_id` appended (so the
command must be an avjax.main-style command), `devices_per_process` simulated CPU devices when asked,
and its output lines prefixed with `[p<i>]`. This is how a multi-host run is exercised on one machine;
on a real cluster, start one process per host the same way (or let TPU / SLURM environments
provide the coordinator, see the README).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading

_DEVICE_COUNT = "--xla_force_host_platform_device_count"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _pump(stream, prefix: str, out) -> None:
  for line in iter(stream.readline, ""):
    out.write(f"{prefix} {line}")
    out.flush()


def _with_device_count(xla_flags: str, devices: int) -> str:
  """`xla_flags` (the caller's other XLA options kept) simulating `devices` CPU devices."""
  kept = [f for f in xla_flags.split() if not f.startswith(f"{_DEVICE_COUNT}=")]
  return " ".join(kept + [f"{_DEVICE_COUNT}={devices}"])


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("-n", "--num_processes", type=int, default=2)
  parser.add_argument("--devices_per_process", type=int, default=0,
                      help="Simulated CPU devices per process (0: leave the device count alone; "
                           "other XLA_FLAGS are kept either way).")
  parser.add_argument("--port", type=int, default=0, help="Coordinator port (0: pick a free one).")
  parser.add_argument("command", nargs=argparse.REMAINDER)
  args = parser.parse_args(argv)
  command = args.command[1:] if args.command[:1] == ["--"] else args.command
  if not command:
    parser.error("give the command after --")
  address = f"127.0.0.1:{args.port or _free_port()}"
  procs, pumps = [], []
  for i in range(args.num_processes):
    env = dict(os.environ)
    if args.devices_per_process:
      env["XLA_FLAGS"] = _with_device_count(env.get("XLA_FLAGS", ""), args.devices_per_process)
    cmd = command + [f"--config.mesh.coordinator_address={address}",
                     f"--config.mesh.num_processes={args.num_processes}",
                     f"--config.mesh.process_id={i}"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    pump = threading.Thread(target=_pump, args=(proc.stdout, f"[p{i}]", sys.stdout), daemon=True)
    pump.start()
    procs.append(proc)
    pumps.append(pump)
  codes = [p.wait() for p in procs]
  for pump in pumps:
    pump.join(timeout=5)
  return max(codes, key=abs)


if __name__ == "__main__":
  sys.exit(main())
