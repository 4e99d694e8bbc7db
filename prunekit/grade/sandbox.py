"""The box a submission's kernel runs in: its own folder, its own user, hard resource limits.

The grader does not start ``ipykernel`` directly. It starts *this file* as a script::

    python -I sandbox.py --memory-mb 4096 --user nobody -- python -m ipykernel_launcher -f conn.json

which, still as the grader's user, sets hard limits (address space, file size, number of
processes, no core dumps), hands the kernel's folder and connection file to the sandbox user,
drops privileges for good (``setgroups``/``setgid``/``setuid``) and finally ``exec``\\ s the
kernel. So the student's code runs:

* in a fresh empty folder (its ``HOME``, ``TMPDIR`` and current directory), with a clean
  environment (no secrets from the grader's);
* as an unprivileged user when the grader runs as root (default ``nobody``): it can read the
  library but cannot write into the repository, the solutions, or the grader's output. A root
  kernel could simply raise its own rlimits back, which is why privileges are dropped;
* under ``RLIMIT_AS``, which makes a memory bomb fail with ``MemoryError`` in the student's
  cell. The grader's watchdog (see :mod:`prunekit.grade.runner`) is the second line: it sums
  the resident memory of the kernel's process tree and kills it at the limit.

Not covered (run the grader in a container or VM if that matters to you): network access,
reading world-readable files (keep ``solutions/`` mode 700 on the grading machine so the
``nobody`` kernel cannot read it), and CPU time of processes that escape the process tree.
When the grader is not root, the kernel runs as the grader's own user and can write wherever
that user can.

Only the standard library is imported here: the file runs with ``python -I`` before anything
of the student's is on the path.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import uuid
from pathlib import Path

MAX_PROCESSES = 512  # a fork bomb hits this; per user, so parallel kernels share it
MAX_FILE_BYTES = 1 << 30  # one file may not fill the disk
RUN_TOKEN = "PRUNEKIT_GRADE_RUN"
CLONE_NEWNS, MS_BIND, MS_REC, MS_PRIVATE = 0x00020000, 1 << 12, 1 << 14, 1 << 18  # <sched.h>, <sys/mount.h>


def default_user() -> str | None:
    """``nobody`` when the grader runs as root (it needs to give up root), else no switch."""
    return "nobody" if hasattr(os, "geteuid") and os.geteuid() == 0 else None


def usable_user(user: str | None) -> tuple[str | None, str]:
    """``(user, "")`` if a kernel can start as ``user``, else ``(None, why)``: a quick trial run."""
    if not user:
        return None, ""
    import subprocess

    check = "import ipykernel, importlib.util as u; assert u.find_spec('prunekit')"  # finds, no torch import
    argv = kernel_argv(None, user)[:-5] + [sys.executable, "-c", check]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    try:
        done = subprocess.run(argv, cwd="/", env=env, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, str(err)
    if done.returncode != 0:
        return None, (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
    return user, ""


def kernel_argv(memory_mb: int | None, user: str | None, cpu_seconds: int | None = None) -> list[str]:
    """The kernel spec's argv: this launcher, then the real ipykernel command."""
    launcher = [sys.executable, "-I", str(Path(__file__).resolve())]
    if memory_mb:
        launcher += ["--memory-mb", str(int(memory_mb))]
    if cpu_seconds:
        launcher += ["--cpu-seconds", str(int(cpu_seconds))]
    if user:
        launcher += ["--user", user]
    return launcher + ["--", sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]


