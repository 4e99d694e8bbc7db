"""The CPU's kernel set, end to end: the choice the grader is started with reaches every kernel,
and a reference is made (and matched) with the same kernels as the students' runs.

``ATEN_CPU_CAPABILITY=default`` makes torch use its scalar kernels instead of AVX2 / AVX-512 ones
(the cheap way to see "another machine" on this one). Set in the grader's environment, it must
reach the sandboxed kernels through ``--clearenv``, change the reference's cache key (a reference
computed with AVX-512 kernels must not be reused), and a solution graded under it must still get
full marks. Real kernels: about a minute.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import pytest

from prunekit.grade import reference, sandbox
from prunekit.grade.batch import grade_paths
from prunekit.grade.catalog import load_catalog
from prunekit.grade.limits import Limits
from prunekit.grade.machine import KERNEL_SELECTION
from prunekit.grade.runner import run_notebook

REPO = Path(__file__).resolve().parents[1]
EXERCISE = "ex05_dependency_groups"  # fast, and its records hold forward passes of pruned ResNets
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("bwrap") is None and not IN_CI,
                                                   reason="bubblewrap is not installed (make sandbox-deps)")]

CAPABILITY = "import torch\nprint(torch.backends.cpu.get_cpu_capability())"


@pytest.fixture
def scalar_kernels(monkeypatch):
    """The grader started with ATEN_CPU_CAPABILITY=default and no other override."""
    for name in KERNEL_SELECTION:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")


def _capability(limits: Limits) -> str:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CAPABILITY)])
    (run,) = run_notebook(nb, limits)
    assert run.status == "ok", (run.ename, run.evalue, run.detail)
    return nb.cells[0].outputs[0]["text"].strip()


def test_the_kernel_runs_the_kernels_the_grader_was_told_to(scalar_kernels):
    box = sandbox.resolve("bwrap")
    assert _capability(Limits(cell_timeout=60, sandbox=box)) == "DEFAULT"
    assert _capability(Limits(cell_timeout=60, sandbox=sandbox.Sandbox("none"))) == "DEFAULT"


def test_a_solution_graded_with_scalar_kernels_gets_full_marks(scalar_kernels, tmp_path, monkeypatch):
    """The reference is made afresh with the scalar kernels (its key differs from the one the
    machine's own kernels get) and the solution, graded with them too, keeps every point."""
    catalog = load_catalog(REPO / "solutions")
    exercise = catalog[EXERCISE]
    limits = sandbox.resolve_limits(Limits(cell_timeout=120, total_timeout=600), "bwrap", tmp_path / "state")
    scalar_path = reference.cache_path(exercise, tmp_path / "cache", limits)
    with monkeypatch.context() as native:
        native.delenv("ATEN_CPU_CAPABILITY")
        assert reference.cache_path(exercise, tmp_path / "cache", limits) != scalar_path
    submission = tmp_path / "subs" / "alice.ipynb"
    submission.parent.mkdir()
    submission.write_bytes(exercise.path.read_bytes())
    (graded,), problems = grade_paths([submission], catalog, limits, jobs=1, cache_dir=tmp_path / "cache")
    assert problems == [] and scalar_path.exists()
    name, result = graded
    assert {t.grade_id: t.message for t in result.tasks if not t.passed} == {}
    assert result.error == "" and result.score == result.max_score > 0
