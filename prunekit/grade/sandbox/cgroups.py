"""A control group per kernel: a CPU quota and memory counted for the whole process tree.

Why the kernel needs more than rlimits: a submission may start processes -- sixteen ``setsid``
busy loops, say. Resource limits are per process, so each loop gets its own; the scheduler is
fair per *thread*, so the loops get sixteen shares of the CPU and the neighbouring student's
kernel one. A Linux control group (cgroup) holds every process the kernel starts, whatever it
does (``setsid`` and double forks do not leave it, and the box hides ``/sys/fs/cgroup``), and
the kernel enforces the group's limits on all of them together:

* **CPU**: a quota of ``cpus`` cores per 100 ms period (``cpu.max`` in cgroup v2,
  ``cpu.cfs_quota_us`` in v1). A kernel computes on one thread, so one core is its fair share;
  its loops share that core among themselves, and the neighbour keeps its own.
* **memory**: a limit on the pages the group uses, each page counted once however many
  processes share it, tmpfs files written in the box included (``memory.max`` /
  ``memory.limit_in_bytes``). At the limit the kernel's OOM killer ends a process of the group;
  :meth:`Group.oom_killed` tells the grader why the kernel died.
* **processes**: at most :data:`~prunekit.grade.limits.MAX_PROCESSES` (``pids.max``).

Where it works (:func:`detect`): a cgroup v2 hierarchy whose root the grader may configure
(root), or cgroup v1 ``cpu`` and ``memory`` hierarchies it may write (root on a v1 or hybrid
system; the groups are made inside the grader's own group, so an outer limit still holds).
``systemd-run --user --scope -p CPUQuota=... -p MemoryMax=...`` is the way to get a delegated
group without root; it needs systemd as the init process and a user session. Elsewhere the
grader falls back, loudly, to a watchdog that does the same from outside
(:mod:`prunekit.grade.sandbox.watchdog`).

The kernel joins its group before anything of the submission runs: the launcher
(:mod:`prunekit.grade.sandbox.launcher`) writes its own pid into the group's ``cgroup.procs``
files and only then executes bwrap. Only the standard library is used here.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

PERIOD_US = 100_000  # the scheduler's accounting period for the quota
BASE_NAME = "prunekit-grade"
REQUIRED = ("cpu", "memory")
OPTIONAL = ("pids",)


@dataclass(frozen=True)
class Hierarchy:
    """Where this machine lets the grader make groups: one folder (v2) or one per controller (v1)."""

    version: int
    bases: dict[str, str] = field(default_factory=dict)  # controller -> folder holding our groups

    @property
    def label(self) -> str:
        return f"cgroup v{self.version}"


# ---------------------------------------------------------------- finding a usable hierarchy
def _mounts(mounts_file: str = "/proc/self/mounts") -> list[tuple[str, str, set[str]]]:
    """``(mount point, type, options)`` of every cgroup file system."""
    found = []
    try:
        lines = Path(mounts_file).read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split()
        if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
            found.append((parts[1], parts[2], set(parts[3].split(","))))
    return found


def _own_paths(cgroup_file: str = "/proc/self/cgroup") -> dict[str, str]:
    """This process's group per controller (v1), and under ``""`` its v2 group."""
    own: dict[str, str] = {}
    try:
        lines = Path(cgroup_file).read_text().splitlines()
    except OSError:
        return own
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            own[name.removeprefix("name=")] = path
    return own


def detect(mounts_file: str = "/proc/self/mounts", cgroup_file: str = "/proc/self/cgroup"
           ) -> tuple[Hierarchy | None, str]:
    """A hierarchy in which groups can be made and limited, or None and why not."""
    mounts, own = _mounts(mounts_file), _own_paths(cgroup_file)
    problems = []
    for candidate in (_v2(mounts), _v1(mounts, own)):
        if isinstance(candidate, str):
            problems.append(candidate)
            continue
        why = _probe(candidate)
        if not why:
            return candidate, ""
        problems.append(f"{candidate.label}: {why}")
    return None, "; ".join(problems)


def _v2(mounts) -> Hierarchy | str:
    roots = [point for point, kind, _ in mounts if kind == "cgroup2"]
    if not roots:
        return "no cgroup v2 file system is mounted"
    root = Path(roots[0])
    available = set(_read(root / "cgroup.controllers").split())
    missing = [c for c in REQUIRED if c not in available]
    if missing:
        return f"cgroup v2 at {root} has no {', '.join(missing)} controller (they are bound to cgroup v1)"
    return Hierarchy(2, {"": str(root / BASE_NAME)})


def _v1(mounts, own: dict[str, str]) -> Hierarchy | str:
    """Groups go straight into the grader's own group of each controller, not into a common parent:
    in v1 a parent is one scheduling entity with one task's weight (``cpu.shares``), so every kernel
    under it would share a single task's slice of a busy machine. Side by side, each weighs like a
    process of its own, and its quota caps it."""
    bases = {}
    for controller in REQUIRED + OPTIONAL:
        points = [point for point, kind, options in mounts if kind == "cgroup" and controller in options]
        if not points:
            if controller in REQUIRED:
                return f"no cgroup v1 {controller} hierarchy is mounted"
            continue
        bases[controller] = str(Path(points[0]) / own.get(controller, "/").lstrip("/"))
    return Hierarchy(1, bases)