def prepare_workdir(root: Path, user: str | None, data_dir: Path | None) -> tuple[Path, dict[str, str]]:
    """Create ``root/work`` for the kernel and return it with the kernel's environment.

    Small files of the course's data folder are copied in (``PRUNEKIT_DATA``), so a kernel
    that cannot read the grader's home still finds the cached datasets.
    """
    work = root / "work"
    for sub in ("tmp", "data", ".ipython", ".mpl", ".runtime"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    if data_dir and data_dir.is_dir():
        for f in data_dir.iterdir():
            if f.is_file() and f.stat().st_size < 64 << 20:
                shutil.copy2(f, work / "data" / f.name)
    if user:
        _chown_tree(work, user)
    package_parent = str(Path(__file__).resolve().parents[2])  # so the kernel imports this prunekit
    env = {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
        "LANG": "C.UTF-8",
        "HOME": str(work),
        "TMPDIR": str(work / "tmp"),
        "IPYTHONDIR": str(work / ".ipython"),
        "MPLCONFIGDIR": str(work / ".mpl"),
        "JUPYTER_RUNTIME_DIR": str(work / ".runtime"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "PYTHONPATH": package_parent,
        "PYTHONHASHSEED": "0",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "MALLOC_ARENA_MAX": "2",  # fewer malloc arenas: less reserved address space per thread
        "OMP_NUM_THREADS": "1",  # one thread per kernel: parallel grading, reproducible sums
        "MKL_NUM_THREADS": "1",
        "PRUNEKIT_DATA": str(work / "data"),
        "PRUNEKIT_PROGRESS": "0",
        "PRUNEKIT_GRADING": "1",
        RUN_TOKEN: uuid.uuid4().hex,  # marks every process of this run, for the final sweep
    }
    return work, env


def _chown_tree(path: Path, user: str) -> None:
    import pwd

    entry = pwd.getpwnam(user)
    for p in [path, *path.rglob("*")]:
        os.chown(p, entry.pw_uid, entry.pw_gid)


def _set_limits(memory_mb: int | None, cpu_seconds: int | None, own_user: bool) -> None:
    limits = [(resource.RLIMIT_CORE, 0), (resource.RLIMIT_FSIZE, MAX_FILE_BYTES)]
    if cpu_seconds:  # per process: also ends a stray CPU burner that escaped the process tree
        limits.append((resource.RLIMIT_CPU, int(cpu_seconds)))
    if own_user and hasattr(resource, "RLIMIT_NPROC"):  # per user: only for a sandbox user
        limits.append((resource.RLIMIT_NPROC, MAX_PROCESSES))
    if memory_mb:
        limits.append((resource.RLIMIT_AS, int(memory_mb) << 20))
    for which, value in limits:
        try:
            resource.setrlimit(which, (value, value))  # soft = hard: the kernel cannot raise it
        except (ValueError, OSError) as err:
            print(f"prunekit sandbox: could not set limit {which}: {err}", file=sys.stderr)


def _expose_interpreter(paths: list[str]) -> None:
    """Let the sandbox user reach Python when it lives under a private folder (e.g. ``/root``).

    In a private mount namespace of this process only, a blocked folder on the way to the
    interpreter is covered by an empty, world-readable ``tmpfs`` and the one subfolder Python
    needs is bind-mounted back into it. The rest of the folder (the grader's home, say)
    stays invisible to the kernel. Needs root (Linux); only the first private folder on each
    path is handled.
    """
    import ctypes

    blocked: dict[str, set[str]] = {}
    for path in paths:
        parts = Path(os.path.realpath(path)).parts
        for depth in range(1, len(parts) - 1):
            folder = os.path.join(*parts[: depth + 1])
            if not os.stat(folder).st_mode & 0o001:  # others may not enter it
                blocked.setdefault(folder, set()).add(parts[depth + 1])
                break
    if not blocked:
        return
    libc = ctypes.CDLL(None, use_errno=True)

    def check(result: int, what: str) -> None:
        if result != 0:
            raise OSError(ctypes.get_errno(), f"prunekit sandbox: {what} failed")

    check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")  # a mount namespace of our own
    check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "making / private")
    for folder, children in blocked.items():
        keep = {c: os.open(os.path.join(folder, c), os.O_PATH) for c in children}  # grab before hiding
        check(libc.mount(b"tmpfs", folder.encode(), b"tmpfs", 0, b"mode=755,size=1m"), f"tmpfs on {folder}")
        for child, fd in keep.items():
            target = os.path.join(folder, child)
            os.mkdir(target)
            check(libc.mount(f"/proc/self/fd/{fd}".encode(), target.encode(), None, MS_BIND | MS_REC, None),
                  f"bind mount of {target}")
            os.close(fd)


def _drop_privileges(user: str, connection_file: str | None) -> None:
    import pwd

    entry = pwd.getpwnam(user)
    if connection_file:  # the kernel reads it after exec, as the sandbox user
        os.chown(connection_file, entry.pw_uid, entry.pw_gid)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    if os.getuid() == 0 or os.geteuid() == 0:
        raise SystemExit("prunekit sandbox: could not drop root privileges")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="prunekit sandbox")
    parser.add_argument("--memory-mb", type=int, default=None)
    parser.add_argument("--cpu-seconds", type=int, default=None)
    parser.add_argument("--user", default=None)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise SystemExit("prunekit sandbox: no command to run")
    _set_limits(args.memory_mb, args.cpu_seconds, own_user=bool(args.user))
    if args.user:
        connection = command[command.index("-f") + 1] if "-f" in command else None
        _expose_interpreter([command[0], sys.base_prefix, __file__])
        _drop_privileges(args.user, connection)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
