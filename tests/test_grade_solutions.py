"""Every real exercise, graded for real: the solution gets full marks, the generated exercise 0,
and other students' answers (``grader_fixtures/variants*.py``: correct ones written differently,
wrong and forged ones) get exactly the tasks they deserve.

Two properties are checked on top of the variants' own answers:

* **independent of the student's random numbers**: every correct variant also draws random
  numbers (torch, NumPy, ``random``) before and after each of its functions; it must still get
  full marks, so no test depends on how many random numbers the student's code used;
* **every asserted property is recorded**: a variant marked ``strip_asserts`` runs with an
  IPython AST transformer that deletes every ``assert`` and ``raise AssertionError`` in the
  cells that follow (the tests included); it must lose exactly its wrong tasks all the same.

Running a solution twice (once for the expected values, once as a submission) also proves its
recorded values are reproducible; a value that changed between runs would cost students points.
Expected values are cached by content hash in ``.cache/prunekit-grade`` (the grader's own cache).

``PRUNEKIT_GRADE_ONLY=ex03,ex07`` grades only the exercises whose names start with those prefixes
(and their variants): a quicker run while working on a few exercises; ``make test`` grades all.
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).parent / "grader_fixtures"))
import tiny  # noqa: E402
from variants import VARIANTS  # noqa: E402

from prunekit.grade import cells  # noqa: E402
from prunekit.grade.batch import grade_paths  # noqa: E402
from prunekit.grade.catalog import load_catalog  # noqa: E402
from prunekit.grade.generate import make_exercise, render  # noqa: E402
from prunekit.grade.limits import Limits  # noqa: E402
from prunekit.grade.sandbox import resolve_limits  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ONLY = tuple(p for p in os.environ.get("PRUNEKIT_GRADE_ONLY", "").split(",") if p)
SOLUTIONS = sorted(p for p in (REPO / "solutions").glob("*.ipynb") if p.stem.startswith(ONLY or ("",)))
GRADED = sorted(name for name, v in VARIANTS.items() if v.exercise.startswith(ONLY or ("",)))
CACHE = REPO / ".cache" / "prunekit-grade"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SOLUTIONS, reason="no solution notebooks yet")]

STRIP_CHECKS = '''import ast as _ast


class _NoChecks(_ast.NodeTransformer):
    """Deletes every assert and `raise AssertionError` of the cells that run after this one."""

    def visit_Assert(self, node):
        return _ast.Pass()

    def visit_Raise(self, node):
        exc = node.exc.func if isinstance(node.exc, _ast.Call) else node.exc
        return _ast.Pass() if isinstance(exc, _ast.Name) and exc.id == "AssertionError" else node


get_ipython().ast_transformers.append(_NoChecks())
'''

HUNGRY = '''

import functools as _functools
import random as _random

import numpy as _np
import torch as _torch


def _hungry(function):
    """The same function, drawing random numbers before and after it runs."""
    @_functools.wraps(function)
    def wrapper(*args, **kwargs):
        _torch.rand(7), _np.random.rand(3), _random.random()
        result = function(*args, **kwargs)
        _torch.randn(5)
        return result
    return wrapper


_torch.rand(11)
'''


def hungry(source: str) -> str:
    """``source`` with every top-level function wrapped by ``_hungry``, and a draw at the end."""
    names = [node.name for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)]
    return source + HUNGRY + "".join(f"{name} = _hungry({name})\n" for name in names)


def variant_notebook(name: str) -> nbformat.NotebookNode:
    variant = VARIANTS[name]
    solution = nbformat.read(REPO / "solutions" / f"{variant.exercise}.ipynb", as_version=4)
    code = {cells.grade_id(c): c.source for c in solution.cells
            if cells.kind(c) == "solution" and c.cell_type == "code"}
    sources = {**code, **variant.sources}
    if not variant.lost:  # a correct answer must not depend on the random numbers it draws
        sources = {gid: hungry(src) if gid in code else src for gid, src in sources.items()}
    if variant.strip_asserts:
        first = next(cells.grade_id(c) for c in solution.cells if cells.kind(c) == "solution")
        sources[first] = STRIP_CHECKS + sources[first]
    return tiny.with_solutions(solution, sources)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("submissions")
    for path in SOLUTIONS:
        (folder / f"solution-{path.stem}.ipynb").write_bytes(path.read_bytes())
        exercise = make_exercise(nbformat.read(path, as_version=4))
        (folder / f"exercise-{path.stem}.ipynb").write_text(render(exercise))
    for name in GRADED:
        (folder / f"variant-{name}.ipynb").write_text(nbformat.writes(variant_notebook(name)))
    catalog = load_catalog(REPO / "solutions")
    limits = resolve_limits(Limits(cell_timeout=120, total_timeout=600), "auto", CACHE)
    graded, problems = grade_paths(sorted(folder.glob("*.ipynb")), catalog, limits, jobs=2, cache_dir=CACHE)
    assert problems == []
    return dict(graded)


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_solution_gets_full_marks(results, path):
    result = results[f"solution-{path.stem}"]
    failed = {t.grade_id: t.message for t in result.tasks if not t.passed}
    assert failed == {} and result.error == ""
    assert result.exercise == path.stem and result.score == result.max_score > 0
    assert result.notes == []  # the instructor's own cells are not "cells you added"


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_generated_exercise_gets_exactly_zero(results, path):
    result = results[f"exercise-{path.stem}"]
    assert result.exercise == path.stem and result.error == ""
    assert [t.score for t in result.tasks] == [0.0] * len(result.tasks)
    assert all(t.message == "NotImplementedError: task not attempted" for t in result.tasks), \
        {t.grade_id: t.message for t in result.tasks}


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_every_exercise_has_a_correct_alternative_and_a_wrong_answer(path):
    mine = [v for v in VARIANTS.values() if v.exercise == path.stem]
    assert any(not v.lost for v in mine), f"add a correct answer written differently to variants_*.py for {path.stem}"
    assert any(v.lost for v in mine), f"add a wrong answer that must lose points to variants_*.py for {path.stem}"


@pytest.mark.parametrize("name", GRADED)
def test_other_answers_get_exactly_the_tasks_they_deserve(results, name):
    variant, result = VARIANTS[name], results[f"variant-{name}"]
    assert result.exercise == variant.exercise and result.error == ""
    unknown = set(variant.lost) - {t.grade_id for t in result.tasks}
    assert not unknown, f"variant names tasks the exercise does not have: {unknown}"
    got = {t.grade_id: t.score for t in result.tasks}
    want = {t.grade_id: 0.0 if t.grade_id in variant.lost else t.max_score for t in result.tasks}
    assert got == want, (variant.why, {t.grade_id: t.message for t in result.tasks})
    for task in result.tasks:
        if task.grade_id in variant.lost and variant.message:
            assert variant.message in task.message, (task.grade_id, task.message)
