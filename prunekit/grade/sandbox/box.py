"""The box a submission's kernel runs in: bubblewrap, an existing, audited sandbox.

Every kernel -- the instructor's reference run included -- is started inside `bubblewrap
<https://github.com/containers/bubblewrap>`_ (Debian package ``bubblewrap``, command ``bwrap``),
the unprivileged sandbox Flatpak is built on. The grader writes no isolation code of its own;
it only chooses bwrap's options (:func:`bwrap_argv`):

* **nothing of the host but the interpreter**: a read-only ``/usr``, the Python installation,
  the environment's ``site-packages`` (at ``/opt/venv``) and an *installed copy* of prunekit
  (:mod:`prunekit.grade.sandbox.install`, at ``/opt/prunekit``). No repository, no
  ``solutions/``, no ``.git``, no grader cache, no other submission: those paths do not exist;
* **fresh, size-limited tmpfs** as home, ``/tmp`` and a private, writable ``/dev/shm``
  (multiprocessing and DataLoader workers need it); the course data files are bound read-only;
* **its own PID, network, IPC and UTS namespaces**: no network at all (not even the host's
  loopback), no view of other processes, and when the box's first process ends the kernel
  kills every process left in the namespace -- a double-forked ``setsid`` daemon included;
* **its own unprivileged uid**: when the grader is root, bwrap sets up the mounts and
  ``setpriv`` (util-linux) drops to a uid leased for this run alone (:func:`lease_uid`), with
  no capabilities and ``no_new_privs``. When the grader is not root, bwrap maps the grader's
  uid into a user namespace instead (concurrent kernels then share a uid but see nothing of
  each other).

The kernel talks to the grader over Unix sockets (ZeroMQ ``ipc``) in one folder bound into
the box, as the box has no network; the files it hands in land in a second one (the outbox).
Both live in the run's own folder (:func:`run_folder`), which the grader mounts as a tmpfs of
its own, capped in bytes and files, when it can (root): a kernel that fills its folder fills
only that.

Resources are shared fairly by a control group per kernel (:mod:`.cgroups`: a CPU quota for
the whole process tree, memory counted once per page) where the machine allows it, else by a
watchdog that does the same from outside (:mod:`.watchdog`); :func:`resolve` says which, and
warns when it is the watchdog. Hard per-process limits are set by :mod:`.launcher`, which runs
before bwrap and executes it.

Without bwrap (:func:`resolve`): an error when the environment variable ``CI`` is true, a
warning elsewhere, and ``--sandbox none`` runs kernels as the grader's own user with only the
resource limits -- for trusted notebooks (your own solutions), never for students' work.

Only the standard library is imported here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from .. import limits as lim
from ..limits import SandboxUnavailable
from ..machine import kernel_selection
from . import cgroups, launcher

MODES = ("auto", "bwrap", "none")
ISOLATION = ("auto", "cgroup", "watchdog")
HOME = "/home/student"
SITE = "/opt/prunekit"  # the installed copy of prunekit, read-only
VENV = "/opt/venv"  # the environment's bin/ and lib/ (site-packages), read-only
DATA = f"{HOME}/data"  # PRUNEKIT_DATA inside the box
OUTBOX = f"{HOME}/outbox"  # files handed to the grader (prunekit.grade.hand_in)
INBOX = f"{HOME}/inbox"  # files a check run receives, read-only
UID_BASE = int(os.environ.get("PRUNEKIT_GRADE_UID_BASE", "2000000"))  # far from real and subuid ranges
UID_SLOTS = 256
RUN_TOKEN = "PRUNEKIT_GRADE_RUN"  # marks the processes of a run without a sandbox, for the final sweep


@dataclass(frozen=True)
class Sandbox:
    """How this grading session isolates kernels (resolved once, then passed to every worker).

    ``cgroups``: the hierarchy each kernel gets a control group in (None: the watchdog shares
    CPU and counts memory instead); ``private_folders``: each run's folder is a tmpfs of its
    own (needs root). ``--sandbox none`` has neither: trusted notebooks, rlimits only.
    """

    mode: str  # "bwrap" or "none"
    site: str = ""  # host folder that holds the installed copy (its prunekit/ is bound at SITE)
    bwrap: str = ""  # path of the bwrap executable
    setpriv: str = ""  # path of setpriv when the grader is root (drop to a leased uid)
    cgroups: cgroups.Hierarchy | None = None
    private_folders: bool = False
    watchdog: bool = False  # share CPU and count memory from outside (no cgroups here, or asked for)

    @property
    def boxed(self) -> bool:
        return self.mode == "bwrap"

    @property
    def isolation(self) -> str:
        """What keeps kernels apart in CPU, memory and disk, in words (printed by the CLI)."""
        if not self.boxed:
            return "none (trusted notebooks: rlimits only)"
        share = f"{self.cgroups.label} per kernel" if self.cgroups else "watchdog (no cgroups)"
        disk = "a tmpfs per run" if self.private_folders else "watched run folders"
        return f"bwrap; {share}; {disk}"


def _is_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def resolve(requested: str = "auto", state_dir: Path | None = None, ci: bool | None = None,
            isolation: str = "auto") -> Sandbox:
    """Pick the sandbox for this session, after a trial run that imports prunekit in the box.

    ``auto``: bwrap when it works; otherwise :class:`SandboxUnavailable` under ``CI=true`` and
    a warning (and no sandbox) elsewhere. ``bwrap``: bwrap or :class:`SandboxUnavailable`.
    ``none``: no sandbox, on purpose (trusted notebooks only).

    ``isolation`` (with bwrap): ``cgroup`` requires a control group per kernel; ``watchdog``
    shares CPU and counts memory from outside even where cgroups work; ``auto`` takes cgroups
    when :func:`cgroups.detect` finds them and otherwise warns and uses the watchdog.
    """
    if requested not in MODES:
        raise ValueError(f"unknown sandbox {requested!r}; choose one of {', '.join(MODES)}")
    if isolation not in ISOLATION:
        raise ValueError(f"unknown isolation {isolation!r}; choose one of {', '.join(ISOLATION)}")
    if requested == "none":
        return Sandbox("none")
    from .install import installed_copy  # imports nothing of torch

    box, why = _bwrap_box(installed_copy(state_dir or default_state_dir()))
    if box is not None:
        return _isolated(box, isolation)
    message = (f"the bubblewrap sandbox cannot run here ({why}); install it with "
               "`apt-get install bubblewrap` (or `make sandbox-deps`)")
    if requested == "bwrap" or (_is_ci() if ci is None else ci):
        raise SandboxUnavailable(message + ". Use --sandbox none only for trusted notebooks.")
    print(f"WARNING: {message}. Kernels run WITHOUT isolation, as your user: a submission can read "
          "the solutions, use the network and touch other runs. Grade untrusted work only with the "
          "sandbox.", file=sys.stderr)
    return Sandbox("none")


def resolve_limits(limits: lim.Limits, mode: str = "auto", state_dir: Path | None = None,
                   isolation: str = "auto") -> lim.Limits:
    """``limits`` with its sandbox resolved once, here, for every worker (see :func:`resolve`)."""
    if limits.sandbox is not None:
        return limits
    return replace(limits, sandbox=resolve(mode, state_dir, isolation=isolation))


def _isolated(box: Sandbox, isolation: str) -> Sandbox:
    """``box`` with its resource isolation: cgroups and private run folders where they work."""
    hierarchy, why = (None, "not asked for") if isolation == "watchdog" else cgroups.detect()
    if hierarchy is None and isolation == "cgroup":
        raise SandboxUnavailable(f"no control group per kernel can be made here ({why}); "
                                 "run the grader as root, or use --isolation watchdog")
    if hierarchy is None and isolation == "auto":
        print(f"WARNING: no control group per kernel ({why}). A watchdog shares the CPU and counts "
              "memory instead: it polls the kernel's processes every 0.2 s, so a burst between two "
              "polls goes unseen. Run the grader as root (or in a delegated cgroup) for a kernel-"
              "enforced quota.", file=sys.stderr)
    private, why_not = _can_mount_tmpfs()
    if not private:
        print(f"WARNING: each run's folder (ipc, outbox) cannot be a tmpfs of its own ({why_not}); "
              f"the watchdog stops a kernel whose folder grows past {lim.RUN_FOLDER_BYTES >> 20} MiB, "
              "but a fast writer can fill the grader's temporary folder in between.", file=sys.stderr)
    return Sandbox(box.mode, box.site, box.bwrap, box.setpriv, cgroups=hierarchy, private_folders=private,
                   watchdog=hierarchy is None)


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
    check = "import ipykernel, prunekit.grade.kernel.records as r; assert r.__file__.startswith('/opt/prunekit/')"
    with tempfile.TemporaryDirectory(prefix="prunekit-probe-") as tmp, lease_uid(box) as uid:
        ipc = prepare_ipc(Path(tmp), uid)
        argv = bwrap_argv(box, ipc, uid, data_files=[]) + [f"{VENV}/bin/python", "-c", check]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=outer_env())
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


@contextmanager
def run_folder(box: Sandbox, prefix: str = "prunekit-grade-") -> Iterator[Path]:
    """A fresh folder for one run (ipc, outbox, the kernel's log), removed afterwards.

    With ``box.private_folders`` it is a tmpfs of its own, at most
    :data:`~prunekit.grade.limits.RUN_FOLDER_BYTES` and :data:`~prunekit.grade.limits.RUN_FOLDER_FILES`
    files: a kernel that fills its ipc folder or outbox fills only its own run's.
    """
    root = Path(tempfile.mkdtemp(prefix=prefix))
    mounted = box.private_folders and _mount_tmpfs(root)
    try:
        yield root
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(root)], capture_output=True, env=outer_env())
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def control_group(box: Sandbox, cpus: float, memory_mb: int | None) -> Iterator[cgroups.Group | None]:
    """The run's control group (:mod:`.cgroups`), removed with everything in it afterwards; None
    where there are no cgroups (the watchdog shares the CPU) or for a trusted run without a box."""
    if box.cgroups is None or not box.boxed:
        yield None
        return
    try:
        group = cgroups.Group.create(box.cgroups, cgroups.group_name(), cpus,
                                     (memory_mb << 20) if memory_mb else None, lim.MAX_PROCESSES)
    except OSError as err:  # the hierarchy went away since resolve(): say so, fall back for this run
        print(f"WARNING: no control group for this run ({err}); it runs with rlimits only", file=sys.stderr)
        yield None
        return
    try:
        yield group
    finally:
        group.remove()


def _mount_tmpfs(folder: Path) -> bool:
    options = f"size={lim.RUN_FOLDER_BYTES},nr_inodes={lim.RUN_FOLDER_FILES},mode=0700,nosuid,nodev"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "prunekit-run", str(folder)],
                          capture_output=True, env=outer_env())
    return done.returncode == 0


def _can_mount_tmpfs() -> tuple[bool, str]:
    if not _is_root():
        return False, "mounting one needs root"
    if not shutil.which("mount", path=outer_env()["PATH"]):
        return False, "`mount` (util-linux) is missing"
    probe = Path(tempfile.mkdtemp(prefix="prunekit-mount-probe-"))
    try:
        if not _mount_tmpfs(probe):
            return False, "mount -t tmpfs failed"
        subprocess.run(["umount", "-l", str(probe)], capture_output=True, env=outer_env())
        return True, ""
    finally:
        shutil.rmtree(probe, ignore_errors=True)


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
    argv += ["--perms", "1777", "--size", str(lim.BOX_BYTES), "--tmpfs", "/tmp",
             "--perms", "1777", "--size", str(lim.SHM_BYTES), "--tmpfs", "/dev/shm",
             *_dirs("/home"), "--perms", "1777", "--size", str(lim.BOX_BYTES), "--tmpfs", HOME,
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
    """The kernel's whole environment inside the box: nothing of the grader's but the variables
    that choose torch's, oneDNN's and MKL's CPU kernels (:data:`~prunekit.grade.machine.KERNEL_SELECTION`),
    which the reference key also holds -- the instructor's run and the students' pick the same kernels."""
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
        **kernel_selection(),
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
        "PYTHONPATH": str(Path(__file__).resolve().parents[3]),  # this prunekit, wherever it is
        RUN_TOKEN: os.urandom(16).hex(),  # marks every process of this run, for the final sweep
    })
    return work, env


def outer_env() -> dict[str, str]:
    """The environment bwrap (and the launcher before it) starts with: nothing of the grader's."""
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def data_dir() -> Path:
    """The grader's course data folder (same rule as :func:`prunekit.data.data_dir`, no torch import)."""
    return Path(os.environ.get("PRUNEKIT_DATA", Path.home() / ".cache" / "prunekit"))


def data_files() -> list[Path]:
    """Cached data sets a kernel may read (bound read-only into the box, copied without one):
    regular files only, each below :data:`~prunekit.grade.limits.MAX_DATA_BYTES`."""
    folder = data_dir()
    if not folder.is_dir():
        return []
    return sorted(f for f in folder.iterdir()
                  if f.is_file() and not f.is_symlink() and f.stat().st_size < lim.MAX_DATA_BYTES)


def launch_argv(box: Sandbox, group: cgroups.Group | None, memory_mb: int | None, cpu_seconds: int | None,
                own_uid: bool) -> list[str]:
    """The launcher's command line (:mod:`.launcher`): join ``group``, set the hard limits."""
    procs = group.procs_files() if group is not None else []
    return launcher.argv(procs, memory_mb, cpu_seconds, lim.MAX_PROCESSES if own_uid else None, lim.MAX_FILE_BYTES)
