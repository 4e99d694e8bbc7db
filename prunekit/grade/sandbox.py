"""The box a submission's kernel runs in: bubblewrap, an existing, audited sandbox.

Every kernel -- the instructor's reference run included -- is started inside `bubblewrap
<https://github.com/containers/bubblewrap>`_ (Debian package ``bubblewrap``, command ``bwrap``),
the unprivileged sandbox Flatpak is built on. The grader writes no isolation code of its own;
it only chooses bwrap's options (:func:`bwrap_argv`):

* **nothing of the host but the interpreter**: a read-only ``/usr``, the Python installation,
  the environment's ``site-packages`` (at ``/opt/venv``) and an *installed copy* of prunekit
  (:mod:`prunekit.grade.install`, at ``/opt/prunekit``). No repository, no ``solutions/``, no
  ``.git``, no grader cache, no other submission: those paths do not exist in the box;
* **a fresh, size-limited tmpfs** as home and ``/tmp``; the course data files are bound
  read-only into it;
* **its own PID, network, IPC and UTS namespaces**: no network at all (not even the host's
  loopback), no view of other processes, and when the box's first process ends the kernel
  kills every process left in the namespace -- a double-forked ``setsid`` daemon included;
* **its own unprivileged uid**: when the grader is root, bwrap sets up the mounts and
  ``setpriv`` (util-linux) drops to a uid leased for this run alone (:func:`lease_uid`), with
  no capabilities and ``no_new_privs``. When the grader is not root, bwrap maps the grader's
  uid into a user namespace instead (concurrent kernels then share a uid but see nothing of
  each other).

The kernel talks to the grader over Unix sockets (ZeroMQ ``ipc``) in one folder bound into
the box, as the box has no network. Hard resource limits (address space, file size, CPU
seconds, processes) are set by :func:`main`, a few lines that run before bwrap and ``exec`` it.

Without bwrap (:func:`resolve`): an error when the environment variable ``CI`` is true, a
warning elsewhere, and ``--sandbox none`` runs kernels as the grader's own user with only the
resource limits -- for trusted notebooks (your own solutions), never for students' work.

Only the standard library is imported here: :func:`main` runs with ``python -I`` as a script.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

MODES = ("auto", "bwrap", "none")
HOME = "/home/student"
SITE = "/opt/prunekit"  # the installed copy of prunekit, read-only
VENV = "/opt/venv"  # the environment's bin/ and lib/ (site-packages), read-only
DATA = f"{HOME}/data"  # PRUNEKIT_DATA inside the box
OUTBOX = f"{HOME}/outbox"  # files handed to the grader (prunekit.grade.hand_in)
INBOX = f"{HOME}/inbox"  # files a check run receives, read-only
BOX_BYTES = 1 << 30  # each tmpfs (home, /tmp): a full disk there is the submission's own problem
MAX_PROCESSES = 512  # per uid: a fork bomb stops here (only set when the run has its own uid)
MAX_FILE_BYTES = 1 << 30
UID_BASE = int(os.environ.get("PRUNEKIT_GRADE_UID_BASE", "2000000"))  # far from real and subuid ranges
UID_SLOTS = 256
RUN_TOKEN = "PRUNEKIT_GRADE_RUN"  # marks the processes of a run without a sandbox, for the final sweep


class SandboxUnavailable(RuntimeError):
    """The sandbox was required (``--sandbox bwrap``, or ``CI=true``) but cannot run here."""


@dataclass(frozen=True)
class Sandbox:
    """How this grading session isolates kernels (resolved once, then passed to every worker)."""

    mode: str  # "bwrap" or "none"
    site: str = ""  # host folder that holds the installed copy (its prunekit/ is bound at SITE)
    bwrap: str = ""  # path of the bwrap executable
    setpriv: str = ""  # path of setpriv when the grader is root (drop to a leased uid)

    @property
    def boxed(self) -> bool:
        return self.mode == "bwrap"


def _is_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def resolve(requested: str = "auto", state_dir: Path | None = None, ci: bool | None = None) -> Sandbox:
    """Pick the sandbox for this session, after a trial run that imports prunekit in the box.

    ``auto``: bwrap when it works; otherwise :class:`SandboxUnavailable` under ``CI=true`` and
    a warning (and no sandbox) elsewhere. ``bwrap``: bwrap or :class:`SandboxUnavailable`.
    ``none``: no sandbox, on purpose (trusted notebooks only).
    """
    if requested not in MODES:
        raise ValueError(f"unknown sandbox {requested!r}; choose one of {', '.join(MODES)}")
    if requested == "none":
        return Sandbox("none")
    from .install import installed_copy  # imports nothing of torch

    box, why = _bwrap_box(installed_copy(state_dir or default_state_dir()))
    if box is not None:
        return box
    message = (f"the bubblewrap sandbox cannot run here ({why}); install it with "
               "`apt-get install bubblewrap` (or `make sandbox-deps`)")
    if requested == "bwrap" or (_is_ci() if ci is None else ci):
        raise SandboxUnavailable(message + ". Use --sandbox none only for trusted notebooks.")
    print(f"WARNING: {message}. Kernels run WITHOUT isolation, as your user: a submission can read "
          "the solutions, use the network and touch other runs. Grade untrusted work only with the "
          "sandbox.", file=sys.stderr)
    return Sandbox("none")


def default_state_dir() -> Path:
    """Where the grader keeps its own files (the installed copy): private to the grader's user."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "prunekit-grade"


