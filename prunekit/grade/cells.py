"""nbgrader cell metadata and the marker lines, read and rewritten.

Every cell of a solution notebook carries nbgrader's schema-3 metadata::

    {"nbgrader": {"solution": true,  "grade": false, "locked": false, "grade_id": "...", ...}}  student code
    {"nbgrader": {"solution": false, "grade": true,  "locked": true,  "points": 2.0, ...}}        a test (a task)
    {"nbgrader": {"solution": false, "grade": false, "locked": true,  ...}}                      read-only setup
    {"nbgrader": {"solution": true,  "grade": true,  "locked": false, "points": 2.0, ...}}        a written answer,
                                                                                                graded by hand

Inside a solution cell, the lines between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` are
the answer; inside a test cell, the lines between ``### BEGIN HIDDEN TESTS`` and
``### END HIDDEN TESTS`` are tests the student never sees.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
MARKDOWN_STUB = "YOUR ANSWER HERE"

CellKind = Literal["solution", "test", "locked", "other"]


def nbgrader(cell: Any) -> dict:
    """The cell's nbgrader metadata ({} when it has none, or when a malformed cell has none readable)."""
    meta = cell.get("metadata") if isinstance(cell, dict) else None
    meta = meta.get("nbgrader") if isinstance(meta, dict) else None
    return meta if isinstance(meta, dict) else {}


def kind(cell: Any) -> CellKind:
    """What the grader does with a cell: run the student's (solution), run ours (test, locked)."""
    meta = nbgrader(cell)
    if meta.get("solution"):
        return "solution"
    if meta.get("grade"):
        return "test"
    if meta.get("locked"):
        return "locked"
    return "other"


def is_manual(cell: Any) -> bool:
    """An answer graded by hand (nbgrader's "manually graded answer"): both solution and grade.

    Its :func:`kind` is "solution" (the student writes it); it is never auto-scored.
    """
    meta = nbgrader(cell)
    return bool(meta.get("solution")) and bool(meta.get("grade"))


def grade_id(cell: Any) -> str | None:
    gid = nbgrader(cell).get("grade_id")
    return gid if isinstance(gid, str) and gid else None


def points(cell: Any) -> float:
    """The task's points (the instructor's notebook: a malformed value is a ValueError there)."""
    return float(nbgrader(cell).get("points", 0.0) or 0.0)


def replace_blocks(source: str, begin: str, end: str,
                   replacement: Callable[[str], list[str]]) -> str:
    """Replace every ``begin`` ... ``end`` block (marker lines included) by
    ``replacement(indent)``, the lines to put there given the indentation of the ``begin``
    line. Markers must pair up; a :class:`MarkerError` names the line that does not."""
    name = begin.removeprefix("### BEGIN ")
    out: list[str] = []
    inside = False
    for number, line in enumerate(source.split("\n"), start=1):
        stripped = line.strip()
        if stripped == begin:
            _expect(not inside, number, f"a second BEGIN {name} before END {name}")
            inside = True
            out += replacement(line[: len(line) - len(line.lstrip())])
        elif stripped == end:
            _expect(inside, number, f"END {name} without BEGIN {name}")
            inside = False
        elif not inside:
            out.append(line)
    _expect(not inside, None, f"BEGIN {name} is never closed by END {name}")
    return "\n".join(out)


def strip_solution(source: str, markdown: bool = False) -> str:
    """Replace each BEGIN/END SOLUTION block by the stub, at the block's indentation.

    A solution cell without markers is replaced as a whole (nbgrader's rule).
    """
    if BEGIN_SOLUTION not in source:
        return MARKDOWN_STUB if markdown else "\n".join(STUB)
    stub = [MARKDOWN_STUB] if markdown else STUB
    return replace_blocks(source, BEGIN_SOLUTION, END_SOLUTION,
                          lambda indent: [indent + line for line in stub])


def strip_hidden_tests(source: str) -> str:
    """Remove every BEGIN/END HIDDEN TESTS block, markers included."""
    return replace_blocks(source, BEGIN_HIDDEN, END_HIDDEN, lambda indent: []).rstrip("\n")


def hidden_line_numbers(source: str) -> set[int]:
    """1-based numbers of the lines a student never sees (markers and hidden tests)."""
    hidden, inside = set(), False
    for number, line in enumerate(source.split("\n"), start=1):
        stripped = line.strip()
        if stripped == BEGIN_HIDDEN:
            inside = True
        if inside:
            hidden.add(number)
        if stripped == END_HIDDEN:
            inside = False
    return hidden


def has_marker(source: str) -> bool:
    return bool(re.search(r"^\s*### (BEGIN|END) (SOLUTION|HIDDEN TESTS)\s*$", source, re.M))


class MarkerError(ValueError):
    """A solution notebook whose markers do not pair up; the message names the line."""


def _expect(condition: bool, line: int | None, problem: str) -> None:
    if not condition:
        where = f"line {line}: " if line else ""
        raise MarkerError(f"{where}{problem}; fix the markers in the solution notebook")