def _probe(hierarchy: Hierarchy) -> str:
    """Make, limit and remove a trial group; '' when all of that worked."""
    try:
        _prepare(hierarchy)
        group = Group.create(hierarchy, f"{BASE_NAME}-probe-{uuid.uuid4().hex[:8]}", cpus=1.0, memory_bytes=64 << 20)
        group.remove()
    except OSError as err:
        return f"{type(err).__name__}: {err}"
    return ""


def _prepare(hierarchy: Hierarchy) -> None:
    """Create the base folders; in v2, let them hand cpu, memory and pids down to our groups."""
    for base in hierarchy.bases.values():
        Path(base).mkdir(exist_ok=True)
        _remove_stale(Path(base))
    if hierarchy.version == 2:
        base = Path(hierarchy.bases[""])
        enable = " ".join(f"+{c}" for c in REQUIRED + OPTIONAL
                          if c in (base / "cgroup.controllers").read_text().split() or c in REQUIRED)
        for folder in (base.parent, base):
            have = set((folder / "cgroup.subtree_control").read_text().split())
            if not set(REQUIRED) <= have:
                (folder / "cgroup.subtree_control").write_text(enable)


def _remove_stale(base: Path) -> None:
    """Empty groups left by a grader that was killed (a group with processes cannot be removed)."""
    for child in base.iterdir():
        if child.is_dir() and child.name.startswith((f"{BASE_NAME}-run-", f"{BASE_NAME}-probe-")):
            try:
                if time.time() - child.stat().st_mtime > 3600:
                    child.rmdir()
            except OSError:
                pass


# ---------------------------------------------------------------- one kernel's group
@dataclass(frozen=True)
class Group:
    """One kernel's control group (a folder per controller in v1, one folder in v2)."""

    hierarchy: Hierarchy
    folders: dict[str, str]

    @classmethod
    def create(cls, hierarchy: Hierarchy, name: str, cpus: float, memory_bytes: int | None,
               max_processes: int | None = None) -> Group:
        """Make the group and set its limits; the kernel joins it through :meth:`procs_files`."""
        folders = {c: str(Path(base) / name) for c, base in hierarchy.bases.items()}
        for folder in folders.values():
            Path(folder).mkdir()
        group = cls(hierarchy, folders)
        try:
            group._limit(cpus, memory_bytes, max_processes)
        except OSError:
            group.remove()
            raise
        return group

    def _limit(self, cpus: float, memory_bytes: int | None, max_processes: int | None) -> None:
        quota = max(1000, int(cpus * PERIOD_US))
        if self.hierarchy.version == 2:
            self._write("", "cpu.max", f"{quota} {PERIOD_US}")
            if memory_bytes:
                self._write("", "memory.max", str(memory_bytes))
                self._write("", "memory.swap.max", "0", optional=True)
            if max_processes:
                self._write("", "pids.max", str(max_processes), optional=True)
            return
        self._write("cpu", "cpu.cfs_period_us", str(PERIOD_US))
        self._write("cpu", "cpu.cfs_quota_us", str(quota))
        if memory_bytes:
            self._write("memory", "memory.limit_in_bytes", str(memory_bytes))
            self._write("memory", "memory.memsw.limit_in_bytes", str(memory_bytes), optional=True)
        if max_processes and "pids" in self.folders:
            self._write("pids", "pids.max", str(max_processes), optional=True)

    def _write(self, controller: str, name: str, value: str, optional: bool = False) -> None:
        path = Path(self.folders[controller]) / name
        if optional and not path.exists():
            return
        path.write_text(value)

    def _read(self, controller: str, name: str) -> str:
        return _read(Path(self.folders[controller]) / name) if controller in self.folders else ""

    def procs_files(self) -> list[str]:
        """The files a process writes its pid into to join the group (one per hierarchy folder)."""
        return [str(Path(folder) / "cgroup.procs") for folder in self.folders.values()]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for folder in self.folders.values():
            found.update(int(p) for p in _read(Path(folder) / "cgroup.procs").split())
        return found

    def memory_bytes(self) -> int:
        """Memory the group uses now (each page once; tmpfs files written in the box included)."""
        name = "memory.current" if self.hierarchy.version == 2 else "memory.usage_in_bytes"
        text = self._read("" if self.hierarchy.version == 2 else "memory", name).strip()
        return int(text) if text.isdigit() else 0

    def oom_killed(self) -> bool:
        """Did the memory limit end a process of the group?"""
        if self.hierarchy.version == 2:
            events = _counters(self._read("", "memory.events"))
            return events.get("oom_kill", 0) > 0 or events.get("oom", 0) > 0
        return _counters(self._read("memory", "memory.oom_control")).get("oom_kill", 0) > 0

    def kill(self, attempts: int = 50) -> None:
        """SIGKILL every process of the group, until none is left (new forks included)."""
        if self.hierarchy.version == 2 and (Path(self.folders[""]) / "cgroup.kill").exists():
            try:
                self._write("", "cgroup.kill", "1")
            except OSError:
                pass
        for _ in range(attempts):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.02)

    def remove(self) -> None:
        """Kill what is left and remove the group's folders."""
        self.kill()
        for folder in self.folders.values():
            for _ in range(50):
                try:
                    os.rmdir(folder)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)  # the last processes are still being reaped


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _counters(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def group_name() -> str:
    """A name no other run of any grader on this machine uses."""
    return f"{BASE_NAME}-run-{os.getpid()}-{uuid.uuid4().hex[:12]}"
