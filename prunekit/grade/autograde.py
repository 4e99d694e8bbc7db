"""Grade one submission: assemble the notebook to run, run it, compare, score each task.

The rule that makes the grader hard to fool: **from the submission, only the source of the
solution cells is used** (matched by ``grade_id``). Setup cells and every test cell, visible
and hidden, come from the instructor's solution notebook, in the instructor's order. Deleting
or editing a test cell in the submission therefore changes nothing, and cells a student added
are not run (the feedback says so). A solution cell missing from the submission becomes
``raise NotImplementedError(...)``.

A task (one test cell) passes when its cell ran without error **and** every value the
instructor's solution recorded in that cell (:func:`prunekit.grade.record`) was recorded by
the submission too, with a matching value. Asserts alone can be defeated from inside the
kernel (``torch.allclose = lambda *a, **k: True``); the recorded values are compared here, in
the grader process, against expected values the kernel never sees.

A test cell with a *check* (``metadata.prunekit.check``, :mod:`prunekit.grade.checks`) is
scored by the check's verdict instead: the file the kernel handed in is measured outside the
kernel, and whatever the kernel itself printed or asserted does not count.

Written answers (nbgrader's manually graded cells: ``solution`` and ``grade``) are not scored
here: the result lists them, with the student's text, as needing manual grading -- or as 0
when the released text was left unchanged.
"""

from __future__ import annotations

import re
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import cells, seeding
from .catalog import Exercise
from .checks import BudgetCheck, Verdict, judge
from .compare import values_match
from .runner import CellRun, Limits, RunOptions, default_sandbox, run_notebook

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_FRAME = re.compile(r"Cell In\[\d+\], line (\d+)")
_TMPFILE = re.compile(r"\(\d+\.py, line (\d+)\)")  # ipykernel's name for a cell: say just the line
MAX_MESSAGE = 300
MAX_ANSWER = 20_000  # characters of a written answer kept in the result
NEEDS_MANUAL = "needs manual grading"


@dataclass
class Step:
    """One cell of the notebook to run, and where its code came from."""

    kind: str  # solution | test | locked | skip (after the last test: not run)
    grade_id: str | None
    label: str  # how the feedback names the cell
    source: str = ""
    points: float = 0.0
    missing: bool = False  # a solution cell the submission does not have
    check: BudgetCheck | None = None  # a test scored by a check outside the kernel


@dataclass
class TaskResult:
    grade_id: str
    score: float
    max_score: float
    passed: bool
    message: str

    def as_dict(self) -> dict:
        return {"grade_id": self.grade_id, "score": self.score, "max_score": self.max_score,
                "passed": self.passed, "message": self.message}


@dataclass
class ManualResult:
    """A written answer: graded by hand, so it carries no score until a person gives one --
    except an answer left as released, which is 0 and needs no one's time."""

    grade_id: str
    max_score: float
    answered: bool
    answer: str = ""
    message: str = NEEDS_MANUAL

    @property
    def score(self) -> float | None:
        return None if self.answered else 0.0

    def as_dict(self) -> dict:
        """nbgrader's names: ``needs_manual_grade``; ``score`` is null until graded by hand."""
        return {"grade_id": self.grade_id, "score": self.score, "max_score": self.max_score,
                "needs_manual_grade": self.answered, "message": self.message, "answer": self.answer}


@dataclass
class GradeResult:
    exercise: str
    score: float
    max_score: float
    tasks: list[TaskResult]
    error: str = ""  # set when the submission could not be graded at all
    notes: list[str] = field(default_factory=list)
    manual: list[ManualResult] = field(default_factory=list)  # written answers, graded by hand

    @property
    def manual_max_score(self) -> float:
        return sum(m.max_score for m in self.manual)

    def as_dict(self) -> dict:
        """nbgrader's names; ``error``, ``notes`` and the written answers (``manual``,
        ``manual_max_score``: not included in ``score`` / ``max_score``) only when there are any."""
        out = {"exercise": self.exercise, "score": self.score, "max_score": self.max_score,
               "tasks": [t.as_dict() for t in self.tasks]}
        if self.manual:
            out["manual"] = [m.as_dict() for m in self.manual]
            out["manual_max_score"] = self.manual_max_score
        if self.error:
            out["error"] = self.error
        if self.notes:
            out["notes"] = list(self.notes)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> GradeResult:
        """The inverse of :meth:`as_dict` (merging results graded elsewhere)."""
        tasks = [TaskResult(t["grade_id"], float(t["score"]), float(t["max_score"]), bool(t["passed"]),
                            str(t.get("message", ""))) for t in data.get("tasks", [])]
        manual = [ManualResult(m["grade_id"], float(m["max_score"]), bool(m.get("needs_manual_grade")),
                               str(m.get("answer", "")), str(m.get("message", NEEDS_MANUAL)))
                  for m in data.get("manual", [])]
        return cls(str(data.get("exercise", "")), float(data.get("score", 0.0)), float(data.get("max_score", 0.0)),
                   tasks, str(data.get("error", "")), [str(n) for n in data.get("notes", [])], manual)


