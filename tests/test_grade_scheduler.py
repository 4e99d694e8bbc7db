"""Grading as a job array: the job script an existing scheduler runs unchanged, then a merge.

The same ``prunekit/grade/jobs/grade-array.sh`` is what ``sbatch --array`` (Slurm sets
``SLURM_ARRAY_TASK_ID``) and a Kubernetes Indexed Job (``JOB_COMPLETION_INDEX``) run; here it runs
locally, once per notebook, two at a time, half with each variable. ``prunekit.grade.merge`` then
builds the gradebook, and says so when a task's result is missing.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).parent / "grader_fixtures"))
import tiny  # noqa: E402

from prunekit.grade.generate import generate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
JOBS = REPO / "prunekit" / "grade" / "jobs"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None and not IN_CI,
                                reason="bubblewrap is not installed (make sandbox-deps); in CI this fails")
EXPECTED = {"a_full": 6.0, "b_partial": 2.0, "c_blank": 0.0, "d_wrong_answer": 5.0}


def _env(**extra: str) -> dict[str, str]:
    indices = ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX", "TASK_INDEX")
    env = {k: v for k, v in os.environ.items() if k not in indices}
    return {**env, "PYTHONPATH": str(REPO), "PYTHON": sys.executable, **extra}


@pytest.fixture(scope="module")
def array(tmp_path_factory):
    root = tmp_path_factory.mktemp("array")
    solutions = tiny.write_solutions(root / "solutions")
    generate(solutions, root / "exercises")
    solution = nbformat.read(solutions / "ex90_tiny.ipynb", as_version=4)
    exercise = nbformat.read(root / "exercises" / "ex90_tiny.ipynb", as_version=4)
    subs = root / "submissions"
    subs.mkdir()
    notebooks = {"a_full": solution,
                 "b_partial": tiny.with_solutions(exercise, {"tiny-double": tiny.SOLUTIONS["tiny-double"]}),
                 "c_blank": exercise, "d_wrong_answer": tiny.with_solutions(solution, {"tiny-answer": "answer = 44"})}
    for name, nb in notebooks.items():
        nbformat.write(nb, subs / f"{name}.ipynb")
    cache, results = root / "cache", root / "results"
    options = ["--solutions", str(solutions), "--cache-dir", str(cache), "--cell-timeout", "60", "--sandbox", "bwrap"]
    refs = subprocess.run([sys.executable, "-m", "prunekit.grade.reference", *options[:4], "--sandbox", "bwrap"],
                          capture_output=True, text=True, env=_env(), timeout=300)
    assert refs.returncode == 0, refs.stderr
    tasks = []
    for i in range(len(notebooks)):
        variable = "SLURM_ARRAY_TASK_ID" if i % 2 == 0 else "JOB_COMPLETION_INDEX"
        tasks.append(subprocess.Popen(["bash", str(JOBS / "grade-array.sh"), str(subs), str(results), *options],
                                      env=_env(**{variable: str(i)}), stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        if len(tasks) % 2 == 0:  # two at a time, as on a 2-core node
            for task in tasks[-2:]:
                task.wait(timeout=300)
    codes = [t.wait(timeout=300) for t in tasks]
    return dict(root=root, subs=subs, results=results, codes=codes, tasks=tasks)


def _merge(array, *extra: str) -> subprocess.CompletedProcess:
    out = array["root"] / "merged"
    return subprocess.run([sys.executable, "-m", "prunekit.grade.merge", str(array["results"]), "--submissions",
                           str(array["subs"]), "--gradebook", str(out / "grades.csv"), "--json", str(out / "all.json"),
                           "--feedback", str(out / "feedback"), *extra], capture_output=True, text=True, env=_env(),
                          timeout=120)


def test_each_task_writes_one_result(array):
    assert array["codes"] == [0, 0, 0, 0], [t.stderr.read() for t in array["tasks"]]
    assert sorted(p.name for p in array["results"].glob("*.json")) == [f"{n}.json" for n in sorted(EXPECTED)]


def test_merge_builds_the_gradebook_of_the_whole_folder(array):
    (array["root"] / "merged").mkdir(exist_ok=True)
    done = _merge(array)
    assert done.returncode == 0, done.stderr
    merged = json.loads((array["root"] / "merged" / "all.json").read_text())
    assert {name: r["score"] for name, r in merged.items()} == EXPECTED
    rows = {r["submission"]: r for r in csv.DictReader(open(array["root"] / "merged" / "grades.csv"))}
    assert rows["d_wrong_answer"]["test-answer"] == "0" and rows["d_wrong_answer"]["total"] == "5"
    assert (array["root"] / "merged" / "feedback" / "b_partial.md").exists()


def test_a_lost_task_is_a_row_that_says_so_and_a_failing_merge(array):
    moved = array["root"] / "c_blank.json"
    shutil.move(array["results"] / "c_blank.json", moved)
    try:
        done = _merge(array)
    finally:
        shutil.move(moved, array["results"] / "c_blank.json")
    assert done.returncode == 1 and "missing: c_blank" in done.stdout
    merged = json.loads((array["root"] / "merged" / "all.json").read_text())
    assert merged["c_blank"]["error"] == "no result: its grading job did not finish"


def test_a_task_index_outside_the_folder_is_a_grader_error(array):
    done = subprocess.run(["bash", str(JOBS / "grade-array.sh"), str(array["subs"]), str(array["results"])],
                          env=_env(TASK_INDEX="4"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "has 4 notebooks (0..3)" in done.stderr


def test_the_scheduler_files_call_the_same_script():
    script = (JOBS / "grade-array.sh").read_text()
    assert "#SBATCH" in script and "SLURM_ARRAY_TASK_ID" in script and "JOB_COMPLETION_INDEX" in script
    job = (JOBS / "k8s-indexed-job.yaml").read_text()
    assert "completionMode: Indexed" in job and '"prunekit/grade/jobs/grade-array.sh"' in job
