"""What the grader watches from outside while a kernel runs.

The kernel's own limits (:mod:`.launcher`) are per process, and a submission may start many
processes. So the grader looks at the kernel's whole *process tree* every
:data:`INTERVAL` seconds (the tree as the host sees it: bwrap, the kernel, and everything the
kernel started, ``setsid`` daemons included, since the box's PID namespace keeps them under
bwrap):

* **memory** -- the tree's proportional set size (PSS): a page shared by four forked workers
  counts a quarter in each, so the tree counts it once. Resident set size would count it four
  times (four idle forks of a 230 MB kernel: 927 MB by RSS, 11 MB of it their own). Over the
  limit, the tree is killed and the run says why. Where the run has a control group
  (:mod:`.cgroups`), the kernel enforces the memory limit itself and the watchdog only explains
  a death (:meth:`Watchdog.explain`).
* **CPU share** (only without a control group) -- a token bucket: the tree may use ``cpus``
  cores on average, with a burst of :data:`BURST_SECONDS`; when it has used more, every process
  of the tree is stopped (SIGSTOP) until its average is back at its share, then continued.
  Sixteen busy loops then get one core between them, as a cgroup quota would give them.
* **the run's folder** (only when it is not a private tmpfs) -- its size and file count; a
  kernel that writes past :data:`~prunekit.grade.limits.RUN_FOLDER_BYTES` into its ipc folder
  or outbox is stopped before it fills the grader's disk (between two polls it can write more:
  the private tmpfs of :func:`.box.run_folder` has no such gap).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import psutil

from .. import limits as lim
from .cgroups import Group

INTERVAL = 0.2  # seconds between two looks at the tree
BURST_SECONDS = 1.0  # CPU-seconds a tree may use above its share before it is paused


def tree(pid: int | None) -> list[psutil.Process]:
    """The process and all its descendants (empty when it is gone)."""
    if not pid:
        return []
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_memory(pid: int | None) -> int:
    """Bytes the tree uses, each shared page counted once (the sum of PSS; RSS where PSS is unreadable)."""
    total = 0
    for proc in tree(pid):
        try:
            info = proc.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except psutil.AccessDenied:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        except psutil.Error:
            pass
    return total


def signal_tree(pid: int | None, sig: int) -> None:
    for proc in tree(pid):
        try:
            proc.send_signal(sig)
        except psutil.Error:
            pass


def kill_tree(pid: int | None) -> None:
    signal_tree(pid, signal.SIGKILL)


def kill_strays(token: str, marker: str) -> None:
    """Kill processes that left the kernel's tree (double fork) but still carry this run's token
    in the environment variable ``marker`` (runs without a sandbox have no PID namespace)."""
    for proc in psutil.process_iter(["environ"]):
        try:
            if (proc.info.get("environ") or {}).get(marker) == token:
                proc.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass


class CpuShare:
    """A token bucket over the tree's CPU time: ``cpus`` cores on average, paused when over."""

    def __init__(self, cpus: float, burst: float = BURST_SECONDS):
        self.cpus, self.burst, self.tokens = cpus, burst, burst
        self.seen: dict[int, float] = {}
        self.last = time.monotonic()
        self.paused = False

    def step(self, procs: list[psutil.Process]) -> None:
        now = time.monotonic()
        used, current = 0.0, {}
        for proc in procs:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            current[proc.pid] = times.user + times.system
            used += current[proc.pid] - self.seen.get(proc.pid, 0.0)  # a new process: all it used so far
        self.seen = current
        self.tokens = min(self.burst, self.tokens + self.cpus * (now - self.last) - used)
        self.last = now
        if (self.tokens < 0) != self.paused:
            self.paused = self.tokens < 0
            for proc in procs:
                try:
                    proc.send_signal(signal.SIGSTOP if self.paused else signal.SIGCONT)
                except psutil.Error:
                    pass


def folder_usage(folder: Path, max_files: int) -> tuple[int, int]:
    """``(bytes, files)`` under ``folder``, counting no further than ``max_files + 1`` entries."""
    total, files, stack = 0, 0, [folder]
    while stack and files <= max_files:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            files += 1
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            total += st.st_blocks * 512
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
    return total, files


class Watchdog:
    """Polls one kernel's tree (see the module docstring) until :meth:`watch` is cancelled."""

    def __init__(self, pid: int | None, memory_mb: int | None, group: Group | None = None,
                 cpus: float | None = None, folder: Path | None = None, interval: float = INTERVAL):
        self.pid, self.group, self.interval = pid, group, interval
        self.limit = (memory_mb or 0) << 20
        self.share = CpuShare(cpus) if cpus and group is None else None
        self.folder = folder
        self.tripped = ""  # why the watchdog killed the tree

    async def watch(self) -> None:
        while self.pid and not self.tripped:
            await asyncio.sleep(self.interval)
            procs = tree(self.pid)
            if self.share is not None:
                self.share.step(procs)
            self.tripped = self._memory() or self._folder()
            if self.tripped:
                self.stop()

    def _memory(self) -> str:
        if not self.limit or self.group is not None:  # a group's limit is enforced by the kernel
            return ""
        used = tree_memory(self.pid)
        return "" if used <= self.limit else \
            f"memory limit exceeded ({used >> 20} MiB used, limit {self.limit >> 20} MiB)"

    def _folder(self) -> str:
        if self.folder is None:
            return ""
        size, files = folder_usage(self.folder, lim.RUN_FOLDER_FILES)
        if size <= lim.RUN_FOLDER_BYTES and files <= lim.RUN_FOLDER_FILES:
            return ""
        return (f"disk limit exceeded: the kernel wrote more than {lim.RUN_FOLDER_BYTES >> 20} MiB or "
                f"{lim.RUN_FOLDER_FILES} files into its ipc folder and outbox")

    @property
    def memory(self) -> bool:
        return self.tripped.startswith("memory")

    def explain(self) -> str:
        """Why the kernel died, if a limit killed it ('' otherwise)."""
        if self.tripped:
            return self.tripped
        if self.group is not None and self.group.oom_killed():
            return f"memory limit exceeded (limit {self.limit >> 20} MiB, the kernel's processes together)"
        return ""

    def stop(self) -> None:
        """Kill the whole tree (and, with a group, everything in the group)."""
        if self.group is not None:
            self.group.kill()
        kill_tree(self.pid)
