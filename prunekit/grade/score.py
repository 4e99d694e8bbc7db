"""Score a run: from what happened to each cell, the points and the message of every task.

Everything here runs in the grader's process, after the kernel is gone, on data the kernel
could not touch afterwards: the status of each cell's ``execute_reply``, the values the test
cells recorded (:mod:`prunekit.grade.kernel.records`), the expected values recorded by the
instructor's own run (:mod:`prunekit.grade.reference`), and the verdicts of checks measured in
boxes of their own (:mod:`prunekit.grade.checks`). See :func:`score` for the rules.
"""

from __future__ import annotations

import re
from collections import defaultdict

from . import cells
from .assemble import Step
from .checks import Verdict
from .compare import values_match
from .limits import MAX_MESSAGE_CHARS
from .results import TaskResult
from .runner import CellRun

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_FRAME = re.compile(r"Cell In\[\d+\], line (\d+)")
_TMPFILE = re.compile(r"\(\d+\.py, line (\d+)\)")  # ipykernel's name for a cell: say just the line
STOPPING = ("died", "memory", "disk", "timeout")  # statuses after which the kernel may be gone
WITHHELD = "(message withheld: it quotes a hidden test)"
MIN_QUOTE = 12  # characters of a hidden line that count as quoting it


def score(steps: list[Step], runs: list[CellRun], reference: dict[str, list[dict]],
          verdicts: dict[int, Verdict] | None = None) -> list[TaskResult]:
    """One :class:`TaskResult` per test cell: its points and a message the student can act on.

    The notebook ran top to bottom, one task after another: solution cells (the student's code),
    locked cells, then the task's test cell. A task is the test cell and the cells since the
    previous test (its *region*). The rules, in the order they are applied:

    1. **A test with a check** (``step.check``) is scored by the check's verdict on the file the
       kernel handed in, measured outside the kernel -- what the kernel printed, asserted or
       recorded does not count (the recorded values may still *fail* it, never pass it).
    2. **A test that did not run** (the kernel was gone) scores 0; the message names the cell that
       stopped the kernel (a time limit, a memory limit, an exit) and whether it was the student's.
    3. **A test that ran without error** passes only if every value the instructor's solution
       recorded in that cell was recorded again, in the same order, with a matching value
       (:func:`~prunekit.grade.compare.values_match`). Asserts alone can be defeated from inside
       the kernel; the comparison here cannot.
    4. **A test that raised** scores 0. The message says what to fix first: a failed solution cell
       of this task, a task not attempted (``NotImplementedError``), a name an earlier failed cell
       should have defined, or the test's own error with the line it failed on -- unless that line
       is hidden: then only the exception's type and the instructor's hint are shown, never the
       message (the student's code runs inside the hidden test and could put its text there).
       Any message that quotes a line of a hidden test is withheld the same way.

    A task that passed although a cell of its region was stopped at the time limit says so: the
    interrupted cell's partial work was graded, and the student should know.
    """
    hidden = _hidden_lines(steps)
    tasks: list[TaskResult] = []
    region: list[tuple[Step, CellRun]] = []  # failed cells since the previous test: this task's code
    earlier: list[tuple[Step, CellRun]] = []  # every failed non-test cell so far
    stopper: tuple[Step, CellRun] | None = None  # the cell in which the kernel went away
    for index, (step, run) in enumerate(zip(steps, runs)):
        if stopper is None and run.status in STOPPING and _stopped_here(runs, run):
            stopper = (step, run)
        if step.kind != "test":
            if run.status not in ("ok", "skipped"):
                region.append((step, run))
                earlier.append((step, run))
            continue
        expected = reference.get(step.grade_id, [])
        if step.check is not None:
            passed, message = _judge_check(step, run, (verdicts or {}).get(index), expected, region, earlier,
                                           stopper, hidden)
        elif run.status == "not_run":
            passed, message = False, f"not run: {_not_run_reason(run, stopper)}"
        else:
            passed, message = _judge(step, run, expected, region, earlier, hidden)
        if passed:
            message += _interrupted(region)
        tasks.append(TaskResult(step.grade_id, step.points if passed else 0.0, step.points, passed, message))
        region = []
    return tasks


def _interrupted(region: list[tuple[Step, CellRun]]) -> str:
    """A passed task whose code was cut short by the time limit: the student is told."""
    cut = [(step, run) for step, run in region if run.status == "timeout"]
    if not cut:
        return ""
    step, run = cut[0]
    return (f" -- but {step.label!r} was stopped at the time limit ({run.detail}); what it had done by then "
            "was graded, so make it finish well within the limit")


