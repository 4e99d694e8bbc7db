"""The instructor's exercises: where the solution notebooks are, and which one a submission is.

Solution notebooks are the instructor's and trusted; a submission is not, so :func:`identify`
reads only what it needs from it (its metadata and the grade_ids of its solution cells) and
tolerates anything else it finds there.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import cells
from .checks import Check, check_of
from .limits import SubmissionError


@dataclass
class Exercise:
    """One solution notebook, read once into memory (a submission cannot change it later)."""

    name: str
    path: Path
    notebook: nbformat.NotebookNode
    digest: str  # sha256 of the file's bytes
    tests: list[tuple[str, float]] = field(default_factory=list)  # (grade_id, points), in order
    manual: list[tuple[str, float]] = field(default_factory=list)  # written answers graded by hand
    stubs: dict[str, str] = field(default_factory=dict)  # solution grade_id -> the released, unanswered text
    checks: dict[str, Check] = field(default_factory=dict)  # test grade_id -> its check outside the kernel
    solution_ids: list[str] = field(default_factory=list)
    grade_ids: set[str] = field(default_factory=set)  # every cell's, to tell added cells apart
    cell_ids: set[str] = field(default_factory=set)
    cell_sources: set[str] = field(default_factory=set)

    @property
    def max_score(self) -> float:
        """Points the grader awards itself (the written answers' points are not included)."""
        return sum(p for _, p in self.tests)

    @property
    def manual_max_score(self) -> float:
        return sum(p for _, p in self.manual)


def default_solutions_dir() -> Path:
    """``solutions/`` next to the ``prunekit`` package (works for an editable install)."""
    return Path(__file__).resolve().parents[2] / "solutions"


def default_cache_dir(solutions_dir: Path) -> Path:
    """``<solutions>/../.cache/prunekit-grade``: the grader's own files (expected values, the
    kernels' copy of prunekit), beside the solutions and never bound into a sandbox."""
    return Path(solutions_dir).resolve().parent / ".cache" / "prunekit-grade"


def load_exercise(path: Path) -> Exercise:
    data = Path(path).read_bytes()
    nb = nbformat.reads(data.decode("utf-8"), as_version=4)
    name = nb.metadata.get("prunekit", {}).get("exercise") or Path(path).stem
    exercise = Exercise(name, Path(path), nb, hashlib.sha256(data).hexdigest())
    for cell in nb.cells:
        kind, gid = cells.kind(cell), cells.grade_id(cell)
        if gid:
            exercise.grade_ids.add(gid)
        if cell.get("id"):
            exercise.cell_ids.add(cell["id"])
        exercise.cell_sources.add(cell.get("source", "").strip())
        if kind in ("solution", "test") and gid is None:
            raise ValueError(f"{path}: a {kind} cell has no nbgrader grade_id")
        if kind == "test":
            exercise.tests.append((gid, cells.points(cell)))
            try:
                check = check_of(cell)
            except ValueError as err:
                raise ValueError(f"{path}: test cell {gid!r}: {err}") from None
            if check is not None:
                exercise.checks[gid] = check
        elif kind == "solution":
            exercise.solution_ids.append(gid)
            exercise.stubs[gid] = cells.strip_solution(cell.source, markdown=cell.cell_type == "markdown")
            if cells.is_manual(cell):
                exercise.manual.append((gid, cells.points(cell)))
    ids = [g for g, _ in exercise.tests] + exercise.solution_ids
    duplicates = sorted({g for g in ids if ids.count(g) > 1})
    if duplicates:
        raise ValueError(f"{path}: grade_ids used twice: {duplicates}; make every grade_id unique")
    if not exercise.tests:
        raise ValueError(f"{path}: no test cells (nbgrader grade: true); nothing to grade")
    return exercise


def load_catalog(solutions_dir: Path) -> dict[str, Exercise]:
    """Every exercise in ``solutions_dir``, by name. Raises if the folder is missing or empty."""
    folder = Path(solutions_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"solutions folder {folder} not found; pass --solutions PATH")
    catalog = {}
    for path in sorted(folder.glob("*.ipynb")):
        exercise = load_exercise(path)
        if exercise.name in catalog:
            raise ValueError(f"{path}: exercise name {exercise.name!r} is used by two notebooks")
        catalog[exercise.name] = exercise
    if not catalog:
        raise FileNotFoundError(f"no solution notebooks (*.ipynb) in {folder}")
    return catalog


def identify(submission: nbformat.NotebookNode, catalog: dict[str, Exercise],
             expected: str | None = None) -> Exercise:
    """Which exercise a submission is: its metadata, else the grade_ids of its solution cells.

    With ``expected``, a notebook of another exercise is rejected (never graded against the
    wrong tests, never credited).
    """
    if expected is not None and expected not in catalog:
        raise KeyError(f"unknown exercise {expected!r}; known: {sorted(catalog)}")
    meta = submission.get("metadata", {})
    meta = meta.get("prunekit") if isinstance(meta, dict) else None
    claimed = meta.get("exercise") if isinstance(meta, dict) else None
    found = claimed if isinstance(claimed, str) and claimed in catalog else _by_solution_ids(submission, catalog)
    if expected is not None and found is not None and found != expected:
        raise SubmissionError(
            f"this notebook is exercise {found!r}, not {expected!r}; submit the {expected} notebook")
    name = expected or found
    if name is None:
        raise SubmissionError(
            "cannot tell which exercise this notebook is (no prunekit exercise metadata and no "
            "known solution cells); start from the exercise notebook you were given"
        )
    return catalog[name]


def _by_solution_ids(submission: nbformat.NotebookNode, catalog: dict[str, Exercise]) -> str | None:
    ids = {cells.grade_id(c) for c in submission.cells if isinstance(c, dict) and cells.kind(c) == "solution"}
    overlap = {name: len(ids & set(ex.solution_ids)) for name, ex in catalog.items()}
    best = max(overlap.values(), default=0)
    winners = [name for name, n in overlap.items() if n == best]
    return winners[0] if best > 0 and len(winners) == 1 else None
