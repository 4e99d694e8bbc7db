"""Every real exercise, graded for real: the solution gets full marks, the generated exercise 0.

Running a solution twice (once for the expected values, once as a submission) also proves its
recorded values are reproducible; a value that changed between runs would cost students points.
Expected values are cached by content hash in ``.cache/prunekit-grade`` (the grader's own cache).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from prunekit.grade.batch import grade_paths, resolve_limits
from prunekit.grade.catalog import load_catalog
from prunekit.grade.generate import make_exercise, render
from prunekit.grade.runner import Limits

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
