"""`make grade`, as the README uses it: one gradebook and one feedback folder per exercise.

Two tiny exercises (tests/grader_fixtures/tiny.py) keep it to a few seconds per run; the
grader itself is tested in tests/test_grade_*.py. Only trusted notebooks are graded here, so
``SANDBOX=none``.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).parent / "grader_fixtures"))

import tiny  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None or not (REPO / ".venv" / "bin" / "python").exists(),
                                reason="needs make and the project's .venv (created by `make test`)")


def _make_grade(folder: Path, exercise: str, tmp_path: Path) -> str:
    command = ["make", "-C", str(REPO), "-s", "-o", ".venv/.installed", "grade",
               f"SUBMISSIONS={folder}", f"EXERCISE={exercise}", f"GRADE_OUT={tmp_path / 'out'}",
               "SANDBOX=none", "GRADE_JOBS=1",
               f"GRADE_ARGS=--solutions {tmp_path / 'sol'} --cache-dir {tmp_path / 'cache'}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def test_two_exercises_leave_two_gradebooks_and_say_where(tmp_path):
    tiny.write_solutions(tmp_path / "sol")
    for folder, name, notebook in (("ex90", "alice", tiny.tiny_solution()), ("ex91", "bob", tiny.other_solution())):
        (tmp_path / "submissions" / folder).mkdir(parents=True)
        nbformat.write(notebook, tmp_path / "submissions" / folder / f"{name}.ipynb")
    first = _make_grade(tmp_path / "submissions/ex90/", "ex90_tiny", tmp_path)   # a trailing / too
    second = _make_grade(tmp_path / "submissions/ex91", "ex91_other", tmp_path)
    out = tmp_path / "out"
    assert f"gradebook: {out}/grades-ex90.csv" in first and f"feedback: {out}/feedback-ex90/" in first
    assert f"gradebook: {out}/grades-ex91.csv" in second
    books = {path.name: list(csv.DictReader(path.open())) for path in out.glob("grades-*.csv")}
    assert set(books) == {"grades-ex90.csv", "grades-ex91.csv"}   # the second did not overwrite the first
    assert [(r["submission"], r["total"], r["max_score"]) for r in books["grades-ex90.csv"]] == [("alice", "6", "6")]
    assert [(r["submission"], r["total"]) for r in books["grades-ex91.csv"]] == [("bob", "1")]
    assert [p.name for p in (out / "feedback-ex90").iterdir()] == ["alice.md"]
    assert [p.name for p in (out / "feedback-ex91").iterdir()] == ["bob.md"]


def test_grade_without_a_folder_says_what_to_type():
    done = subprocess.run(["make", "-C", str(REPO), "-s", "-o", ".venv/.installed", "-o", "sandbox-deps", "grade"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "make grade SUBMISSIONS=submissions/ex02" in done.stdout
