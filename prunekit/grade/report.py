"""What the grader writes: JSON per submission, a Markdown feedback file, a gradebook CSV."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path

from .autograde import GradeResult


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
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.")
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
    lines = [title, "", f"**Score: {result.score:g} / {result.max_score:g}**", ""]
    if result.error:
        lines += [f"Your notebook could not be graded: {result.error}", ""]
    if result.tasks:
        lines += ["| Task | Points | Result |", "|---|---:|---|"]
        for t in result.tasks:
            verdict = "passed" if t.passed else "failed: " + t.message.replace("|", "\\|")
            lines.append(f"| `{t.grade_id}` | {t.score:g} / {t.max_score:g} | {verdict} |")
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
    """One row per submission; one column per task, then total, max_score and error."""
    columns = ["submission", "exercise", *task_ids, "total", "max_score", "error"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for name, result in results:
            row = {"submission": name, "exercise": result.exercise, "total": f"{result.score:g}",
                   "max_score": f"{result.max_score:g}", "error": result.error}
            row.update({t.grade_id: f"{t.score:g}" for t in result.tasks if t.grade_id in task_ids})
            writer.writerow(row)