def _judge_check(step: Step, run: CellRun, verdict: Verdict | None, expected: list[dict], region, earlier,
                 stopper, hidden: set[str]) -> tuple[bool, str]:
    """A task with a check: its points follow the check's verdict on the handed-in file, not the kernel.

    Without a file, the message says why (the kernel's own error when the cell failed)."""
    if verdict is None:
        if run.status == "not_run":
            return False, f"not run: {_not_run_reason(run, stopper)}"
        if run.status == "ok":
            return False, f"no {step.check.file} was handed in, so there was nothing to measure"
        return False, _judge(step, run, expected, region, earlier, hidden)[1]
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


def _judge(step: Step, run: CellRun, expected: list[dict], region, earlier, hidden: set[str]) -> tuple[bool, str]:
    if run.status == "ok":
        problem = _compare_records(expected, run.records)
        return (problem is None), (problem or "passed")
    if run.status in STOPPING:
        return False, f"{run.detail} while running the tests"
    return False, _error_message(step, run, expected, region, earlier, hidden)


def _compare_records(expected: list[dict], actual: list[dict]) -> str | None:
    """None when every expected record is matched, else a message naming the first bad key."""
    key, _ = _first_unmatched(expected, actual)
    if key is None:
        return None
    if key not in {p.get("key") for p in actual}:
        return f"value of {key!r} was not recorded (the test did not reach it)"
    hint = next((p.get("hint") for p in expected if p["key"] == key and p.get("hint")), None)
    return f"value of {key!r} differs from the expected result" + (f": {hint}" if hint else "")


def _first_unmatched(expected: list[dict], actual: list[dict]) -> tuple[str | None, str | None]:
    """The first expected key the submission did not match, and the hint the solution gave for it."""
    got: dict[str, list] = defaultdict(list)
    for payload in actual:
        got[payload.get("key")].append(payload.get("value"))
    want: dict[str, list[dict]] = defaultdict(list)
    for payload in expected:
        want[payload["key"]].append(payload)
    for key, payloads in want.items():
        values = got.get(key, [])
        if len(values) != len(payloads) or not all(
                values_match(p["value"], v, p.get("rtol"), p.get("atol")) for p, v in zip(payloads, values)):
            return key, next((p.get("hint") for p in payloads if p.get("hint")), None)
    return None, None


def _error_message(step: Step, run: CellRun, expected: list[dict], region, earlier, hidden: set[str]) -> str:
    cause = region[-1] if region else None
    if cause and cause[0].missing:
        return f"NotImplementedError: task not attempted (solution cell {cause[0].grade_id!r} is missing)"
    if run.ename == "NotImplementedError" or (cause and cause[1].ename == "NotImplementedError"):
        return "NotImplementedError: task not attempted"
    line = _failed_line(run)
    if line in cells.hidden_line_numbers(step.source):
        _, hint = _first_unmatched(expected, run.records)
        message = f"{run.ename} (in a hidden test)" + (f": {hint}" if hint else "")
    else:
        message = _describe(run, hidden) + _where(step, line)
    if cause:  # the task's own code failed: that is what the student must fix first
        return f"{_describe(cause[1], hidden)} in your code ({cause[0].label!r}); then the test failed: {message}"
    if earlier and run.ename == "NameError":
        message += f" (an earlier cell, {earlier[-1][0].label!r}, failed: {_describe(earlier[-1][1], hidden)})"
    return message


def _failed_line(run: CellRun) -> int | None:
    """The line of the running cell the error passed through (its first frame in the traceback)."""
    match = _FRAME.search(_ANSI.sub("", "\n".join(run.traceback)))
    return int(match.group(1)) if match else None


def _where(step: Step, line: int | None) -> str:
    """Which visible line of the test failed, quoted."""
    lines = step.source.split("\n")
    return f" (in test line {line}: `{lines[line - 1].strip()}`)" if line and 0 < line <= len(lines) else ""


def _describe(run: CellRun, hidden: set[str]) -> str:
    if run.status != "error":
        return run.detail or run.status
    if not run.evalue:
        return run.ename
    text = _short(run.evalue)
    return f"{run.ename}: {WITHHELD if _quotes(run.evalue, hidden) else text}"


def _hidden_lines(steps: list[Step]) -> set[str]:
    """Every line of every hidden test of the exercise, long enough to recognise when quoted."""
    found = set()
    for step in steps:
        lines = step.source.split("\n")
        for number in cells.hidden_line_numbers(step.source):
            text = lines[number - 1].strip()
            if len(text) >= MIN_QUOTE and not text.startswith("###"):
                found.add(text)
    return found


def _quotes(text: str, hidden: set[str]) -> bool:
    """Does ``text`` contain a line of a hidden test? (The student's code can read the tests' source
    while it runs; an error message is one way to carry it out. Encoded, it would carry nothing the
    contract does not already keep out of the tests: hidden tests hold no expected values.)"""
    return any(line in text for line in hidden)


def _short(text: str) -> str:
    text = _TMPFILE.sub(r"(line \1)", _ANSI.sub("", text).strip())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."
