"""Assemble the notebook the grader runs: the instructor's notebook with the student's answers in it.

The rule that makes the grader hard to fool: **from the submission, only the source of the
solution cells is used** (matched by ``grade_id``). Setup cells and every test cell, visible
and hidden, come from the instructor's solution notebook, in the instructor's order. Deleting
or editing a test cell in the submission therefore changes nothing, and cells a student added
are not run (the feedback says so). A solution cell missing from the submission becomes
``raise NotImplementedError(...)``.

Jupyter's *copy cell* keeps a cell's metadata, ``grade_id`` included, so a submission may hold
two cells with the same ``grade_id``: typically the released stub and, below it, the copy the
student worked in. The grader takes the **last copy that differs from the released stub** and
tells the student it did (:func:`solution_sources`).

Before every test cell and at every hidden block, the random generators are reseeded
(:mod:`prunekit.grade.kernel.seeding`): the code that does so is written here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nbformat

from . import cells
from .catalog import Exercise
from .checks import Check
from .limits import MAX_ANSWER_CHARS
from .results import ManualResult
from .runner import RunOptions


@dataclass
class Step:
    """One cell of the notebook to run, and where its code came from."""

    kind: str  # solution | test | locked | skip (after the last test: not run)
    grade_id: str | None
    label: str  # how the feedback names the cell
    source: str = ""
    points: float = 0.0
    missing: bool = False  # a solution cell the submission does not have
    check: Check | None = None  # a test scored by a check outside the kernel


def assemble(exercise: Exercise, submission: nbformat.NotebookNode
             ) -> tuple[nbformat.NotebookNode, list[Step], list[str]]:
    """The notebook to run, one :class:`Step` per cell, and notes for the student."""
    theirs, notes = solution_sources(exercise, submission)
    nb = nbformat.v4.new_notebook()
    steps: list[Step] = []
    code = [c for c in exercise.notebook.cells if c.cell_type == "code"]
    last_test = max((i for i, c in enumerate(code) if cells.kind(c) == "test"), default=-1)
    for index, cell in enumerate(exercise.notebook.cells):
        kind, gid = cells.kind(cell), cells.grade_id(cell)
        label = gid or f"cell {index}"
        if cell.cell_type != "code":
            continue
        if len(steps) > last_test:  # after the last test: nothing left to grade, so not run
            steps.append(Step("skip", gid, label, cell.source))
        elif kind == "solution":
            missing = gid not in theirs
            source = _missing_stub(gid) if missing else theirs[gid]
            steps.append(Step("solution", gid, label, source, missing=missing))
        else:
            step_kind = "test" if kind == "test" else "locked"
            steps.append(Step(step_kind, gid, label, cell.source, points=cells.points(cell),
                              check=exercise.checks.get(gid) if step_kind == "test" else None))
        nb.cells.append(nbformat.v4.new_code_cell(_runnable(steps[-1])))
    return nb, steps, notes + _added_cells(exercise, submission, theirs)


def _runnable(step: Step) -> str:
    """What the kernel runs for a step: hidden-test markers become reseeds; skipped cells are empty."""
    if step.kind == "skip":
        return ""
    if step.kind == "test":
        return reseed_hidden_blocks(step.source, step.grade_id or step.label)
    return step.source


def run_options(steps: list[Step], outbox: Path | None = None) -> RunOptions:
    """Reseed before every test cell, keep test cells out of the kernel's input history, and take
    out of the box exactly the files the checks will measure."""
    tests = {i: step for i, step in enumerate(steps) if step.kind == "test"}
    files = tuple(sorted({step.check.file for step in steps if step.check is not None}))
    return RunOptions(preludes={i: reseed_code(step.grade_id or step.label) for i, step in tests.items()},
                      private=set(tests), outbox=outbox, collect=files)


def reseed_code(label: str) -> str:
    """One line of Python that reseeds the kernel's generators (no names left behind)."""
    return f"__import__('prunekit.grade.kernel.seeding', fromlist=['reseed']).reseed({label!r})"


