"""A one-task exercise whose test costs about a CPU-second: the neighbour in the isolation tests.

``ex92_busy`` asks for ``work(n)``, a pure-Python loop; its test cell calls ``work`` on a size
that takes about one second of one core here. Graded with a cell limit of a few seconds, it
passes whenever its kernel gets a fair share of a core, and fails when a neighbouring kernel
starves it -- which is what the tests measure.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_notebook

from tiny import _cell

WORK_SIZE = 30_000_000  # about 1.8 s of one core on the test machine

SOLUTION = "def work(n):\n    total = 0\n    for i in range(n):\n        total += i * i % 7\n    return total"


def busy_solution() -> nbformat.NotebookNode:
    nb = new_notebook(metadata={"prunekit": {"exercise": "ex92_busy"}})
    nb.cells = [
        _cell("from prunekit.grade import record", "setup", "locked"),
        _cell(SOLUTION.replace("    total = 0", "    ### BEGIN SOLUTION\n    total = 0") + "\n    ### END SOLUTION",
              "busy-work", "solution"),
        _cell(f"record('work', work({WORK_SIZE}))", "test-work", "test", 1.0),
    ]
    return nb


def write_busy(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(busy_solution(), folder / "ex92_busy.ipynb")
    return folder


def cpu_hog(loops: int = 16, seconds: float = 40.0, delay: float = 6.0, stay: float = 8.0) -> str:
    """A solution cell that waits ``delay`` seconds (the neighbours' kernels are up by then), starts
    ``loops`` busy processes in new sessions (``setsid``), then stays ``stay`` seconds; each loop ends
    by itself after ``seconds`` if nothing kills it first."""
    loop = f"import time\\nend = time.time() + {seconds}\\nwhile time.time() < end:\\n    pass"
    return (f"import subprocess, sys, time\ntime.sleep({delay})\nfor _ in range({loops}):\n"
            f"    subprocess.Popen([sys.executable, '-c', '{loop}'], start_new_session=True)\n"
            f"time.sleep({stay})\n" + SOLUTION)


def disk_filler(delay: float = 6.0, stay: float = 8.0) -> str:
    """A solution cell that waits ``delay`` seconds, fills every folder it can write outside its own
    tmpfs -- the kernel's ipc folder and the outbox -- with 1 MiB files until the file system refuses,
    then stays ``stay`` seconds; its ``work`` sleeps, so that the test cell keeps the kernel alive too."""
    return f'''import os, time
from ipykernel.connect import get_connection_file
time.sleep({delay})
written = 0
for folder in (os.path.dirname(get_connection_file()), os.environ.get("PRUNEKIT_OUTBOX", "")):
    for i in range(100_000):
        if not folder:
            break
        try:
            with open(os.path.join(folder, f"fill{{i}}"), "wb") as f:
                f.write(b"0" * (1 << 20))
            written += 1
        except OSError:
            break
print("MiB written:", written)
time.sleep({stay})


def work(n):
    time.sleep({stay})
    return 0
'''
