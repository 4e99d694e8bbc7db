"""Every limit, default and error of the grader, written once.

Imports nothing of the grader (nor torch), so every module -- in the grader, in the sandbox's
launcher, in a worker process -- can import it without an import cycle. The numbers are the
ones an instructor may want to look up; each comment says why it is that size.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a type only: the sandbox package imports this module, not the other way round
    from .sandbox import Sandbox

# ---------------------------------------------------------------- what an instructor sets per run
CELL_TIMEOUT = 60.0  # seconds per cell; exercises say so to students
TOTAL_TIMEOUT = 900.0  # seconds per notebook
MEMORY_MB = 4096  # per kernel, its children and its tmpfs files included where cgroups count them
CPUS = 1.0  # cores per kernel: each kernel computes on one thread, so one core is its fair share
REFERENCE_SLACK = 4.0  # the instructor's own run gets this many times the time limits (trusted code)
OUTPUT_WAIT = 30.0  # seconds a cell's outputs may trail its reply (a busy machine); a record lost costs a task

# ---------------------------------------------------------------- untrusted files, read by the grader
MAX_NOTEBOOK_BYTES = 16 << 20  # a submitted .ipynb; far above a notebook with a few plots
MAX_JSON_DEPTH = 64  # nesting of a submitted notebook's JSON; Jupyter writes about 8
MAX_CELLS = 2000  # cells in a submitted notebook
MAX_HANDIN_BYTES = 64 << 20  # per handed-in file (a pruned model is about 1 MB)
MAX_DATA_BYTES = 64 << 20  # course data files larger than this are not offered to kernels

# ---------------------------------------------------------------- what a kernel may send or write
MAX_OUTPUT_BYTES = 16 << 20  # per cell; far above what a test cell prints or records
MAX_MESSAGE_BYTES = 8 << 20  # per kernel message
MAX_MESSAGE_CHARS = 300  # of one error message in the feedback
MAX_ANSWER_CHARS = 20_000  # of a written answer kept in the result
RUN_FOLDER_BYTES = 256 << 20  # the run's own folder (ipc sockets, outbox, kernel log): one tmpfs each
RUN_FOLDER_FILES = 4096  # inodes in that folder
BOX_BYTES = 1 << 30  # each tmpfs inside the box (home, /tmp); a full disk there is the submission's problem
SHM_BYTES = 512 << 20  # the box's private /dev/shm (DataLoader workers, multiprocessing)
MAX_FILE_BYTES = 1 << 30  # RLIMIT_FSIZE: any one file a kernel writes
MAX_PROCESSES = 512  # pids per kernel (cgroup) and per leased uid (RLIMIT_NPROC)


@dataclass
class Limits:
    """Time, memory and CPU limits for one notebook run, and the sandbox to run it in.

    ``cpus``: the kernel's share of the machine (its process tree, however many processes it
    starts); ``memory_mb``: resident memory of that tree; ``rlimit``: also set RLIMIT_AS in the
    launcher (the watchdog and the cgroup count memory either way).
    """

    cell_timeout: float = CELL_TIMEOUT
    total_timeout: float = TOTAL_TIMEOUT
    memory_mb: int | None = MEMORY_MB
    sandbox: Sandbox | None = None  # None: resolve("auto") once per process
    rlimit: bool = True
    cpus: float = CPUS
    startup_timeout: float = 60.0
    recover_timeout: float = 10.0  # how long an interrupted kernel gets to answer again

    @property
    def cpu_seconds(self) -> int:
        """RLIMIT_CPU per process: a last resort far beyond any honest run (the quota does the sharing)."""
        return int(4 * self.total_timeout) + 60


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    """The time, memory and CPU options every grading command line shares (defaults from here)."""
    parser.add_argument("--cell-timeout", type=float, default=CELL_TIMEOUT,
                        help=f"seconds per cell (default {CELL_TIMEOUT:g})")
    parser.add_argument("--total-timeout", type=float, default=TOTAL_TIMEOUT,
                        help=f"seconds per notebook (default {TOTAL_TIMEOUT:g})")
    parser.add_argument("--memory-mb", type=int, default=MEMORY_MB,
                        help=f"memory limit per kernel in MiB (default {MEMORY_MB})")
    parser.add_argument("--cpus", type=float, default=CPUS,
                        help=f"CPU cores per kernel, its child processes included (default {CPUS:g})")


def limits_from(args: argparse.Namespace) -> Limits:
    return Limits(cell_timeout=args.cell_timeout, total_timeout=args.total_timeout, memory_mb=args.memory_mb,
                  cpus=args.cpus)


class GraderError(RuntimeError):
    """The grader itself could not work (as opposed to a submission that fails)."""


class SubmissionError(ValueError):
    """A submission that cannot be graded; the message tells the student why."""


class SandboxUnavailable(RuntimeError):
    """The sandbox (or the isolation asked for) was required but cannot run here."""