def assemble(exercise: Exercise, submission: nbformat.NotebookNode
             ) -> tuple[nbformat.NotebookNode, list[Step], list[str]]:
    """The notebook to run, one :class:`Step` per cell, and notes for the student."""
    theirs = _solution_sources(submission)
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
    return nb, steps, _notes(exercise, submission, theirs)


def _runnable(step: Step) -> str:
    """What the kernel runs for a step: hidden-test markers become reseeds; skipped cells are empty."""
    if step.kind == "skip":
        return ""
    if step.kind == "test":
        return seeding.reseed_hidden_blocks(step.source, step.grade_id or step.label)
    return step.source


def run_options(steps: list[Step], outbox: Path | None = None) -> RunOptions:
    """Reseed before every test cell and keep test cells out of the kernel's input history."""
    tests = {i: step for i, step in enumerate(steps) if step.kind == "test"}
    return RunOptions(preludes={i: seeding.reseed_code(step.grade_id or step.label) for i, step in tests.items()},
                      private=set(tests), outbox=outbox)


def _missing_stub(gid: str) -> str:
    return f"raise NotImplementedError('solution cell {gid!r} is missing from the submission')"


def _notes(exercise: Exercise, submission: nbformat.NotebookNode, theirs: dict[str, str]) -> list[str]:
    added = [c for c in submission.cells if c.cell_type == "code" and c.get("source", "").strip()
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
    return cell.get("id") in exercise.cell_ids or cell.get("source", "").strip() in exercise.cell_sources


def execute(exercise: Exercise, submission: nbformat.NotebookNode, limits: Limits, outbox: Path | None = None
            ) -> tuple[list[Step], list[CellRun], dict[int, Verdict]]:
    """Run the assembled notebook, then every check on what it handed in.

    Returns the steps, their runs and ``{step index: verdict}`` for the checks that had a file.
    ``outbox``: the grader's folder for the handed-in files (default: a temporary one).
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
                            memory_mb=limits.memory_mb or 4096)
            if verdict is not None:
                verdicts[index] = verdict
    return verdicts


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


def _solution_sources(submission: nbformat.NotebookNode) -> dict[str, str]:
    theirs: dict[str, str] = {}
    for cell in submission.cells:
        gid = cells.grade_id(cell)
        if cells.kind(cell) == "solution" and gid and gid not in theirs:
            theirs[gid] = cell.get("source", "")
    return theirs


def manual_answers(exercise: Exercise, submission: nbformat.NotebookNode) -> list[ManualResult]:
    """The written answers, for a person to grade; one left as released scores 0 at once."""
    theirs = _solution_sources(submission)
    out = []
    for gid, points in exercise.manual:
        text = theirs.get(gid)
        if text is None:
            out.append(ManualResult(gid, points, False, "", "not answered: the answer cell is missing"))
        elif text.strip() in ("", exercise.manual_stubs[gid].strip()):
            out.append(ManualResult(gid, points, False, "", "not answered (the cell is as released)"))
        else:
            out.append(ManualResult(gid, points, True, text[:MAX_ANSWER]))
    return out


def score(steps: list[Step], runs: list[CellRun], reference: dict[str, list[dict]],
          verdicts: dict[int, Verdict] | None = None) -> list[TaskResult]:
    tasks: list[TaskResult] = []
    region: list[tuple[Step, CellRun]] = []  # failed cells since the previous test: this task's code
    earlier: list[tuple[Step, CellRun]] = []  # every failed non-test cell so far
    stopper: tuple[Step, CellRun] | None = None  # the cell in which the kernel went away
    for index, (step, run) in enumerate(zip(steps, runs)):
        if stopper is None and run.status in ("died", "memory", "timeout") and _stopped_here(runs, run):
            stopper = (step, run)
        if step.kind != "test":
            if run.status not in ("ok", "skipped"):
                region.append((step, run))
                earlier.append((step, run))
            continue
        if step.check is not None:
            verdict = (verdicts or {}).get(index)
            passed, message = _judge_check(step, run, verdict, reference.get(step.grade_id, []), region, earlier,
                                           stopper)
        elif run.status == "not_run":
            passed, message = False, f"not run: {_not_run_reason(run, stopper)}"
        else:
            passed, message = _judge(step, run, reference.get(step.grade_id, []), region, earlier)
        tasks.append(TaskResult(step.grade_id, step.points if passed else 0.0, step.points, passed, message))
        region = []
    return tasks


def _judge_check(step: Step, run: CellRun, verdict: Verdict | None, expected: list[dict], region, earlier,
                 stopper) -> tuple[bool, str]:
    """A task with a check: its points follow the check's verdict on the handed-in file, not the kernel.

    Without a file, the message says why (the kernel's own error when the cell failed)."""
    if verdict is None:
        if run.status == "not_run":
            return False, f"not run: {_not_run_reason(run, stopper)}"
        if run.status == "ok":
            return False, f"no {step.check.file} was handed in, so there was nothing to measure"
        return False, _judge(step, run, expected, region, earlier)[1]
    problem = _compare_records(expected, run.records) if expected else None
    if verdict.passed and problem:
        return False, problem
    return verdict.passed, verdict.message


def _stopped_here(runs: list[CellRun], run: CellRun) -> bool:
    """Did the kernel end with this cell (the next code cell that was not skipped never ran)?"""
    later = [r for r in runs if r.index > run.index and r.status != "skipped"]
    return bool(later) and later[0].status == "not_run"


def _not_run_reason(run: CellRun, stopper: tuple[Step, CellRun] | None) -> str:
    if stopper is None or run.detail.startswith("the total time"):
        return run.detail
    step, cause = stopper
    what = cause.detail or cause.status
    if step.kind == "solution":
        return f"your code in {step.label!r} stopped the kernel: {what}"
    return f"the kernel stopped in {step.label!r}: {what}"


def _judge(step: Step, run: CellRun, expected: list[dict], region, earlier) -> tuple[bool, str]:
    if run.status == "ok":
        problem = _compare_records(expected, run.records)
        return (problem is None), (problem or "passed")
    if run.status in ("timeout", "died", "memory"):
        return False, f"{run.detail} while running the tests"
    return False, _error_message(step, run, region, earlier)


def _compare_records(expected: list[dict], actual: list[dict]) -> str | None:
    """None when every expected record is matched, else a message naming the first bad key."""
    got: dict[str, list] = defaultdict(list)
    for payload in actual:
        got[payload.get("key")].append(payload.get("value"))
    want: dict[str, list[dict]] = defaultdict(list)
    for payload in expected:
        want[payload["key"]].append(payload)
    for key, payloads in want.items():
        if key not in got:
            return f"value of {key!r} was not recorded (the test did not reach it)"
        values = got[key]
        if len(values) != len(payloads):
            return f"value of {key!r} differs from the expected result"
        for p, v in zip(payloads, values):
            if not values_match(p["value"], v, p.get("rtol"), p.get("atol")):
                hint = p.get("hint")
                return f"value of {key!r} differs from the expected result" + (f": {hint}" if hint else "")
    return None


def _error_message(step: Step, run: CellRun, region, earlier) -> str:
    cause = region[-1] if region else None
    if cause and cause[0].missing:
        return f"NotImplementedError: task not attempted (solution cell {cause[0].grade_id!r} is missing)"
    if run.ename == "NotImplementedError" or (cause and cause[1].ename == "NotImplementedError"):
        return "NotImplementedError: task not attempted"
    message = (f"{run.ename}: {_short(run.evalue)}" if run.evalue else run.ename) + _where(step, run)
    if cause:  # the task's own code failed: that is what the student must fix first
        return f"{_describe(cause[1])} in your code ({cause[0].label!r}); then the test failed: {message}"
    if earlier and run.ename == "NameError":
        message += f" (an earlier cell, {earlier[-1][0].label!r}, failed: {_describe(earlier[-1][1])})"
    return message


def _where(step: Step, run: CellRun) -> str:
    """Which line of the test failed: shown if the student can see it, else 'a hidden test'."""
    match = _FRAME.search(_ANSI.sub("", "\n".join(run.traceback)))
    if not match:
        return ""
    line = int(match.group(1))
    if line in cells.hidden_line_numbers(step.source):
        return " (in a hidden test)"
    lines = step.source.split("\n")
    return f" (in test line {line}: `{lines[line - 1].strip()}`)" if 0 < line <= len(lines) else ""


def _describe(run: CellRun) -> str:
    if run.status == "error":
        return f"{run.ename}: {_short(run.evalue)}" if run.evalue else run.ename
    return run.detail or run.status


def _short(text: str) -> str:
    text = _TMPFILE.sub(r"(line \1)", _ANSI.sub("", text).strip())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."
