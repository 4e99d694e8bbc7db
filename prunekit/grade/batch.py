"""Grade many submissions in parallel; one broken submission never stops the others.

Order matters: first every reference needed is computed (or read from the cache), each in a
sandbox of its own; only then does any student's code run. Each submission is then graded in
a worker *process* (``concurrent.futures``) with its own sandboxed kernel, so a crash anywhere
in the pipeline costs one row of the gradebook, not the run.

Grading one file is a pure function from (submission, solutions, library) to the JSON of
:meth:`~prunekit.grade.autograde.GradeResult.as_dict`, so the same work also runs as one job
per submission under a cluster scheduler (``--task-index``, then :mod:`prunekit.grade.merge`).
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

from . import autograde, reference, sandbox
from .autograde import GradeResult, ManualResult, TaskResult
from .catalog import Exercise, SubmissionError, identify, read_submission
from .runner import GraderError, Limits


def resolve_limits(limits: Limits, mode: str = "auto", state_dir: Path | None = None) -> Limits:
    """``limits`` with its sandbox resolved once, here, for every worker (see :func:`sandbox.resolve`)."""
    if limits.sandbox is None:
        limits.sandbox = sandbox.resolve(mode, state_dir)
    return limits


def grade_paths(paths: list[Path], catalog: dict[str, Exercise], limits: Limits, jobs: int = 1,
                expected: str | None = None, cache_dir: Path | None = None
                ) -> tuple[list[tuple[str, GradeResult]], list[str]]:
    """Grade every path; return ``[(submission stem, result)]`` in input order and grader problems."""
    results: dict[int, GradeResult] = {}
    todo: dict[int, tuple[Path, Exercise]] = {}
    for i, path in enumerate(paths):
        try:
            todo[i] = (path, identify(read_submission(path), catalog, expected))
        except SubmissionError as err:
            results[i] = _failed(err, catalog.get(expected) if expected else None)
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
    """Grade a single file (runs in a worker process)."""
    try:
        submission = read_submission(path)
        return autograde.grade(exercise, submission, ref, limits)
    except SubmissionError as err:
        return _failed(err, exercise)


def _failed(err: Exception, exercise: Exercise | None) -> GradeResult:
    """Zero points with the reason, listing the exercise's tasks when it is known."""
    if exercise is None:
        return GradeResult("", 0.0, 0.0, [], error=str(err))
    tasks = [TaskResult(gid, 0.0, pts, False, f"not graded: {err}") for gid, pts in exercise.tests]
    manual = [ManualResult(gid, pts, False, "", f"not graded: {err}") for gid, pts in exercise.manual]
    return GradeResult(exercise.name, 0.0, exercise.max_score, tasks, error=str(err), manual=manual)


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
