"""Grade many submissions in parallel; one broken submission never stops the others.

Order matters: first every reference needed is computed (or read from the cache), each in a
sandbox of its own; only then does any student's code run. Each submission is then graded in
a worker *process* (``concurrent.futures``) with its own sandboxed kernel, so a crash anywhere
in the pipeline costs one row of the gradebook, not the run. The one step in this process that
touches a submission -- reading it to learn which exercise it is -- reads it defensively
(:mod:`.submission`) and turns *any* exception into that student's row.

Grading one file is a pure function from (submission, solutions, library) to the JSON of
:meth:`~prunekit.grade.results.GradeResult.as_dict`, so the same work also runs as one job
per submission under a cluster scheduler (``--task-index``, then :mod:`prunekit.grade.merge`).
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

from . import autograde, reference
from .catalog import Exercise, identify
from .limits import GraderError, Limits, SubmissionError
from .results import GradeResult
from .submission import read_submission


def grade_paths(paths: list[Path], catalog: dict[str, Exercise], limits: Limits, jobs: int = 1,
                expected: str | None = None, cache_dir: Path | None = None
                ) -> tuple[list[tuple[str, GradeResult]], list[str]]:
    """Grade every path; return ``[(submission stem, result)]`` in input order and grader problems."""
    results: dict[int, GradeResult] = {}
    todo: dict[int, tuple[Path, Exercise]] = {}
    for i, path in enumerate(paths):
        try:
            todo[i] = (path, identify(read_submission(path), catalog, expected))
        except Exception as err:  # noqa: BLE001 - whatever a submission makes go wrong, it is its own row
            results[i] = _failed(_reason(err), catalog.get(expected) if expected else None)
    problems: list[str] = []
    with _pool(jobs) as pool:
        needed = {ex.name: ex for _, ex in todo.values()}
        ref_jobs = {name: pool.submit(reference.load_or_compute, ex, limits, cache_dir)
                    for name, ex in needed.items()}
        refs: dict[str, dict] = {}
        for name, future in ref_jobs.items():
            try:
                refs[name] = future.result()
            except Exception as err:  # noqa: BLE001 - reported, then every submission of it is marked
                problems.append(f"{name}: {err}")
        grading: dict[int, Future] = {}
        for i, (path, ex) in todo.items():
            if ex.name not in refs:
                results[i] = _failed(GraderError(f"grader problem: no reference for {ex.name}"), ex)
            else:
                grading[i] = pool.submit(grade_one, path, ex, refs[ex.name], limits)
        for i, future in grading.items():
            try:
                results[i] = future.result()
            except Exception as err:  # noqa: BLE001 - one submission's failure stays its own
                results[i] = _failed(err, todo[i][1])
    return [(Path(p).stem, results[i]) for i, p in enumerate(paths)], problems


def grade_one(path: Path, exercise: Exercise, ref: dict, limits: Limits) -> GradeResult:
    """Grade a single file (runs in a worker process); any failure is this submission's row."""
    try:
        return autograde.grade(exercise, read_submission(path), ref, limits)
    except GraderError as err:
        return _failed(err, exercise)
    except Exception as err:  # noqa: BLE001 - the submission broke something: its row says so, no one else's
        return _failed(_reason(err), exercise)


def _reason(err: Exception) -> str:
    """What a student reads when their file broke the grader: the message of a SubmissionError
    (written for them), else only the exception's type (its text may quote the file)."""
    if isinstance(err, SubmissionError):
        return str(err)
    return f"the notebook could not be graded ({type(err).__name__}); submit the .ipynb file saved by Jupyter"


def _failed(err: object, exercise: Exercise | None) -> GradeResult:
    """Zero points with the reason, listing the exercise's tasks when it is known."""
    if exercise is None:
        return GradeResult.failed(err)
    return GradeResult.failed(err, exercise.tests, exercise.manual, exercise.name, exercise.max_score)


class _Inline:
    """A stand-in for a pool when ``jobs == 1``: same interface, runs in this process."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as err:  # noqa: BLE001
            future.set_exception(err)
        return future


def _pool(jobs: int):
    if jobs <= 1:
        return _Inline()
    # spawn, not fork: the parent holds zmq/asyncio threads that must not be copied mid-flight
    return ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
