"""A one-task exercise whose test costs about a CPU-second: the neighbour in the isolation tests.

``ex92_busy`` asks for ``work(n)``, a pure-Python loop; each of its two test cells calls
``work`` on a size that takes about 3.6 seconds of one core here. Graded with a cell limit of
20 s, it passes whenever its kernel gets a fair share of a core (even on a machine that is busy
with other work), and fails when a neighbouring kernel takes the cores -- which is what the
isolation tests measure. Its setup cell waits a few seconds, so that in a batch graded with
``-j 2`` both kernels are up before either computes: the attack (a solution cell of the same
exercise, below) then meets the neighbour's tests, not its start-up. Each attacker keeps its
kernel alive for half a minute after it strikes.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_notebook

from tiny import _cell

WORK_SIZE = 60_000_000  # about 3.6 s of one core on the test machine
SETUP_SECONDS = 8  # the setup cell waits: a batch's kernels start together, the attack meets the neighbour's tests

SOLUTION = "def work(n):\n    total = 0\n    for i in range(n):\n        total += i * i % 7\n    return total"


def busy_solution() -> nbformat.NotebookNode:
    nb = new_notebook(metadata={"prunekit": {"exercise": "ex92_busy"}})
    nb.cells = [
        _cell(f"import time\ntime.sleep({SETUP_SECONDS})  # every kernel of the batch is up before any computes\n"
              "from prunekit.grade import record", "setup", "locked"),
        _cell(SOLUTION.replace("    total = 0", "    ### BEGIN SOLUTION\n    total = 0") + "\n    ### END SOLUTION",
              "busy-work", "solution"),
        _cell(f"record('work', work({WORK_SIZE}))", "test-work", "test", 1.0),
        _cell(f"record('work_more', work({WORK_SIZE + 1}))", "test-work-more", "test", 1.0),
    ]
    return nb


def write_busy(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(busy_solution(), folder / "ex92_busy.ipynb")
    return folder


STALL = ("\n\n_calls = []\n\n\ndef work(n):\n    _calls.append(n)\n"
         "    if len(_calls) == 1:  # the first test cell waits on this until its time limit\n"
         "        time.sleep(3600)\n    return 0\n")


def cpu_hog(loops: int = 16, seconds: float = 60.0, stay: float = 18.0) -> str:
    """A solution cell that starts ``loops`` busy processes in new sessions (``setsid``, and without
    the kernel's environment, so that nothing marks them as the run's), then keeps its kernel alive:
    ``stay`` seconds here, and its ``work`` stalls the first test cell until the time limit. Each loop
    ends by itself after ``seconds`` unless something kills it first -- the box's PID namespace or
    the run's cgroup does, when the kernel ends; without a box nothing does."""
    loop = f"import time\\nend = time.time() + {seconds}\\nwhile time.time() < end:\\n    pass"
    return (f"import subprocess, sys, time\nfor _ in range({loops}):\n"
            f"    subprocess.Popen([sys.executable, '-c', '{loop}'], start_new_session=True, env={{}})\n"
            f"time.sleep({stay})\n" + STALL)


def disk_filler(stay: float = 12.0) -> str:
    """A solution cell that fills every folder it can write outside its own tmpfs -- the kernel's
    ipc folder and the outbox -- with 1 MiB files until the file system refuses, and for ``stay``
    seconds takes whatever space is freed again; its ``work`` then stalls the first test cell, which
    keeps the kernel (and the files) alive."""
    return f'''import os, time
from ipykernel.connect import get_connection_file
folders = [f for f in (os.path.dirname(get_connection_file()), os.environ.get("PRUNEKIT_OUTBOX")) if f]
written, end = 0, time.time() + {stay}
while time.time() < end:
    try:
        with open(os.path.join(folders[written % len(folders)], f"fill{{written}}"), "wb") as f:
            f.write(b"0" * (1 << 20))
        written += 1
    except OSError:
        time.sleep(0.05)
print("MiB written:", written)
''' + STALL
