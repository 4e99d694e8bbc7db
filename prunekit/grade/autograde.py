"""Grade one submission: assemble the notebook to run, run it, measure what it handed in, score it.

The three steps have a module each -- :mod:`.assemble` (the instructor's notebook with the
student's solution cells in it), :mod:`.runner` (a sandboxed kernel, cell by cell) and
:mod:`.score` (points and messages, in the grader's process) -- and this module strings them
together, with the checks in between: a test cell with a check (``metadata.prunekit.check``,
:mod:`.checks`) is scored by the check's verdict on the file the kernel handed in, measured in a
fresh box of its own, and whatever the kernel itself printed or asserted does not count.

Written answers (nbgrader's manually graded cells: ``solution`` and ``grade``) are not scored
here: the result lists them, with the student's text, as needing manual grading -- or as 0
when the released text was left unchanged.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nbformat

from .assemble import Step, assemble, manual_answers, run_options
from .catalog import Exercise
from .checks import Verdict, judge
from .limits import MEMORY_MB, Limits
from .results import GradeResult
from .runner import CellRun, default_sandbox, run_notebook
from .score import score


def grade(exercise: Exercise, submission: nbformat.NotebookNode, reference: dict[str, list[dict]],
          limits: Limits, outbox: Path | None = None) -> GradeResult:
    """Run ``submission`` against ``exercise`` and score every task against ``reference``.

    ``outbox``: a folder of the grader's that receives the files the kernel handed in
    (:func:`prunekit.grade.hand_in`), for checks that must run outside the kernel (default: a
    temporary folder when the exercise has checks).
    """
    nb, steps, notes = assemble(exercise, submission)
    runs, verdicts = _run_and_judge(nb, steps, limits, outbox)
    tasks = score(steps, runs, reference, verdicts)
    return GradeResult(exercise.name, sum(t.score for t in tasks), exercise.max_score, tasks, notes=notes,
                       manual=manual_answers(exercise, submission))


def execute(exercise: Exercise, submission: nbformat.NotebookNode, limits: Limits, outbox: Path | None = None
            ) -> tuple[list[Step], list[CellRun], dict[int, Verdict]]:
    """Run the assembled notebook, then every check on what it handed in.

    Returns the steps, their runs and ``{step index: verdict}`` for the checks that had a file.
    """
    nb, steps, _ = assemble(exercise, submission)
    return (steps, *_run_and_judge(nb, steps, limits, outbox))


def _run_and_judge(nb: nbformat.NotebookNode, steps: list[Step], limits: Limits, outbox: Path | None
                   ) -> tuple[list[CellRun], dict[int, Verdict]]:
    with _outbox(outbox, steps) as folder:
        runs = run_notebook(nb, limits, run_options(steps, folder))
        return runs, judge_checks(steps, folder, limits)


@contextmanager
def _outbox(outbox: Path | None, steps: list[Step]) -> Iterator[Path | None]:
    if outbox is not None or not any(step.check for step in steps):
        yield outbox
        return
    with tempfile.TemporaryDirectory(prefix="prunekit-handed-in-") as tmp:
        yield Path(tmp)


def judge_checks(steps: list[Step], outbox: Path | None, limits: Limits) -> dict[int, Verdict]:
    """The verdict of every check whose file was handed in, each measured in a fresh box."""
    verdicts: dict[int, Verdict] = {}
    if outbox is None:
        return verdicts
    box = limits.sandbox or default_sandbox()
    for index, step in enumerate(steps):
        if step.check is not None:
            verdict = judge(step.check, outbox, box, timeout=max(120.0, 2 * limits.cell_timeout),
                            memory_mb=limits.memory_mb or MEMORY_MB)
            if verdict is not None:
                verdicts[index] = verdict
    return verdicts
