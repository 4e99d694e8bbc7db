"""Generate the student notebooks from the instructor's: ``python -m prunekit.grade.generate solutions exercises``.

``solutions/*.ipynb`` are written by hand and are the single source of truth; each
``exercises/<same name>.ipynb`` is derived from one of them:

* solution blocks become ``# YOUR CODE HERE`` + ``raise NotImplementedError()`` (same indent);
  a solution cell with no markers is replaced as a whole;
* hidden tests disappear from test cells (the grader still runs them: it takes every test from
  the solution notebook, never from the submission);
* outputs, execution counts and run timestamps are cleared;
* nbval's markers (``# NBVAL_CHECK_OUTPUT`` ...) leave the student's cells: they are for the
  instructor's test run, not for the student;
* solution and test cells are tagged ``raises-exception``: an unfinished task raises, and
  "Run All" (JupyterLab, classic Notebook, nbclient) then goes on to the later cells, so every
  visible test a student has already earned still runs.

The output is a pure function of the input: running the generator twice gives byte-identical
files, so ``--check`` (and a unit test) can tell when ``exercises/`` is out of date.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import re
import sys
from pathlib import Path

import nbformat

from . import cells

NBVAL_MARKER = re.compile(r"^[ \t]*# *NBVAL_[A-Z_]+[ \t]*\n?", re.MULTILINE)
KEEP_RUNNING_TAG = "raises-exception"

VOLATILE_CELL_METADATA = ("execution", "collapsed", "scrolled", "ExecuteTime")


def make_exercise(solution: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The student version of one solution notebook (the input is not modified)."""
    nb = copy.deepcopy(solution)
    for index, cell in enumerate(nb.cells):
        where = f"cell {index} ({cells.grade_id(cell) or cell.cell_type})"
        try:
            _rewrite(cell)
        except cells.MarkerError as err:
            raise cells.MarkerError(f"{where}: {err}") from None
        if "id" in cell or nb.nbformat_minor >= 5:
            cell["id"] = cell.get("id") or _stable_id(cell, index)
        for key in VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        else:
            cell.pop("outputs", None)
            cell.pop("execution_count", None)
    nbformat.validate(nb)
    return nb


def _rewrite(cell: nbformat.NotebookNode) -> None:
    kind = cells.kind(cell)
    if cell.cell_type == "code":
        cell.source = NBVAL_MARKER.sub("", cell.source)
        if kind in ("solution", "test"):
            tags = cell.metadata.setdefault("tags", [])
            if KEEP_RUNNING_TAG not in tags:
                tags.append(KEEP_RUNNING_TAG)
    if kind == "solution":
        cell.source = cells.strip_solution(cell.source, markdown=cell.cell_type == "markdown")
        return
    if kind == "test":
        cell.source = cells.strip_hidden_tests(cell.source)
    if cells.has_marker(cell.source):
        raise cells.MarkerError(
            "solution / hidden-test markers outside a solution / test cell would leak to students; "
            "mark the cell in its nbgrader metadata or remove the markers"
        )


def _stable_id(cell: nbformat.NotebookNode, index: int) -> str:
    """A cell id that does not change between runs (nbformat would invent a random one)."""
    return cells.grade_id(cell) or hashlib.sha1(f"{index}:{cell.source}".encode()).hexdigest()[:8]


def render(nb: nbformat.NotebookNode) -> str:
    """Serialise exactly as Jupyter does (sorted keys, indent 1), with a final newline."""
    return nbformat.writes(nb, version=4) + "\n"


def generate(src: Path, dst: Path, check: bool = False) -> list[Path]:
    """Write (or with ``check``, compare) one exercise per solution; return the changed paths."""
    solutions = sorted(Path(src).glob("*.ipynb"))
    if not solutions:
        raise FileNotFoundError(f"no *.ipynb in {src}; pass the folder that holds the solution notebooks")
    changed = []
    for path in solutions:
        text = render(make_exercise(nbformat.read(path, as_version=4)))
        target = Path(dst) / path.name
        if target.exists() and target.read_text(encoding="utf-8") == text:
            continue
        changed.append(target)
        if not check:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prunekit.grade.generate", description=__doc__.split("\n")[0])
    parser.add_argument("solutions", type=Path, help="folder with the instructor's notebooks")
    parser.add_argument("exercises", type=Path, help="folder to write the student notebooks to")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if any exercise is out of date")
    args = parser.parse_args(argv)
    try:
        changed = generate(args.solutions, args.exercises, check=args.check)
    except (OSError, ValueError, nbformat.ValidationError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    verb = "out of date" if args.check else "written"
    for path in changed:
        print(f"{verb}: {path}")
    if not changed:
        print(f"all exercises in {args.exercises} are up to date")
    return 1 if (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
