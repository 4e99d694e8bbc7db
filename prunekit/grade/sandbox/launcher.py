"""The first program of every kernel and check: join the run's cgroup, set hard limits, exec the box.

    python -I launcher.py [--cgroup-procs FILE ...] [--memory-mb N] [--cpu-seconds N]
                          [--max-processes N] [--max-file-bytes N] -- bwrap ... python -m ipykernel_launcher ...

It runs as the grader, before bubblewrap and before a single line of the submission: it writes
its own pid into each ``cgroup.procs`` file of the run's control group
(:mod:`prunekit.grade.sandbox.cgroups`), so that bwrap, the kernel and everything the kernel
ever starts are counted and limited together; it sets the hard resource limits (soft = hard,
so the kernel cannot raise them); then it replaces itself with the command. A limit it cannot
set is reported on stderr (the kernel's log), never skipped silently.

A script on purpose (``python -I``, standard library only): it must not import the package
from the grader's working tree, which the box must never see.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
from pathlib import Path


def argv(cgroup_procs: list[str], memory_mb: int | None, cpu_seconds: int | None, max_processes: int | None,
         max_file_bytes: int) -> list[str]:
    """The launcher's own command line; append the command to run after it."""
    out = [sys.executable, "-I", str(Path(__file__).resolve())]
    for path in cgroup_procs:
        out += ["--cgroup-procs", path]
    if memory_mb:
        out += ["--memory-mb", str(int(memory_mb))]
    if cpu_seconds:
        out += ["--cpu-seconds", str(int(cpu_seconds))]
    if max_processes:
        out += ["--max-processes", str(int(max_processes))]
    return out + ["--max-file-bytes", str(int(max_file_bytes)), "--"]


def join(cgroup_procs: list[str]) -> None:
    """Move this process into the run's group; a failure stops the launch (no unlimited kernel)."""
    for path in cgroup_procs:
        with open(path, "w") as f:
            f.write(str(os.getpid()))


def set_limits(memory_mb: int | None, cpu_seconds: int | None, max_processes: int | None,
               max_file_bytes: int) -> None:
    limits = [(resource.RLIMIT_CORE, 0), (resource.RLIMIT_FSIZE, max_file_bytes)]
    if cpu_seconds:  # per process: a last resort (the cgroup's quota or the watchdog share the CPU)
        limits.append((resource.RLIMIT_CPU, int(cpu_seconds)))
    if max_processes and hasattr(resource, "RLIMIT_NPROC"):  # counted per uid: only for a leased uid
        limits.append((resource.RLIMIT_NPROC, int(max_processes)))
    if memory_mb:
        limits.append((resource.RLIMIT_AS, int(memory_mb) << 20))
    for which, value in limits:
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError) as err:
            print(f"prunekit launcher: could not set limit {which}: {err}", file=sys.stderr)


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="prunekit sandbox launcher")
    parser.add_argument("--cgroup-procs", action="append", default=[])
    parser.add_argument("--memory-mb", type=int, default=None)
    parser.add_argument("--cpu-seconds", type=int, default=None)
    parser.add_argument("--max-processes", type=int, default=None)
    parser.add_argument("--max-file-bytes", type=int, default=1 << 30)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    options = parser.parse_args(args)
    command = options.command[1:] if options.command[:1] == ["--"] else options.command
    if not command:
        raise SystemExit("prunekit launcher: no command to run")
    try:
        join(options.cgroup_procs)
    except OSError as err:
        raise SystemExit(f"prunekit launcher: could not join the run's cgroup: {err}") from None
    set_limits(options.memory_mb, options.cpu_seconds, options.max_processes, options.max_file_bytes)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
