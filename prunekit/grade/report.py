"""What the grader writes: JSON per submission, a Markdown feedback file, a gradebook CSV.

Written answers graded by hand appear in all three, never as a score the grader made up: the
JSON lists them under ``manual`` (with the student's text), the feedback in their own table,
the gradebook in their own columns holding ``needs manual grading`` (or ``0`` for an answer
left as released) for the instructor to overwrite.

Much of the text comes from students (messages of their code, file names), so it is written
defensively: already cleaned of what UTF-8 cannot hold (:func:`~prunekit.grade.results.clean_text`),
escaped for Markdown tables and HTML in the feedback, and kept from starting a spreadsheet
formula in the gradebook. The command line writes the gradebook *first* and each student's
feedback on its own (:func:`write_feedback`): one file that cannot be written costs that
student's page, never the class's gradebook.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
from pathlib import Path

from .results import NEEDS_MANUAL, GradeResult, clean_text


def write_json(result: GradeResult | list[tuple[str, GradeResult]], path: Path) -> None:
    """One result as the documented object, or a folder's results as ``{stem: object}``.

    Written atomically (a temporary file, then a rename): a job killed mid-write leaves no
    half file for :mod:`prunekit.grade.merge` to read.
    """
    if isinstance(result, GradeResult):
        content = result.as_dict()
    else:
        content = {name: r.as_dict() for name, r in result}
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(content, indent=2) + "\n")  # ASCII with escapes: any text survives
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def task_columns(results: list[tuple[str, GradeResult]], catalog: dict | None = None) -> list[str]:
    """The gradebook's task columns: the catalog's order for the graded exercises, else first seen."""
    if catalog is not None:
        graded = {r.exercise for _, r in results}
        return [gid for ex in catalog.values() if ex.name in graded for gid, _ in ex.tests]
    seen: dict[str, None] = {}
    for _, result in results:
        for task in result.tasks:
            seen.setdefault(task.grade_id, None)
    return list(seen)


def _md(text: str) -> str:
    """Student-supplied text as one Markdown table cell: no HTML, no line breaks, no column breaks."""
    text = clean_text(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("\r", " ").replace("\n", " ").replace("|", "\\|")


def feedback_markdown(name: str, result: GradeResult) -> str:
    """A page a student can act on: score, a table of tasks, and what to fix."""
    shown = _md(name).replace("`", "'")
    title = f"# Feedback for `{shown}`" + (f" — {_md(result.exercise)}" if result.exercise else "")
    score = f"**Score: {result.score:g} / {result.max_score:g}**"
    if result.manual:
        score += (f" from the automatic tests, plus up to {result.manual_max_score:g} points for written "
                  "answers, graded by hand")
    lines = [title, "", score, ""]
    if result.error:
        lines += [f"Your notebook could not be graded: {_md(result.error)}", ""]
    if result.tasks:
        lines += ["| Task | Points | Result |", "|---|---:|---|"]
        for t in result.tasks:
            verdict = _md(t.message if t.passed else "failed: " + t.message)
            lines.append(f"| `{_md(t.grade_id)}` | {t.score:g} / {t.max_score:g} | {verdict} |")
        lines.append("")
    if result.manual:
        lines += ["Written answers (graded by hand):", "", "| Question | Points | Status |", "|---|---:|---|"]
        for m in result.manual:
            points = f"– / {m.max_score:g}" if m.score is None else f"{m.score:g} / {m.max_score:g}"
            lines.append(f"| `{_md(m.grade_id)}` | {points} | {_md(m.message)} |")
        lines.append("")
    if result.notes:
        lines += ["Notes:", *[f"- {_md(n)}" for n in result.notes], ""]
    return "\n".join(lines)


def write_feedback(folder: Path, results: list[tuple[str, GradeResult]]) -> list[str]:
    """``<name>.md`` per submission, each on its own: returns the problems (none stop the others)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    problems = []
    for name, result in results:
        try:
            (folder / f"{name}.md").write_text(feedback_markdown(name, result), encoding="utf-8")
        except (OSError, ValueError) as err:  # a name the file system refuses, a full disk: this page only
            problems.append(f"feedback for {clean_text(name)!r} not written: {clean_text(err)}")
            print(f"error: {problems[-1]}", file=sys.stderr)
    return problems


def _cell(text: str) -> str:
    """A gradebook cell that a spreadsheet shows as text, never runs as a formula."""
    text = clean_text(text)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def write_gradebook(path: Path, results: list[tuple[str, GradeResult]], task_ids: list[str]) -> None:
    """One row per submission; one column per task, then total, max_score and error.

    With written answers, one column per question after the tasks (``needs manual grading``,
    or ``0`` when not answered: overwrite with the points you give) and ``manual_max_score``;
    ``total`` and ``max_score`` stay the automatic part.
    """
    manual_ids = list(dict.fromkeys(m.grade_id for _, r in results for m in r.manual))
    extra = ["manual_max_score"] if manual_ids else []
    columns = ["submission", "exercise", *task_ids, *manual_ids, "total", "max_score", *extra, "error"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for name, result in results:
            row = {"submission": _cell(name), "exercise": _cell(result.exercise), "total": f"{result.score:g}",
                   "max_score": f"{result.max_score:g}", "error": _cell(result.error)}
            row.update({t.grade_id: f"{t.score:g}" for t in result.tasks if t.grade_id in task_ids})
            row.update({m.grade_id: NEEDS_MANUAL if m.score is None else f"{m.score:g}" for m in result.manual})
            if extra:
                row["manual_max_score"] = f"{result.manual_max_score:g}"
            writer.writerow(row)