def _bwrap_box(site: Path) -> tuple[Sandbox | None, str]:
    bwrap = shutil.which("bwrap")
    if not bwrap:
        return None, "`bwrap` is not installed"
    setpriv = ""
    if _is_root():
        setpriv = shutil.which("setpriv") or ""
        if not setpriv:
            return None, "`setpriv` (util-linux) is missing, so the kernel could not leave root"
    box = Sandbox("bwrap", site=str(site), bwrap=bwrap, setpriv=setpriv)
    check = "import ipykernel, prunekit.grade.records as r; assert r.__file__.startswith('/opt/prunekit/')"
    with tempfile.TemporaryDirectory(prefix="prunekit-probe-") as tmp, lease_uid(box) as uid:
        ipc = prepare_ipc(Path(tmp), uid)
        argv = bwrap_argv(box, ipc, uid, data_files=[]) + [f"{VENV}/bin/python", "-c", check]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=_outer_env())
        except (OSError, subprocess.TimeoutExpired) as err:
            return None, str(err)
    if done.returncode != 0:
        return None, (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
    return box, ""


# ---------------------------------------------------------------- one run's folder and uid
@contextmanager
def lease_uid(box: Sandbox) -> Iterator[int | None]:
    """A uid no other running kernel has (root + bwrap only; else None: the grader's own uid).

    Slots are ``flock``-ed files, so concurrent graders on one machine never share a uid. A
    slot whose uid still owns a process (a crashed grader's kernel) is skipped.
    """
    if not (box.boxed and box.setpriv):
        yield None
        return
    import fcntl

    locks = Path(tempfile.gettempdir()) / "prunekit-grade-uids"
    locks.mkdir(mode=0o700, exist_ok=True)
    busy = _uids_in_use()
    for slot in range(UID_SLOTS):
        uid = UID_BASE + slot
        if uid in busy:
            continue
        handle = open(locks / f"{uid}.lock", "w")  # noqa: SIM115 - held for the whole run
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        try:
            yield uid
        finally:
            handle.close()
        return
    raise SandboxUnavailable(f"all {UID_SLOTS} sandbox uids from {UID_BASE} are in use")


def _uids_in_use() -> set[int]:
    try:
        import psutil
    except ImportError:
        return set()
    used = set()
    for proc in psutil.process_iter(["uids"]):
        uids = proc.info.get("uids")
        if uids:
            used.add(uids.real)
    return used


def prepare_ipc(root: Path, uid: int | None) -> Path:
    """``root/ipc``: the only host folder the kernel may write (connection file, sockets).

    Also writes ``root/passwd`` and ``root/group``, the box's ``/etc/passwd`` and ``/etc/group``:
    one user, ``student``, with the run's uid (some libraries look the user up).
    """
    root.chmod(0o711)  # the kernel's uid may pass through, not list
    ipc = root / "ipc"
    ipc.mkdir(mode=0o700)
    if uid is not None:
        os.chown(ipc, uid, uid)
    me = os.getuid() if uid is None else uid
    (root / "passwd").write_text(f"student:x:{me}:{me}:student:{HOME}:/usr/sbin/nologin\n")
    (root / "group").write_text(f"student:x:{me}:\n")
    for name in ("passwd", "group"):
        (root / name).chmod(0o644)
    return ipc


def prepare_outbox(root: Path, uid: int | None) -> Path:
    """``root/outbox``: where the box's :data:`OUTBOX` lands (files handed to the grader)."""
    outbox = root / "outbox"
    outbox.mkdir(mode=0o700)
    if uid is not None:
        os.chown(outbox, uid, uid)
    return outbox


# ---------------------------------------------------------------- bwrap's command line
def bwrap_argv(box: Sandbox, ipc: Path, uid: int | None, data_files: list[Path],
               outbox: Path | None = None, inputs: dict[str, Path] | None = None) -> list[str]:
    """bwrap's options for one kernel (or check); append the command to run inside.

    ``inputs``: host files bound read-only at ``INBOX/<name>`` (a check's files to judge).
    """
    argv = [box.bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--hostname", "grading"]
    if uid is None:
        argv.append("--unshare-user")  # not root: map our uid into a user namespace
    argv += _system_mounts() + _python_mounts(box)
    for name in ("passwd", "group"):
        argv += ["--ro-bind", str(ipc.parent / name), f"/etc/{name}"]
    argv += ["--perms", "1777", "--size", str(BOX_BYTES), "--tmpfs", "/tmp",
             *_dirs("/home"), "--perms", "1777", "--size", str(BOX_BYTES), "--tmpfs", HOME,
             "--perms", "1777", "--dir", DATA]
    for f in data_files:
        argv += ["--ro-bind", str(f), f"{DATA}/{f.name}"]
    if outbox is not None:
        argv += ["--bind", str(outbox), OUTBOX]
    if inputs:
        argv += ["--perms", "0755", "--dir", INBOX]
        for name, path in inputs.items():
            argv += ["--ro-bind", str(path), f"{INBOX}/{name}"]
    argv += [*_dirs(str(ipc)), "--bind", str(ipc), str(ipc), "--chdir", HOME, "--clearenv"]
    for key, value in kernel_env(uid).items():
        argv += ["--setenv", key, value]
    argv.append("--")
    if uid is not None:  # bwrap ran as root to mount; the kernel must not
        argv += [box.setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
                 "--bounding-set=-all", "--no-new-privs", "--"]
    return argv


def _dirs(path: str) -> list[str]:
    """Create every parent of ``path`` world-traversable (bwrap would make them 0700 as root)."""
    out: list[str] = []
    for parent in reversed(Path(path).parents):
        if str(parent) != "/":
            out += ["--perms", "0755", "--dir", str(parent)]
    return out


def _system_mounts() -> list[str]:
    argv = ["--ro-bind", "/usr", "/usr", "--proc", "/proc", "--dev", "/dev"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):  # merged /usr (Debian 12): keep the symlink
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    argv += ["--perms", "0755", "--dir", "/etc"]
    for name in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime"):
        argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    argv += ["--ro-bind-try", "/sys/devices/system/cpu", "/sys/devices/system/cpu"]  # torch's cpuinfo
    return argv


def _python_mounts(box: Sandbox) -> list[str]:
    """The interpreter where it lives, the environment at /opt/venv, prunekit at /opt/prunekit."""
    base, env = Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()
    argv: list[str] = []
    if not str(base).startswith("/usr/"):
        argv += [*_dirs(str(base)), "--ro-bind", str(base), str(base)]
    if env != base:  # a venv: only its bin/, lib/ and pyvenv.cfg, at a neutral path
        argv += [*_dirs(VENV), "--perms", "0755", "--dir", VENV]
        for name in ("bin", "lib", "pyvenv.cfg"):
            argv += ["--ro-bind", str(env / name), f"{VENV}/{name}"]
        if _excludes_system_site(env):  # the base's own packages are not part of this environment
            for site in sorted((base / "lib").glob("python3*/site-packages")):
                argv += ["--tmpfs", str(site)]
    argv += [*_dirs(SITE), "--ro-bind", box.site, SITE]
    return argv


def _excludes_system_site(env: Path) -> bool:
    try:
        text = (env / "pyvenv.cfg").read_text()
    except OSError:
        return False
    return "include-system-site-packages = true" not in text.replace("\t", " ").lower()


def kernel_python(box: Sandbox) -> str:
    """The interpreter path as the kernel sees it."""
    if not box.boxed:
        return sys.executable
    return f"{VENV}/bin/python" if Path(sys.prefix).resolve() != Path(sys.base_prefix).resolve() \
        else str(Path(sys.executable))


def kernel_env(uid: int | None) -> dict[str, str]:
    """The kernel's whole environment inside the box (nothing of the grader's)."""
    return {
        "PATH": f"{VENV}/bin:{Path(sys.base_prefix).resolve()}/bin:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": HOME,
        "USER": "student",
        "LOGNAME": "student",
        "TMPDIR": "/tmp",
        "IPYTHONDIR": f"{HOME}/.ipython",
        "MPLCONFIGDIR": f"{HOME}/.mpl",
        "JUPYTER_PLATFORM_DIRS": "1",
        "PYTHONPATH": SITE,
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",  # everything under /opt is read-only anyway
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "MALLOC_ARENA_MAX": "2",  # fewer malloc arenas: less reserved address space per thread
        "OMP_NUM_THREADS": "1",  # one thread per kernel: parallel grading, reproducible sums
        "MKL_NUM_THREADS": "1",
        "PRUNEKIT_DATA": DATA,
        "PRUNEKIT_OUTBOX": OUTBOX,
        "PRUNEKIT_PROGRESS": "0",
        "PRUNEKIT_GRADING": "1",
    }


def unboxed_workdir(root: Path, data_files: list[Path], outbox: Path) -> tuple[Path, dict[str, str]]:
    """``--sandbox none``: a fresh folder as the kernel's home, its environment, the same names.

    No isolation: the kernel runs as the grader's user and sees everything that user sees.
    """
    work = root / "work"
    for sub in ("tmp", "data", ".ipython", ".mpl"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    for f in data_files:
        shutil.copy2(f, work / "data" / f.name)
    env = kernel_env(None)
    env.pop("PYTHONDONTWRITEBYTECODE")
    env.update({
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": str(work), "TMPDIR": str(work / "tmp"), "IPYTHONDIR": str(work / ".ipython"),
        "MPLCONFIGDIR": str(work / ".mpl"), "PRUNEKIT_DATA": str(work / "data"), "PRUNEKIT_OUTBOX": str(outbox),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),  # this prunekit, wherever it is
        RUN_TOKEN: os.urandom(16).hex(),  # marks every process of this run, for the final sweep
    })
    return work, env


def _outer_env() -> dict[str, str]:
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


# ---------------------------------------------------------------- resource limits, then exec
def limits_argv(memory_mb: int | None, cpu_seconds: int | None, own_uid: bool) -> list[str]:
    """``python -I sandbox.py --memory-mb N ... --``: sets hard limits, then execs the rest."""
    argv = [sys.executable, "-I", str(Path(__file__).resolve())]
    if memory_mb:
        argv += ["--memory-mb", str(int(memory_mb))]
    if cpu_seconds:
        argv += ["--cpu-seconds", str(int(cpu_seconds))]
    if own_uid:
        argv.append("--max-processes")
    return argv + ["--"]


def _set_limits(memory_mb: int | None, cpu_seconds: int | None, max_processes: bool) -> None:
    limits = [(resource.RLIMIT_CORE, 0), (resource.RLIMIT_FSIZE, MAX_FILE_BYTES)]
    if cpu_seconds:  # per process: also ends a stray CPU burner
        limits.append((resource.RLIMIT_CPU, int(cpu_seconds)))
    if max_processes and hasattr(resource, "RLIMIT_NPROC"):  # counted per uid: only for a leased uid
        limits.append((resource.RLIMIT_NPROC, MAX_PROCESSES))
    if memory_mb:
        limits.append((resource.RLIMIT_AS, int(memory_mb) << 20))
    for which, value in limits:
        try:
            resource.setrlimit(which, (value, value))  # soft = hard: the kernel cannot raise it
        except (ValueError, OSError) as err:
            print(f"prunekit sandbox: could not set limit {which}: {err}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="prunekit sandbox limits")
    parser.add_argument("--memory-mb", type=int, default=None)
    parser.add_argument("--cpu-seconds", type=int, default=None)
    parser.add_argument("--max-processes", action="store_true")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise SystemExit("prunekit sandbox: no command to run")
    _set_limits(args.memory_mb, args.cpu_seconds, args.max_processes)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
