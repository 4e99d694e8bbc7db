"""Every real exercise, graded for real: the solution gets full marks, the generated exercise 0,
and other students' answers (``grader_fixtures/variants.py``: correct ones written differently,
wrong and forged ones) get exactly the tasks they deserve.

Running a solution twice (once for the expected values, once as a submission) also proves its
recorded values are reproducible; a value that changed between runs would cost students points.
Expected values are cached by content hash in ``.cache/prunekit-grade`` (the grader's own cache).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).parent / "grader_fixtures"))
import tiny  # noqa: E402
from variants import VARIANTS  # noqa: E402

from prunekit.grade.batch import grade_paths, resolve_limits  # noqa: E402
from prunekit.grade.catalog import load_catalog  # noqa: E402
from prunekit.grade.generate import make_exercise, render  # noqa: E402
from prunekit.grade.runner import Limits  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((REPO / "solutions").glob("*.ipynb"))
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SOLUTIONS, reason="no solution notebooks yet")]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("submissions")
    for path in SOLUTIONS:
        (folder / f"solution-{path.stem}.ipynb").write_bytes(path.read_bytes())
        exercise = make_exercise(nbformat.read(path, as_version=4))
        (folder / f"exercise-{path.stem}.ipynb").write_text(render(exercise))
    for name, variant in VARIANTS.items():
        solution = nbformat.read(REPO / "solutions" / f"{variant.exercise}.ipynb", as_version=4)
        (folder / f"variant-{name}.ipynb").write_text(nbformat.writes(tiny.with_solutions(solution, variant.sources)))
    catalog = load_catalog(REPO / "solutions")
    limits = resolve_limits(Limits(cell_timeout=120, total_timeout=600))
    graded, problems = grade_paths(sorted(folder.glob("*.ipynb")), catalog, limits, jobs=2,
                                   cache_dir=REPO / ".cache" / "prunekit-grade")
    assert problems == []
    return dict(graded)


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_solution_gets_full_marks(results, path):
    result = results[f"solution-{path.stem}"]
    failed = {t.grade_id: t.message for t in result.tasks if not t.passed}
    assert failed == {} and result.error == ""
    assert result.exercise == path.stem and result.score == result.max_score > 0


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_generated_exercise_gets_exactly_zero(results, path):
    result = results[f"exercise-{path.stem}"]
    assert result.exercise == path.stem and result.error == ""
    assert [t.score for t in result.tasks] == [0.0] * len(result.tasks)
    assert all(t.message == "NotImplementedError: task not attempted" for t in result.tasks), \
        {t.grade_id: t.message for t in result.tasks}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_other_answers_get_exactly_the_tasks_they_deserve(results, name):
    variant, result = VARIANTS[name], results[f"variant-{name}"]
    assert result.exercise == variant.exercise and result.error == ""
    unknown = set(variant.lost) - {t.grade_id for t in result.tasks}
    assert not unknown, f"variant names tasks the exercise does not have: {unknown}"
    got = {t.grade_id: t.score for t in result.tasks}
    want = {t.grade_id: 0.0 if t.grade_id in variant.lost else t.max_score for t in result.tasks}
    assert got == want, (variant.why, {t.grade_id: t.message for t in result.tasks})
    for task in result.tasks:
        if task.grade_id in variant.lost:
            assert variant.message in task.message, (task.grade_id, task.message)
