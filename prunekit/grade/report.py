"""What the grader writes: JSON per submission, a Markdown feedback file, a gradebook CSV.

Written answers graded by hand appear in all three, never as a score the grader made up: the
JSON lists them under ``manual`` (with the student's text), the feedback in their own table,
the gradebook in their own columns holding ``needs manual grading`` (or ``0`` for an answer
left as released) for the instructor to overwrite.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path

from .autograde import NEEDS_MANUAL, GradeResult


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
        f.write(json.dumps(content, indent=2) + "\n")
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


def feedback_markdown(name: str, result: GradeResult) -> str:
    """A page a student can act on: score, a table of tasks, and what to fix."""
    title = f"# Feedback for `{name}`" + (f" — {result.exercise}" if result.exercise else "")
    score = f"**Score: {result.score:g} / {result.max_score:g}**"
    if result.manual:
        score += (f" from the automatic tests, plus up to {result.manual_max_score:g} points for written "
                  "answers, graded by hand")
    lines = [title, "", score, ""]
    if result.error:
        lines += [f"Your notebook could not be graded: {result.error}", ""]
    if result.tasks:
        lines += ["| Task | Points | Result |", "|---|---:|---|"]
        for t in result.tasks:
            verdict = (t.message if t.passed else "failed: " + t.message).replace("|", "\\|")
            lines.append(f"| `{t.grade_id}` | {t.score:g} / {t.max_score:g} | {verdict} |")
        lines.append("")
    if result.manual:
        lines += ["Written answers (graded by hand):", "", "| Question | Points | Status |", "|---|---:|---|"]
        for m in result.manual:
            points = f"– / {m.max_score:g}" if m.score is None else f"{m.score:g} / {m.max_score:g}"
            lines.append(f"| `{m.grade_id}` | {points} | {m.message} |")
        lines.append("")
    if result.notes:
        lines += ["Notes:", *[f"- {n}" for n in result.notes], ""]
    return "\n".join(lines)


def write_feedback(folder: Path, results: list[tuple[str, GradeResult]]) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, result in results:
        (folder / f"{name}.md").write_text(feedback_markdown(name, result), encoding="utf-8")


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
            row = {"submission": name, "exercise": result.exercise, "total": f"{result.score:g}",
                   "max_score": f"{result.max_score:g}", "error": result.error}
            row.update({t.grade_id: f"{t.score:g}" for t in result.tasks if t.grade_id in task_ids})
            row.update({m.grade_id: NEEDS_MANUAL if m.score is None else f"{m.score:g}" for m in result.manual})
            if extra:
                row["manual_max_score"] = f"{result.manual_max_score:g}"
            writer.writerow(row)
