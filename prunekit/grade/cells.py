"""nbgrader cell metadata and the marker lines, read and rewritten.

Every cell of a solution notebook carries nbgrader's schema-3 metadata::

    {"nbgrader": {"solution": true,  "grade": false, "locked": false, "grade_id": "...", ...}}  student code
    {"nbgrader": {"solution": false, "grade": true,  "locked": true,  "points": 2.0, ...}}        a test (a task)
    {"nbgrader": {"solution": false, "grade": false, "locked": true,  ...}}                      read-only setup

Inside a solution cell, the lines between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` are
the answer; inside a test cell, the lines between ``### BEGIN HIDDEN TESTS`` and
``### END HIDDEN TESTS`` are tests the student never sees.
"""

from __future__ import annotations

import re
from typing import Any, Literal

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
MARKDOWN_STUB = "YOUR ANSWER HERE"

CellKind = Literal["solution", "test", "locked", "other"]


def nbgrader(cell: Any) -> dict:
    """The cell's nbgrader metadata ({} when it has none)."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
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


def grade_id(cell: Any) -> str | None:
    gid = nbgrader(cell).get("grade_id")
    return gid if isinstance(gid, str) and gid else None


def points(cell: Any) -> float:
    return float(nbgrader(cell).get("points", 0.0) or 0.0)


def strip_solution(source: str, markdown: bool = False) -> str:
    """Replace each BEGIN/END SOLUTION block by the stub, at the block's indentation.

    A solution cell without markers is replaced as a whole (nbgrader's rule).
    """
    if BEGIN_SOLUTION not in source:
        return MARKDOWN_STUB if markdown else "\n".join(STUB)
    out: list[str] = []
    inside = False
    for number, line in enumerate(source.split("\n"), start=1):
        stripped = line.strip()
        if stripped == BEGIN_SOLUTION:
            _expect(not inside, number, "a second BEGIN SOLUTION before END SOLUTION")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out += [indent + MARKDOWN_STUB] if markdown else [indent + s for s in STUB]
        elif stripped == END_SOLUTION:
            _expect(inside, number, "END SOLUTION without BEGIN SOLUTION")
            inside = False
        elif not inside:
            out.append(line)
    _expect(not inside, None, "BEGIN SOLUTION is never closed by END SOLUTION")
    return "\n".join(out)


def strip_hidden_tests(source: str) -> str:
    """Remove every BEGIN/END HIDDEN TESTS block, markers included."""
    out: list[str] = []
    inside = False
    for number, line in enumerate(source.split("\n"), start=1):
        stripped = line.strip()
        if stripped == BEGIN_HIDDEN:
            _expect(not inside, number, "a second BEGIN HIDDEN TESTS before END HIDDEN TESTS")
            inside = True
        elif stripped == END_HIDDEN:
            _expect(inside, number, "END HIDDEN TESTS without BEGIN HIDDEN TESTS")
            inside = False
        elif not inside:
            out.append(line)
    _expect(not inside, None, "BEGIN HIDDEN TESTS is never closed by END HIDDEN TESTS")
    return "\n".join(out).rstrip("\n")


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
