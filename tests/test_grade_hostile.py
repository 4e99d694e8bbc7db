"""The autograder against broken and hostile submissions (tiny fixture exercise, real kernels).

One folder-mode CLI run grades every submission below in parallel (about half a minute);
each test then checks one submission's row. The fixture exercise ``ex90_tiny`` has three
tasks: ``test-double`` (2 points), ``test-l1`` (3, uses ``torch.allclose``), ``test-answer`` (1).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).parent / "grader_fixtures"))
import tiny  # noqa: E402

from prunekit.grade.generate import generate  # noqa: E402
from prunekit.grade.runner import Limits, run_notebook  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
CELL_TIMEOUT = 15  # generous: the test machine may be busy; loops cost this much each
MEMORY_MB = 1500

S = tiny.SOLUTIONS
WRONG = {"tiny-double": "def double(x):\n    return x + 1", "tiny-l1": "def l1_rows(w):\n    return w.sum(dim=1)",
         "tiny-answer": "answer = 44"}


def _drop_cells(nb, kind: str):
    nb = tiny.with_solutions(nb, {})
    nb.cells = [c for c in nb.cells if not c.metadata.get("nbgrader", {}).get(kind)]
    return nb


def _submissions(solution, exercise, other_exercise, sol_file: Path, out_dir: Path) -> dict[str, object]:
    """name -> notebook (or raw text). Attacks on different tasks share a notebook to save kernels."""
    tampered = tiny.with_solutions(solution, {"tiny-l1": WRONG["tiny-l1"], "test-l1": "pass"})
    tampered.cells = [c for c in tampered.cells
                      if c.metadata.get("nbgrader", {}).get("grade_id") not in ("test-double", "test-answer")]
    escape = (f"for target in [{str(sol_file)!r}, '../escaped.txt', {str(out_dir / 'grades.csv')!r}]:\n"
              "    try:\n        open(target, 'w').write('pwned')\n    except OSError:\n        pass\n"
              + S["tiny-double"])
    escape_missing = tiny.with_solutions(solution, {"tiny-double": escape})
    escape_missing.cells = [c for c in escape_missing.cells
                            if c.metadata.get("nbgrader", {}).get("grade_id") != "tiny-l1"]
    return {
        "full": solution,
        "blank": exercise,
        "partial": tiny.with_solutions(exercise, {"tiny-double": S["tiny-double"]}),
        # double: infinite loop; l1: wrong, with torch.allclose patched to pass; answer: writes to the solutions
        "loop_patch_write": tiny.with_solutions(solution, {
            "tiny-double": "while True:\n    pass",
            "tiny-l1": "import torch\ntorch.allclose = lambda *a, **k: True\n" + WRONG["tiny-l1"],
            "tiny-answer": f"open({str(sol_file)!r}, 'w').write('pwned')\nanswer = 45"}),
        "stubborn_loop": tiny.with_solutions(solution, {
            "tiny-l1": "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                       "while True:\n    time.sleep(0.05)"}),
        "os_exit": tiny.with_solutions(solution, {"tiny-l1": "import os\nos._exit(0)"}),
        # double: sys.exit(); answer: memory bomb
        "exit_and_bomb": tiny.with_solutions(solution, {
            "tiny-double": "import sys\nsys.exit()",
            "tiny-answer": "x = []\nwhile True:\n    x.append(b'1' * (50 * 2**20))"}),
        # test-double and test-answer deleted (right code), test-l1 replaced by `pass` (wrong code)
        "tampered_tests": tampered,
        # double: writes outside its folder, swallowing the errors; the l1 solution cell deleted
        "escape_missing": escape_missing,
        "record_patch": tiny.with_solutions(solution, {
            "tiny-double": "import prunekit.grade\nrecord = prunekit.grade.record = lambda key, value, **kw: value\n"
                           "def double(x):\n    return 7 if x == 3 else 2 * x"}),
        "other_exercise": tiny.with_solutions(other_exercise, {"other-triple": "def triple(x):\n    return 3 * x"}),
        "invalid_json": "{ this is not a notebook",
    }


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("grading")
    solutions = tiny.write_solutions(root / "solutions")
    generate(solutions, root / "exercises")
    read = lambda p: nbformat.read(p, as_version=4)  # noqa: E731
    sol_file = solutions / "ex90_tiny.ipynb"
    out = root / "out"
    out.mkdir()
    subs = root / "submissions"
    subs.mkdir()
    for name, nb in _submissions(read(sol_file), read(root / "exercises" / "ex90_tiny.ipynb"),
                                 read(root / "exercises" / "ex91_other.ipynb"), sol_file, out).items():
        (subs / f"{name}.ipynb").write_text(nb if isinstance(nb, str) else nbformat.writes(nb))
    before = hashlib.sha256(sol_file.read_bytes()).hexdigest()
    cmd = [sys.executable, "-m", "prunekit.grade", str(subs), "--solutions", str(solutions), "-j", "3",
           "--gradebook", str(out / "grades.csv"), "--feedback", str(out / "feedback"), "--json", str(out / "all.json"),
           "--cell-timeout", str(CELL_TIMEOUT), "--memory-mb", str(MEMORY_MB)]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=400,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "all.json").read_text())
    rows = {r["submission"]: r for r in csv.DictReader(open(out / "grades.csv"))}
    return dict(results=results, rows=rows, out=out, root=root, sol_file=sol_file, before=before, stdout=done.stdout)


def _tasks(graded, name) -> dict[str, dict]:
    return {t["grade_id"]: t for t in graded["results"][name]["tasks"]}


def _scores(graded, name) -> dict[str, float]:
    return {gid: t["score"] for gid, t in _tasks(graded, name).items()}


def test_full_solution_gets_full_marks(graded):
    result = graded["results"]["full"]
    assert result == {"exercise": "ex90_tiny", "score": 6.0, "max_score": 6.0, "tasks": [
        {"grade_id": "test-double", "score": 2.0, "max_score": 2.0, "passed": True, "message": "passed"},
        {"grade_id": "test-l1", "score": 3.0, "max_score": 3.0, "passed": True, "message": "passed"},
        {"grade_id": "test-answer", "score": 1.0, "max_score": 1.0, "passed": True, "message": "passed"}]}


def test_unmodified_exercise_gets_zero_everywhere(graded):
    tasks = _tasks(graded, "blank")
    assert [t["score"] for t in tasks.values()] == [0.0, 0.0, 0.0]
    assert {t["message"] for t in tasks.values()} == {"NotImplementedError: task not attempted"}


def test_partial_submission_gets_exactly_its_tasks(graded):
    assert _scores(graded, "partial") == {"test-double": 2.0, "test-l1": 0.0, "test-answer": 0.0}


def test_infinite_loop_is_interrupted_and_other_tasks_still_count(graded):
    tasks = _tasks(graded, "loop_patch_write")
    assert f"timed out after {CELL_TIMEOUT} s" in tasks["test-double"]["message"]
    assert tasks["test-double"]["score"] == 0.0


def test_patching_torch_allclose_cannot_forge_values(graded):
    tasks = _tasks(graded, "loop_patch_write")  # its asserts pass (allclose says yes) ...
    assert tasks["test-l1"] == {"grade_id": "test-l1", "score": 0.0, "max_score": 3.0, "passed": False,
                                "message": "value of 'l1_random' differs from the expected result"}


def test_loop_that_ignores_interrupts_gets_the_kernel_killed(graded):
    tasks = _tasks(graded, "stubborn_loop")
    assert _scores(graded, "stubborn_loop") == {"test-double": 2.0, "test-l1": 0.0, "test-answer": 0.0}
    assert "timed out" in tasks["test-l1"]["message"]
    assert tasks["test-answer"]["message"].startswith("not run:")


def test_os_exit_kills_the_kernel_and_the_rest_is_zero_with_a_reason(graded):
    tasks = _tasks(graded, "os_exit")
    assert _scores(graded, "os_exit") == {"test-double": 2.0, "test-l1": 0.0, "test-answer": 0.0}
    assert "kernel died (exit code 0)" in tasks["test-l1"]["message"]
    assert "kernel died" in tasks["test-answer"]["message"]


def test_sys_exit_and_memory_bomb_fail_only_their_tasks(graded):
    tasks = _tasks(graded, "exit_and_bomb")
    assert _scores(graded, "exit_and_bomb") == {"test-double": 0.0, "test-l1": 3.0, "test-answer": 0.0}
    assert "SystemExit" in tasks["test-double"]["message"]
    assert "MemoryError" in tasks["test-answer"]["message"] or "memory limit" in tasks["test-answer"]["message"]


def test_deleted_and_edited_test_cells_do_not_matter(graded):
    tasks = _tasks(graded, "tampered_tests")
    assert _scores(graded, "tampered_tests") == {"test-double": 2.0, "test-l1": 0.0, "test-answer": 1.0}
    assert "wrong L1 norms" in tasks["test-l1"]["message"]  # the instructor's assert ran, not `pass`


def test_missing_solution_cell_means_task_not_attempted(graded):
    tasks = _tasks(graded, "escape_missing")
    assert _scores(graded, "escape_missing") == {"test-double": 2.0, "test-l1": 0.0, "test-answer": 1.0}
    assert "missing" in tasks["test-l1"]["message"]


def test_patching_record_cannot_forge_values(graded):
    tasks = _tasks(graded, "record_patch")
    assert tasks["test-double"]["score"] == 0.0
    assert "was not recorded" in tasks["test-double"]["message"]


@pytest.mark.skipif(not AS_ROOT, reason="the kernel runs as another user only when the grader is root")
def test_writes_outside_the_work_folder_are_blocked(graded):
    assert hashlib.sha256(graded["sol_file"].read_bytes()).hexdigest() == graded["before"]
    assert not (graded["root"] / "escaped.txt").exists()
    assert "pwned" not in (graded["out"] / "grades.csv").read_text()
    assert _tasks(graded, "escape_missing")["test-double"]["passed"]  # the writes failed; its code is right
    answer = _tasks(graded, "loop_patch_write")["test-answer"]
    assert answer["score"] == 0.0 and "PermissionError" in answer["message"]


def test_notebook_of_another_exercise_is_graded_against_that_exercise(graded):
    result = graded["results"]["other_exercise"]
    assert (result["exercise"], result["score"], result["max_score"]) == ("ex91_other", 1.0, 1.0)
    assert graded["rows"]["other_exercise"]["test-double"] == ""  # never credited with ex90 tasks


def test_invalid_json_is_a_zero_row_with_its_reason(graded):
    row = graded["rows"]["invalid_json"]
    assert (row["total"], row["max_score"]) == ("0", "0")
    assert "not a readable notebook" in row["error"]


def test_gradebook_and_feedback_cover_every_submission(graded):
    rows = graded["rows"]
    assert len(rows) == len(graded["results"]) == 12
    assert rows["partial"]["test-double"] == "2" and rows["partial"]["total"] == "2"
    feedback = (graded["out"] / "feedback" / "exit_and_bomb.md").read_text()
    assert "**Score: 3 / 6**" in feedback and "SystemExit" in feedback
    assert "Traceback" not in feedback


def test_memory_watchdog_kills_a_kernel_without_rlimit():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in
                ("x = []\nwhile True:\n    x.append(b'1' * (20 * 2**20))", "print('after')")]
    runs = run_notebook(nb, Limits(cell_timeout=30, memory_mb=400, rlimit=False))
    assert [r.status for r in runs] == ["memory", "not_run"]
    assert "memory limit exceeded" in runs[0].detail