def reseed_hidden_blocks(source: str, label: str) -> str:
    """``source`` with each hidden-test marker line turned into a reseed (same number of lines)."""
    lines = source.split("\n")
    block = 0
    for i, line in enumerate(lines):
        if line.strip() == cells.BEGIN_HIDDEN:
            indent = line[: len(line) - len(line.lstrip())]
            lines[i] = f"{indent}{reseed_code(f'{label}#hidden{block}')}  # {cells.BEGIN_HIDDEN}"
            block += 1
    return "\n".join(lines)


def _missing_stub(gid: str) -> str:
    return f"raise NotImplementedError('solution cell {gid!r} is missing from the submission')"


def solution_sources(exercise: Exercise, submission: nbformat.NotebookNode) -> tuple[dict[str, str], list[str]]:
    """``{grade_id: source}`` of the submission's solution cells, and notes on duplicated grade_ids.

    Of several cells with one grade_id (a copied cell), the last one that is not the released stub
    counts; when every copy is the stub, the last copy.
    """
    copies: dict[str, list[str]] = {}
    for cell in submission.cells:
        gid = cells.grade_id(cell)
        if cells.kind(cell) == "solution" and gid:
            copies.setdefault(gid, []).append(_text(cell.get("source", "")))
    theirs, notes = {}, []
    for gid, sources in copies.items():
        stub = exercise.stubs.get(gid, "").strip()
        changed = [i for i, s in enumerate(sources) if s.strip() not in ("", stub)]
        chosen = changed[-1] if changed else len(sources) - 1
        theirs[gid] = sources[chosen]
        if len(sources) > 1:
            notes.append(f"your notebook has {len(sources)} cells with grade_id {gid!r} (a copied cell?); the "
                         f"grader used copy {chosen + 1} of {len(sources)}, the last one you changed -- delete "
                         "the others")
    return theirs, notes


def _text(source) -> str:
    """A cell's source as one string (nbformat joins line lists; a malformed file may not)."""
    return "".join(source) if isinstance(source, list) else str(source)


def _added_cells(exercise: Exercise, submission: nbformat.NotebookNode, theirs: dict[str, str]) -> list[str]:
    added = [c for c in submission.cells if c.get("cell_type") == "code" and _text(c.get("source", "")).strip()
             and not _is_instructors(c, exercise)]
    notes = []
    if added:
        notes.append(f"{len(added)} code cell(s) you added were not run: only the solution cells "
                     "(marked YOUR CODE HERE) are graded, so keep helpers inside them")
    missing = [g for g in exercise.solution_ids if g not in theirs]
    if missing:
        notes.append(f"solution cell(s) missing from your notebook: {', '.join(missing)}")
    return notes


def _is_instructors(cell, exercise: Exercise) -> bool:
    """A cell of the exercise notebook itself (by grade_id, cell id or unchanged source)."""
    gid = cells.grade_id(cell)
    if gid is not None:
        return gid in exercise.grade_ids
    return cell.get("id") in exercise.cell_ids or _text(cell.get("source", "")).strip() in exercise.cell_sources


def manual_answers(exercise: Exercise, submission: nbformat.NotebookNode) -> list[ManualResult]:
    """The written answers, for a person to grade; one left as released scores 0 at once."""
    theirs, _ = solution_sources(exercise, submission)
    out = []
    for gid, points in exercise.manual:
        text = theirs.get(gid)
        if text is None:
            out.append(ManualResult(gid, points, False, "", "not answered: the answer cell is missing"))
        elif text.strip() in ("", exercise.stubs[gid].strip()):
            out.append(ManualResult(gid, points, False, "", "not answered (the cell is as released)"))
        else:
            out.append(ManualResult(gid, points, True, text[:MAX_ANSWER_CHARS]))
    return out

