"""Execute lecture notebooks top to bottom and time them -- on the CPU or on a GPU.

``make test-gpu`` runs this with ``PRUNEKIT_DEVICE=cuda``: every lecture's configuration cell
reads that variable into ``DEVICE``, so the whole course runs on the GPU. A notebook passes
when every cell runs without an error -- which includes the ``assert`` cells that check each
claim of the lecture on the numbers of *this* run. The committed outputs are not compared
(nbval does that on the CPU, in ``make test``): a GPU rounds differently, so a trained model
may get one more or one fewer test image right.

Run from the repository root::

    python benchmarks/run_lectures.py                              # every lecture, this machine's default device
    PRUNEKIT_DEVICE=cuda python benchmarks/run_lectures.py         # on the GPU
    python benchmarks/run_lectures.py notebooks/08_deployment_and_speed.ipynb --budget 60

It prints one line per notebook (seconds of wall clock, from kernel start to the last cell)
and exits 1 if a notebook fails or, with ``--budget``, takes longer than that many seconds.
Executed copies go to a temporary folder; the committed notebooks are never modified.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]


def run_notebook(path: Path, timeout: int, workdir: Path) -> tuple[float, str]:
    """Execute one notebook in a fresh kernel (cwd: its own folder, as in JupyterLab).
    Returns (seconds, "" or the error)."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    try:
        client.execute()
        error = ""
    except CellExecutionError as e:
        error = str(e).strip().splitlines()[-1][:300]
    except Exception as e:  # noqa: BLE001 -- a dead kernel, a timeout: report and go on
        error = f"{type(e).__name__}: {e}"[:300]
    seconds = time.perf_counter() - start
    nbformat.write(nb, workdir / path.name)
    return seconds, error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks or folders (default: notebooks/)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    parser.add_argument("--budget", type=float, default=None,
                        help="fail a notebook that takes longer than this many seconds")
    args = parser.parse_args(argv)
    paths = []
    for p in args.notebooks or [ROOT / "notebooks"]:
        paths += sorted(p.glob("*.ipynb")) if p.is_dir() else [p]
    os.environ.setdefault("PRUNEKIT_PROGRESS", "0")       # no progress bars on stderr
    device = os.environ.get("PRUNEKIT_DEVICE", "(the notebooks' default)")
    print(f"device: {device}; {len(paths)} notebook(s)")
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            seconds, error = run_notebook(path.resolve(), args.timeout, Path(tmp))
            over = args.budget is not None and seconds > args.budget
            status = "FAILED" if error else "OVER BUDGET" if over else "ok"
            print(f"{path.name:<45}{seconds:>8.1f} s  {status}{'  ' + error if error else ''}",
                  flush=True)
            failed += bool(error or over)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
