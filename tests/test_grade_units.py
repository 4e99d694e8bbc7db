"""Fast tests of the grader's parts (no kernels): records, comparison, markers, generation,
the test-cell contract, reseeding, exercise identification, assembly, scoring messages, the
sandbox's command line and fallbacks, the installed copy, reference keys, reports, merging, the
CLI's exit codes -- and, under `make test`, nbgrader's own tools on our notebooks."""

from __future__ import annotations

import copy
import csv
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "grader_fixtures"))
import tiny  # noqa: E402

from prunekit.grade import RECORD_MIME, assemble, batch, cells, contract, record, reference, report  # noqa: E402
from prunekit.grade import machine, sandbox, score  # noqa: E402
from prunekit.grade.catalog import identify, load_catalog, load_exercise  # noqa: E402
from prunekit.grade.compare import values_match  # noqa: E402
from prunekit.grade.generate import NBVAL_MARKER, generate, make_exercise, render  # noqa: E402
from prunekit.grade.kernel import records, seeding  # noqa: E402
from prunekit.grade.limits import Limits, SubmissionError  # noqa: E402
from prunekit.grade.results import GradeResult, TaskResult  # noqa: E402
from prunekit.grade.runner import CellRun  # noqa: E402
from prunekit.grade.sandbox import install  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((REPO / "solutions").glob("*.ipynb"))


# ---------------------------------------------------------------- records and comparison
def test_record_is_a_no_op_outside_the_grader(monkeypatch):
    monkeypatch.delenv(records.GRADING_ENV, raising=False)
    value = torch.ones(2)
    assert record("k", value) is value


def test_record_emits_one_display_with_the_encoded_value(monkeypatch):
    shown = []
    monkeypatch.setenv(records.GRADING_ENV, "1")
    monkeypatch.setattr("IPython.display.display", lambda obj, raw: shown.append((obj, raw)))
    assert record("scores", torch.tensor([1.5, float("nan")]), atol=0.1).shape == (2,)
    assert shown == [({RECORD_MIME: {"key": "scores", "rtol": None, "atol": 0.1, "value": {
        "__array__": "float", "shape": [2], "data": [1.5, "nan"]}}}, True)]
    record("ratio", 0.5, hint="the largest ratio within budget")
    assert shown[-1][0][RECORD_MIME]["hint"] == "the largest ratio within budget"


def test_encode_keeps_types_apart():
    assert records.encode([1, 1.0, True, None, "s", (2,)]) == [1, {"__float__": 1.0}, True, None, "s", [2]]
    assert records.encode(np.int64(3)) == {"__array__": "int", "shape": [], "data": [3]}
    assert records.encode({"a": torch.tensor([[True]])}) == {
        "a": {"__array__": "bool", "shape": [1, 1], "data": [True]}}
    with pytest.raises(TypeError, match="cannot encode a object"):
        records.encode(object())
    with pytest.raises(ValueError, match="too many"):
        records.encode(torch.zeros(records.MAX_ELEMENTS + 1))


@pytest.mark.parametrize("expected, actual, ok", [
    (3, 3, True), (3, 4, False), (True, 1, False), (3, {"__float__": 3.0}, True), (3, {"__float__": 3.5}, False),
    ("a", "a", True),
    ({"__float__": 1.0}, {"__float__": 1.0 + 1e-6}, True), ({"__float__": 1.0}, {"__float__": 1.01}, False),
    ({"__float__": "nan"}, {"__float__": "nan"}, True), ({"__float__": "inf"}, {"__float__": 1e308}, False),
    ([1, 2], [1, 2, 3], False), ({"a": 1}, {"a": 1, "b": 2}, False), ({"a": 1}, {"a": 1}, True),
    (None, None, True), ([1], "garbage", False), ({"__float__": 1.0}, {"__float__": [1]}, False),
])
def test_values_match_rules(expected, actual, ok):
    assert values_match(expected, actual) is ok


def test_tensor_and_array_with_the_same_numbers_match_but_shapes_must_agree():
    t = records.encode(torch.tensor([[1.0, 2.0]]))
    assert values_match(t, records.encode(np.array([[1.0, 2.0 + 1e-7]])))
    assert not values_match(t, records.encode(np.array([1.0, 2.0])))
    assert not values_match(t, records.encode(np.array([[1, 2]])))  # int vs float is a different answer
    assert values_match(records.encode(0.5), records.encode(0.56), atol=0.1)


# ---------------------------------------------------------------- markers and generation
def test_strip_solution_keeps_indentation_and_code_around():
    src = "def f(x):\n    y = 1\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\nz = 2"
    assert cells.strip_solution(src) == ("def f(x):\n    y = 1\n    # YOUR CODE HERE\n"
                                         "    raise NotImplementedError()\nz = 2")
    assert cells.strip_solution("x = 1") == "# YOUR CODE HERE\nraise NotImplementedError()"
    with pytest.raises(cells.MarkerError, match="never closed"):
        cells.strip_solution("### BEGIN SOLUTION\nx = 1")


def test_strip_hidden_tests_and_hidden_line_numbers():
    src = "assert a\n### BEGIN HIDDEN TESTS\nassert b\n### END HIDDEN TESTS\nassert c"
    assert cells.strip_hidden_tests(src) == "assert a\nassert c"
    assert cells.hidden_line_numbers(src) == {2, 3, 4}


def test_exercise_has_no_answers_no_hidden_tests_no_outputs():
    solution = tiny.tiny_solution()
    solution.cells[2].outputs = [nbformat.v4.new_output("stream", text="hi")]
    solution.cells[2].execution_count = 7
    text = render(make_exercise(solution))
    assert "return 2 * x" not in text and "HIDDEN" not in text and "double_list" not in text
    assert "raise NotImplementedError()" in text and '"hi"' not in text and "7" not in text.split("points")[0][-40:]
    assert text == render(make_exercise(tiny.tiny_solution()))  # nothing random (cell ids, order)
    assert solution.cells[2].execution_count == 7  # the input is not modified


def test_exercise_runs_past_unfinished_tasks_and_hides_nbval_markers():
    """Run All must reach every visible test: unfinished tasks raise, and the run goes on."""
    from nbclient import NotebookClient

    solution = tiny.tiny_solution()
    solution.cells[-1].source = "# NBVAL_CHECK_OUTPUT\n" + solution.cells[-1].source
    exercise = make_exercise(solution)
    assert "NBVAL" not in render(exercise)
    NotebookClient(exercise, timeout=60, kernel_name="python3").execute()  # no CellExecutionError
    ran = [c for c in exercise.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in ran), "a cell after the first unfinished task never ran"
    assert any(o.get("ename") == "NotImplementedError" for c in ran for o in c.outputs)


def test_markers_outside_solution_cells_are_refused():
    nb = tiny.tiny_solution()
    nb.cells[1].source += "\n### BEGIN SOLUTION\nsecret = 1\n### END SOLUTION"
    with pytest.raises(cells.MarkerError, match="cell 1 .*leak"):
        make_exercise(nb)


def test_generate_is_byte_identical_and_check_reports_changes(tmp_path):
    tiny.write_solutions(tmp_path / "sol")
    assert len(generate(tmp_path / "sol", tmp_path / "ex")) == 2
    first = (tmp_path / "ex" / "ex90_tiny.ipynb").read_bytes()
    assert generate(tmp_path / "sol", tmp_path / "ex") == []
    assert (tmp_path / "ex" / "ex90_tiny.ipynb").read_bytes() == first
    (tmp_path / "ex" / "ex90_tiny.ipynb").write_text("stale")
    assert generate(tmp_path / "sol", tmp_path / "ex", check=True) == [tmp_path / "ex" / "ex90_tiny.ipynb"]


@pytest.mark.skipif(not SOLUTIONS, reason="no solution notebooks yet")
def test_exercises_folder_is_up_to_date_with_solutions(tmp_path):
    generate(REPO / "solutions", tmp_path)
    for path in SOLUTIONS:
        committed = REPO / "exercises" / path.name
        assert committed.exists(), f"{committed} missing: run `make exercises`"
        assert committed.read_bytes() == (tmp_path / path.name).read_bytes(), (
            f"{committed} is stale: run `make exercises`")


@pytest.mark.skipif(not SOLUTIONS, reason="no solution notebooks yet")
@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_solution_notebooks_follow_the_grading_contract(path):
    exercise = load_exercise(path)
    assert exercise.name == path.stem, "metadata.prunekit.exercise must equal the file name"
    assert exercise.solution_ids, "no solution cells"
    assert contract.problems(exercise.notebook) == []


def _test_cell(source: str):
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True, "grade_id": "t", "points": 1.0,
                                 "schema_version": 3}
    return cell


@pytest.mark.parametrize("hidden, found", [
    ("assert g == [['a', 'b'], ['c']]", True),                 # a literal answer, liftable
    ("want = [False] * 4 + [True] * 6\nassert got == want", True),
    ("assert abs(s2 - 0.4) < 1e-12", True),
    ("assert out == {'dense': 36864 * 8 + 129 * 4}", True),
    ("assert f(x) == 0.75", True),
    ("assert torch.allclose(s2, ref(c2))", False),             # computed: nothing to lift
    ("assert (out - ref).abs().max() < 1e-5", False),          # a tolerance is not an answer
    ("assert len(groups) == 3 and s.shape == (6,)", False),    # sizes and counts stay allowed
    ("record('x', g, hint='ties: lower index first')", False),
])
def test_the_contract_finds_expected_values_in_hidden_tests(hidden, found):
    source = f"x = 1\nrecord('v', x)\n### BEGIN HIDDEN TESTS\n{hidden}\n### END HIDDEN TESTS"
    nb = nbformat.v4.new_notebook()
    nb.cells = [_test_cell(source)]
    assert bool(contract.problems(nb)) is found
    nb.cells = [_test_cell(source.replace("### BEGIN HIDDEN TESTS\n", "").replace("\n### END HIDDEN TESTS", ""))]
    assert contract.problems(nb) == []  # visible tests may show their expected values


def test_the_contract_wants_points_and_a_record():
    nb = nbformat.v4.new_notebook()
    nb.cells = [_test_cell("assert f(1) == 2")]
    nb.cells[0].metadata["nbgrader"]["points"] = 0
    assert contract.problems(nb) == ["t: give the task points", "t: record at least one value the task computed"]


# ---------------------------------------------------------------- reseeding
def test_hidden_markers_become_reseeds_on_the_same_line():
    src = ("x = f()\nif True:\n    ### BEGIN HIDDEN TESTS\n    y = 1\n    ### END HIDDEN TESTS\n"
           "### BEGIN HIDDEN TESTS\nz = 2")
    out = assemble.reseed_hidden_blocks(src + "\n### END HIDDEN TESTS", "test_f").split("\n")
    assert len(out) == len(src.split("\n")) + 1  # line numbers in messages stay right
    assert out[2] == "    " + assemble.reseed_code("test_f#hidden0") + "  # ### BEGIN HIDDEN TESTS"
    assert out[5].startswith(assemble.reseed_code("test_f#hidden1"))
    compile("\n".join(out), "cell", "exec")


def test_a_reseed_makes_the_next_draws_independent_of_earlier_ones():
    import numpy as np

    def draws():
        return torch.rand(3).tolist(), np.random.rand(2).tolist(), random.random()

    seeding.reseed("test_x")
    first = draws()
    torch.rand(100), np.random.rand(7), random.random()  # a student's code drew more numbers
    seeding.reseed("test_x")
    assert draws() == first
    assert seeding.seed_for("test_x") != seeding.seed_for("test_y")


# ---------------------------------------------------------------- identification and assembly
@pytest.fixture()
def catalog(tmp_path):
    return load_catalog(tiny.write_solutions(tmp_path / "sol"))


def test_identify_by_metadata_then_by_solution_cells(catalog):
    nb = tiny.tiny_solution()
    assert identify(nb, catalog).name == "ex90_tiny"
    del nb.metadata["prunekit"]
    assert identify(nb, catalog).name == "ex90_tiny"
    nb.cells = [c for c in nb.cells if cells.kind(c) != "solution"]
    with pytest.raises(SubmissionError, match="cannot tell which exercise"):
        identify(nb, catalog)


def test_identify_rejects_another_exercise_when_one_is_expected(catalog):
    with pytest.raises(SubmissionError, match="is exercise 'ex91_other', not 'ex90_tiny'"):
        identify(tiny.other_solution(), catalog, expected="ex90_tiny")


def test_assembly_reseeds_before_tests_hides_them_from_history_and_skips_trailing_cells(tmp_path):
    solution = tiny.tiny_solution()
    solution.cells.append(nbformat.v4.new_code_cell("print('a demo after the last test')"))
    nbformat.write(solution, tmp_path / "ex90_tiny.ipynb")
    exercise = load_exercise(tmp_path / "ex90_tiny.ipynb")
    nb, steps, notes = assemble.assemble(exercise, make_exercise(solution))
    assert [s.kind for s in steps][-2:] == ["test", "skip"] and nb.cells[-1].source == ""
    options = assemble.run_options(steps)
    tests = [i for i, s in enumerate(steps) if s.kind == "test"]
    assert options.private == set(tests)
    assert options.preludes == {i: assemble.reseed_code(steps[i].grade_id) for i in tests}
    assert assemble.reseed_code("test-double#hidden0") in nb.cells[2].source
    assert notes == []  # the instructor's own cells, unlabelled ones included, are not "cells you added"


def test_assembly_takes_tests_from_the_solution_and_only_solution_cells_from_the_submission(catalog):
    exercise = catalog["ex90_tiny"]
    sub = tiny.with_solutions(tiny.tiny_solution(), {"tiny-double": "def double(x):\n    return x * 2",
                                                      "test-double": "pass", "setup": "import os"})
    sub.cells.append(nbformat.v4.new_code_cell("def helper(): pass"))
    nb, steps, notes = assemble.assemble(exercise, sub)
    sources = [c.source for c in nb.cells]
    assert sources[1] == "def double(x):\n    return x * 2"
    assert sources[0].startswith("import torch") and "BEGIN HIDDEN TESTS" in sources[2]
    assert [s.kind for s in steps] == ["locked", "solution", "test", "solution", "test", "solution", "test"]
    assert notes == ["1 code cell(s) you added were not run: only the solution cells (marked YOUR CODE HERE) "
                     "are graded, so keep helpers inside them"]


# ---------------------------------------------------------------- scoring messages
def _steps():
    test_src = "assert f(1) == 2, 'f(1) should be 2'\n### BEGIN HIDDEN TESTS\nassert f(2) == 4\n### END HIDDEN TESTS"
    return [assemble.Step("solution", "sol-f", "sol-f"),
            assemble.Step("test", "test-f", "test-f", test_src, points=2.0)]


def _tb(line: int) -> list[str]:
    return ["\x1b[0;31mAssertionError\x1b[0m  Traceback",
            f"Cell \x1b[0;32mIn[3], line {line}\x1b[0m\n----> {line} assert"]


@pytest.mark.parametrize("test_run, message", [
    (CellRun(1, "ok", records=[{"key": "k", "value": 2}]), "passed"),
    (CellRun(1, "ok", records=[{"key": "k", "value": 3}]), "value of 'k' differs from the expected result"),
    (CellRun(1, "ok", records=[{"key": "k", "value": 2}, {"key": "k", "value": 3}]),
     "value of 'k' differs from the expected result"),
    (CellRun(1, "ok"), "value of 'k' was not recorded (the test did not reach it)"),
    (CellRun(1, "error", "AssertionError", "f(1) should be 2", _tb(1)),
     "AssertionError: f(1) should be 2 (in test line 1: `assert f(1) == 2, 'f(1) should be 2'`)"),
    (CellRun(1, "error", "AssertionError", "", _tb(3)), "AssertionError (in a hidden test)"),
    (CellRun(1, "error", "NotImplementedError", ""), "NotImplementedError: task not attempted"),
    (CellRun(1, "timeout", detail="timed out after 5 s"), "timed out after 5 s while running the tests"),
])
def test_task_messages(test_run, message):
    (task,) = score.score(_steps(), [CellRun(0, "ok"), test_run], {"test-f": [{"key": "k", "value": 2}]})
    assert task.message == message
    assert task.score == (2.0 if message == "passed" else 0.0)


def test_a_hint_recorded_by_the_solution_is_the_message():
    expected = {"test-f": [{"key": "k", "value": 2, "hint": "ties: lower index first"}]}
    (task,) = score.score(_steps(), [CellRun(0, "ok"), CellRun(1, "ok", records=[
        {"key": "k", "value": 3, "hint": "the student's own hint is ignored"}])], expected)
    assert task.message == "value of 'k' differs from the expected result: ties: lower index first"


def test_a_dependency_failure_is_named_in_the_message():
    runs = [CellRun(0, "error", "SyntaxError", "invalid syntax"),
            CellRun(1, "error", "NameError", "name 'f' is not defined")]
    (task,) = score.score(_steps(), runs, {})
    assert task.message == ("SyntaxError: invalid syntax in your code ('sol-f'); "
                            "then the test failed: NameError: name 'f' is not defined")


def test_reports_have_the_documented_shape(tmp_path):
    result = GradeResult("ex", 2.0, 3.0, [
        TaskResult("t1", 2.0, 2.0, True, "passed"),
        TaskResult("t2", 0.0, 1.0, False, "AssertionError: a|b")])
    report.write_gradebook(tmp_path / "g.csv", [("alice", result)], ["t1", "t2"])
    assert list(csv.DictReader(open(tmp_path / "g.csv"))) == [
        {"submission": "alice", "exercise": "ex", "t1": "2", "t2": "0", "total": "2", "max_score": "3", "error": ""}]
    assert set(result.as_dict()) == {"exercise", "score", "max_score", "tasks"}
    md = report.feedback_markdown("alice", result)
    assert "**Score: 2 / 3**" in md and "failed: AssertionError: a\\|b" in md
    result.notes.append("a note")
    assert GradeResult.from_dict(json.loads(json.dumps(result.as_dict()))) == result


def test_merge_reads_results_and_names_missing_ones(tmp_path, capsys):
    from prunekit.grade.merge import main as merge

    result = GradeResult("ex", 1.0, 2.0, [TaskResult("t1", 1.0, 2.0, False, "x")])
    (tmp_path / "res").mkdir()
    report.write_json(result, tmp_path / "res" / "alice.json")
    (tmp_path / "res" / "broken.json").write_text("{ not json")
    (tmp_path / "subs").mkdir()
    for name in ("alice", "bob"):
        (tmp_path / "subs" / f"{name}.ipynb").write_text("{}")
    assert merge([str(tmp_path / "res"), "--submissions", str(tmp_path / "subs"), "--json", str(tmp_path / "all.json"),
                  "--gradebook", str(tmp_path / "g.csv")]) == 1
    merged = json.loads((tmp_path / "all.json").read_text())
    assert merged["alice"]["score"] == 1.0 and "unreadable result file" in merged["broken"]["error"]
    assert merged["bob"]["error"] == "no result: its grading job did not finish"
    assert "missing: bob" in capsys.readouterr().out


# ---------------------------------------------------------------- the sandbox's command line
def test_the_box_binds_no_repository_and_shares_no_namespace(tmp_path):
    box = sandbox.Sandbox("bwrap", site=str(tmp_path / "site"), bwrap="/usr/bin/bwrap", setpriv="/usr/bin/setpriv")
    (tmp_path / "run").mkdir()
    ipc = sandbox.prepare_ipc(tmp_path / "run", None)
    argv = sandbox.bwrap_argv(box, ipc, 2000007, [], outbox=tmp_path / "run" / "outbox")
    for flag in ("--unshare-pid", "--unshare-net", "--unshare-ipc", "--die-with-parent", "--new-session", "--clearenv"):
        assert flag in argv
    binds = {argv[i + 2]: (argv[i], argv[i + 1]) for i, a in enumerate(argv[:-2])
             if a in ("--bind", "--ro-bind", "--ro-bind-try")}
    writable = sorted(dest for dest, (how, _) in binds.items() if how == "--bind")
    assert writable == sorted([str(ipc), sandbox.OUTBOX])
    venv = (REPO / ".venv").resolve()
    for dest, (_, src) in binds.items():
        inside_repo = Path(src).resolve().is_relative_to(REPO)
        assert not inside_repo or Path(src).resolve().is_relative_to(venv), f"{src} -> {dest} exposes the repository"
    assert binds[sandbox.SITE][1] == box.site
    tail = argv[argv.index("--") + 1:]
    assert tail[:4] == ["/usr/bin/setpriv", "--reuid=2000007", "--regid=2000007", "--clear-groups"]
    assert "--no-new-privs" in tail and "--bounding-set=-all" in tail
    env = {argv[i + 1]: argv[i + 2] for i, a in enumerate(argv) if a == "--setenv"}  # after --clearenv: all of it
    assert env == sandbox.kernel_env(2000007) and env["PYTHONPATH"] == sandbox.SITE
    unprivileged = sandbox.bwrap_argv(box, ipc, None, [])  # a grader that is not root: a user namespace
    assert "--unshare-user" in unprivileged and unprivileged[-1] == "--" and "/usr/bin/setpriv" not in unprivileged


def test_no_bwrap_is_an_error_in_ci_and_a_warning_elsewhere(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sandbox.box.shutil, "which", lambda name: None)
    with pytest.raises(sandbox.SandboxUnavailable, match="apt-get install bubblewrap"):
        sandbox.resolve("auto", tmp_path, ci=True)
    with pytest.raises(sandbox.SandboxUnavailable):
        sandbox.resolve("bwrap", tmp_path, ci=False)
    assert sandbox.resolve("auto", tmp_path, ci=False) == sandbox.Sandbox("none")
    assert "WARNING" in capsys.readouterr().err
    assert sandbox.resolve("none", tmp_path, ci=True) == sandbox.Sandbox("none")  # asked for: trusted notebooks


def test_the_cli_refuses_to_grade_without_the_sandbox_in_ci(tmp_path, monkeypatch, capsys):
    from prunekit.grade.__main__ import main

    monkeypatch.setattr(sandbox.box.shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    tiny.write_solutions(tmp_path / "sol")
    nbformat.write(tiny.tiny_solution(), tmp_path / "a.ipynb")
    assert main([str(tmp_path / "a.ipynb"), "--solutions", str(tmp_path / "sol"), "--cache-dir", str(tmp_path)]) == 2
    assert "bubblewrap sandbox cannot run here" in capsys.readouterr().err


def test_the_installed_copy_is_the_package_and_nothing_else(tmp_path):
    site = install.installed_copy(tmp_path)
    assert install.installed_copy(tmp_path) == site  # reused while the library is unchanged
    copied = sorted(p.relative_to(site / "prunekit") for p in (site / "prunekit").rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts)
    assert copied == [p.relative_to(install.PACKAGE) for p in install.package_files()]
    kernel_side = site / "prunekit" / "grade" / "kernel"
    assert (kernel_side / "records.py").exists() and sorted(os.listdir(site)) == ["prunekit"]
    assert list((kernel_side / "__pycache__").glob("records.*.pyc"))  # compiled: the box is read-only


def test_the_reference_key_follows_solution_library_and_versions(tmp_path, monkeypatch):
    exercise = load_exercise(tiny.write_solutions(tmp_path / "sol") / "ex90_tiny.ipynb")
    key = reference.cache_key(exercise)
    monkeypatch.setattr(reference, "runtime_versions", lambda: "python=3.11;torch=9.9;numpy=1.0")
    assert reference.cache_key(exercise) != key
    changed = reference.cache_key(exercise)
    monkeypatch.setattr(reference, "library_digest", lambda: "another library")
    assert reference.cache_key(exercise) not in (key, changed)
    monkeypatch.undo()
    assert reference.runtime_versions().startswith("python=") and ";torch=2." in reference.runtime_versions()


AVX512 = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 106
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
microcode\t: 0xd0003a5
cpu MHz\t\t: 2899.970
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512dq avx512bw avx512vl

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: something else entirely
"""
AVX2 = AVX512.replace(" avx512f avx512dq avx512bw avx512vl", "")
ARM = ("processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd sve2 atomics\n"
       "CPU implementer\t: 0x41\nCPU part\t: 0xd4f\n")


def test_the_cpu_identity_names_the_kernel_set_and_its_overrides(monkeypatch):
    """AVX-512 and AVX2 nodes, an ARM server, the variables that override torch's, oneDNN's and MKL's
    choice: each a different identity. Clock speed and microcode are not part of it."""
    xeon = machine.cpu_identity(AVX512, {})
    assert "model name=Intel(R) Xeon(R) Platinum 8375C" in xeon and "avx512f" in xeon and "microcode" not in xeon
    assert "something else" not in xeon  # the first processor only
    assert machine.cpu_identity(AVX512.replace("2899.970", "1200.001").replace("0xd0003a5", "0xd0003b9"), {}) == xeon
    assert machine.cpu_fields(AVX512)["flags"] == machine.cpu_fields(AVX512.replace("fpu sse", "sse fpu"))["flags"]
    assert machine.cpu_identity(AVX2, {}) != xeon
    assert "Features=asimd atomics fp sve2" in machine.cpu_identity(ARM, {})
    overridden = {name: machine.cpu_identity(AVX512, {name: "default", "OMP_NUM_THREADS": "4"})
                  for name in machine.KERNEL_SELECTION}
    assert len({xeon, *overridden.values()}) == 1 + len(machine.KERNEL_SELECTION)
    assert all("OMP_NUM_THREADS" not in identity for identity in overridden.values())
    monkeypatch.setattr(machine.platform, "machine", lambda: "aarch64")
    assert machine.cpu_identity(AVX512, {}) != xeon
    assert machine.cpu_identity("", {}).startswith("arch=aarch64;processor=")  # no /proc/cpuinfo (macOS)


def test_the_reference_key_follows_the_cpu_s_kernel_set(tmp_path, monkeypatch):
    """A reference made on an AVX-512 node is not reused on an AVX2 node sharing the cache, nor after
    ATEN_CPU_CAPABILITY changes; references of different CPUs live side by side in one cache."""
    exercise = load_exercise(tiny.write_solutions(tmp_path / "sol") / "ex90_tiny.ipynb")
    for name in machine.KERNEL_SELECTION:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(reference, "cpu_identity", lambda: machine.cpu_identity(AVX512))
    avx512 = reference.cache_path(exercise, tmp_path / "cache")
    tag = machine.cpu_tag(machine.cpu_identity(AVX512))
    assert avx512.name.startswith("ex90_tiny-") and avx512.name.endswith(f"-cpu{tag}.json")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    assert reference.cache_path(exercise, tmp_path / "cache") != avx512
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    monkeypatch.setattr(reference, "cpu_identity", lambda: machine.cpu_identity(AVX2))
    avx2 = reference.cache_path(exercise, tmp_path / "cache")
    assert avx2 != avx512
    assert reference.cache_key(exercise) != reference.cache_key(exercise, cpu=machine.cpu_identity(AVX512))
    (tmp_path / "cache").mkdir()
    older = avx2.with_name(avx2.name.replace(avx2.name.split("-")[-2], "0" * 20))  # this CPU, an older solution
    untagged = tmp_path / "cache" / f"ex90_tiny-{'1' * 20}.json"  # the format before CPUs were named
    for path in (avx512, older, untagged):
        path.write_text("{}")
    monkeypatch.setattr(reference, "compute", lambda ex, limits: {"t": [{"value": 1}]})
    assert reference.load_or_compute(exercise, Limits(), tmp_path / "cache") == {"t": [{"value": 1}]}
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted([avx512.name, avx2.name])
    assert json.loads(avx2.read_text())["cpu"] == machine.cpu_identity(AVX2)


def test_the_kernel_gets_the_cpu_kernel_choice_and_nothing_else_of_the_grader_s_environment(tmp_path, monkeypatch):
    for name in machine.KERNEL_SELECTION:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SECRET_TOKEN", "do not pass")
    plain = sandbox.kernel_env(None)
    assert not set(machine.KERNEL_SELECTION) & set(plain) and "SECRET_TOKEN" not in plain
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")
    env = sandbox.kernel_env(2000007)
    assert env == {**plain, "ATEN_CPU_CAPABILITY": "default", "DNNL_MAX_CPU_ISA": "AVX2"}
    _, unboxed = sandbox.unboxed_workdir(tmp_path, [], tmp_path / "outbox")  # --sandbox none: the same choice
    assert unboxed["ATEN_CPU_CAPABILITY"] == "default" and "SECRET_TOKEN" not in unboxed


def test_references_are_made_before_any_submission_runs(tmp_path, monkeypatch):
    events = []
    monkeypatch.setattr(batch.reference, "load_or_compute",
                        lambda ex, limits, cache: events.append(("reference", ex.name)) or {})
    monkeypatch.setattr(batch, "grade_one", lambda path, ex, ref, limits: events.append(("grade", path.stem))
                        or GradeResult(ex.name, 0.0, 1.0, []))
    catalog = load_catalog(tiny.write_solutions(tmp_path / "sol"))
    paths = []
    for name, nb in (("a", tiny.tiny_solution()), ("b", tiny.other_solution()), ("c", tiny.tiny_solution())):
        nbformat.write(nb, tmp_path / f"{name}.ipynb")
        paths.append(tmp_path / f"{name}.ipynb")
    batch.grade_paths(paths, catalog, Limits(sandbox=sandbox.Sandbox("none")), jobs=1)
    assert [kind for kind, _ in events] == ["reference", "reference", "grade", "grade", "grade"]


# ---------------------------------------------------------------- the CLI's exit codes
def test_cli_exits_non_zero_when_it_cannot_grade(tmp_path, capsys):
    from prunekit.grade.__main__ import main

    nb = tmp_path / "a.ipynb"
    nbformat.write(tiny.tiny_solution(), nb)
    assert main([str(nb), "--solutions", str(tmp_path / "nowhere")]) == 2
    assert "solutions folder" in capsys.readouterr().err
    tiny.write_solutions(tmp_path / "sol")
    assert main([str(nb), "--solutions", str(tmp_path / "sol"), "--exercise", "ex99"]) == 2
    assert "unknown exercise 'ex99'" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.ipynb"), "--solutions", str(tmp_path / "sol")]) == 2
    assert main([str(tmp_path), "--solutions", str(tmp_path / "sol"), "--task-index", "0"]) == 2
    assert "--task-index needs --json FOLDER" in capsys.readouterr().err


# ---------------------------------------------------------------- nbgrader's own view
@pytest.mark.parametrize("source", [*SOLUTIONS, "tiny"], ids=lambda p: getattr(p, "stem", p))
def test_nbgrader_accepts_the_metadata_and_makes_the_same_exercise(source):
    """nbgrader's validator accepts the cells, and its own preprocessors (ClearSolutions,
    ClearHiddenTests, ClearOutput) produce exactly our exercise sources."""
    if os.environ.get("PRUNEKIT_REQUIRE_NBGRADER") != "1":  # `make test` sets it: no silent skip
        pytest.importorskip("nbgrader", reason="nbgrader is not installed (optional)")
    from nbgrader import utils
    from nbgrader.nbgraderformat import MetadataValidator
    from nbgrader.preprocessors import ClearHiddenTests, ClearOutput, ClearSolutions

    nb = tiny.tiny_solution() if source == "tiny" else nbformat.read(source, as_version=4)
    MetadataValidator().validate_nb(nb)
    for cell in nb.cells:
        assert utils.is_solution(cell) == (cells.kind(cell) == "solution")
        assert utils.is_grade(cell) == (cells.kind(cell) == "test" or cells.is_manual(cell))  # manual: both
    theirs, resources = nbformat.from_dict(nb), {}
    for step in (ClearSolutions(), ClearHiddenTests(), ClearOutput()):
        theirs, resources = step.preprocess(theirs, resources)
    ours = make_exercise(nb)
    # the one step nbgrader does not take: nbval's markers leave the student's code cells
    expected = [NBVAL_MARKER.sub("", c.source) if c.cell_type == "code" else c.source for c in theirs.cells]
    assert [c.source for c in ours.cells] == expected


def _without_nbval_markers(cell) -> str:
    """nbgrader releases code cells as written; ours also drop nbval's markers (the one difference)."""
    return NBVAL_MARKER.sub("", cell.source) if cell.cell_type == "code" else cell.source


def _nbgrader_course(tmp_path_factory, assignment: str, notebook: str, timeout: int):
    """An nbgrader course with one of our exercises: our solution handed in by alice, the released
    notebook (untouched) by bob, autograded and exported; `make test` puts nbgrader on PATH."""
    if os.environ.get("PRUNEKIT_REQUIRE_NBGRADER") != "1":
        pytest.importorskip("nbgrader", reason="nbgrader is not installed (optional)")
    if shutil.which("nbgrader") is None:
        pytest.fail("nbgrader's scripts are not on PATH: run through `make test` / `make nbgrader`")
    course = tmp_path_factory.mktemp(assignment)
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\nc.CourseDirectory.course_id = 'prunekit'\n"
        f"c.CourseDirectory.db_assignments = [dict(name='{assignment}')]\n"
        "c.CourseDirectory.db_students = [dict(id='alice'), dict(id='bob')]\n"
        f"c.ExecutePreprocessor.timeout = {timeout}\n")
    (course / "source" / assignment).mkdir(parents=True)
    shutil.copy(REPO / "solutions" / notebook, course / "source" / assignment)

    def nbgrader(*args):
        done = subprocess.run(["nbgrader", *args], cwd=course, capture_output=True, text=True,
                              timeout=2 * timeout)
        assert done.returncode == 0, done.stderr[-2000:]

    nbgrader("generate_assignment", assignment, "--force")
    for student, path in (("alice", REPO / "solutions" / notebook),
                          ("bob", course / "release" / assignment / notebook)):
        (course / "submitted" / student / assignment).mkdir(parents=True)
        shutil.copy(path, course / "submitted" / student / assignment / notebook)
    nbgrader("autograde", assignment, "--force")
    nbgrader("export", "--to", "grades.csv")
    return course


@pytest.fixture(scope="module")
def nbgrader_course(tmp_path_factory):
    """Exercise 2 in nbgrader."""
    return _nbgrader_course(tmp_path_factory, "ex02", "ex02_l1_norm.ipynb", 300)


def test_nbgrader_generate_assignment_releases_our_exercise(nbgrader_course):
    released = nbformat.read(nbgrader_course / "release" / "ex02" / "ex02_l1_norm.ipynb", as_version=4)
    ours = make_exercise(nbformat.read(REPO / "solutions" / "ex02_l1_norm.ipynb", as_version=4))
    assert [_without_nbval_markers(c) for c in released.cells] == [c.source for c in ours.cells]


def test_nbgrader_autograde_scores_our_solution_full_and_the_blank_notebook_zero(nbgrader_course):
    rows = {r["student_id"]: r for r in csv.DictReader(open(nbgrader_course / "grades.csv"))}
    assert (float(rows["alice"]["score"]), float(rows["alice"]["max_score"])) == (7.0, 7.0)
    assert float(rows["bob"]["score"]) == 0.0


@pytest.fixture(scope="module")
def nbgrader_challenge(tmp_path_factory):
    """The design challenge (exercise 9) in nbgrader: its written answers are manually graded cells."""
    return _nbgrader_course(tmp_path_factory, "ex09", "ex09_design_challenge.ipynb", 600)


def test_nbgrader_leaves_the_written_answers_to_a_person(nbgrader_challenge):
    """nbgrader releases our rubric-free exercise, scores the challenge by its asserts (it cannot run
    our check: `hand_in` does nothing there) and counts the written answers' 6 points as manual."""
    released = nbformat.read(nbgrader_challenge / "release" / "ex09" / "ex09_design_challenge.ipynb", as_version=4)
    ours = make_exercise(nbformat.read(REPO / "solutions" / "ex09_design_challenge.ipynb", as_version=4))
    assert [_without_nbval_markers(c) for c in released.cells] == [c.source for c in ours.cells]
    rows = {r["student_id"]: r for r in csv.DictReader(open(nbgrader_challenge / "grades.csv"))}
    assert (float(rows["alice"]["score"]), float(rows["alice"]["max_score"])) == (6.0, 12.0)  # 6 await a person
    assert float(rows["bob"]["score"]) == 0.0


# ---------------------------------------------------------------- rule 4: no reference implementation in a test
def _exercise_with_test(test_source: str) -> nbformat.NotebookNode:
    solution = nbformat.v4.new_code_cell("def scores(w):\n    ### BEGIN SOLUTION\n    return w.abs().sum(1)\n"
                                         "    ### END SOLUTION")
    solution.metadata["nbgrader"] = {"solution": True, "grade": False, "locked": False, "grade_id": "s",
                                     "schema_version": 3}
    nb = nbformat.v4.new_notebook()
    nb.cells = [solution, _test_cell(test_source)]
    return nb


@pytest.mark.parametrize("source, found", [
    # hidden blocks define nothing: a solution reads them from the line cache and runs them
    ("record('v', scores(w))\n### BEGIN HIDDEN TESTS\ndef _ref(w):\n    return w.abs().sum(1)\n"
     "record('h', scores(w))\n### END HIDDEN TESTS", True),
    ("record('v', scores(w))\n### BEGIN HIDDEN TESTS\nref = lambda w: w.abs().sum(1)\n### END HIDDEN TESTS", True),
    # a visible helper given the task's input, compared with the task's result: the answer, callable
    ("def _ref(w):\n    return w.abs().sum(1)\n\n\ns = scores(w)\nassert torch.allclose(s, _ref(w))\n"
     "record('v', s)", True),
    ("def _ref(w):\n    return w.abs().sum(1)\n\n\nwant = _ref(w)\nassert (scores(w) - want).abs().max() < 1e-6\n"
     "record('v', scores(w))", True),
    # helpers that build inputs or measure the student's result are fine
    ("def _shape(t):\n    return list(t.shape)\n\n\ns = scores(w)\nassert _shape(s) == [4]\nrecord('v', s)", False),
    ("def _zeroed(w, rows):\n    w = w.clone()\n    w[rows] = 0\n    return lambda x: x @ w.T\n\n\n"
     "ref = _zeroed(w, [1])(x)\nassert (ref - x @ w.T).abs().max() < 9\nrecord('v', scores(w))", False),
    ("s = scores(w)\nassert torch.allclose(s, torch.tensor([1.0, 2.0]), rtol=1e-3)\nrecord('v', s)", False),
])
def test_the_contract_finds_reference_implementations_in_tests(source, found):
    problems = contract.problems(_exercise_with_test(source))
    assert bool(problems) is found, problems


# ---------------------------------------------------------------- untrusted input, read and written defensively
def test_only_a_regular_file_of_bounded_size_is_read(tmp_path):
    from prunekit.grade.submission import read_bytes

    (tmp_path / "nb.ipynb").write_text("{}")
    assert read_bytes(tmp_path / "nb.ipynb") == b"{}"
    os.symlink(tmp_path / "nb.ipynb", tmp_path / "link.ipynb")
    os.mkfifo(tmp_path / "fifo.ipynb")
    for name, problem in (("link", "symbolic link"), ("fifo", "a FIFO")):
        with pytest.raises(SubmissionError, match=problem):
            read_bytes(tmp_path / f"{name}.ipynb")
    with pytest.raises(SubmissionError, match="is a folder"):
        read_bytes(tmp_path)
    with pytest.raises(SubmissionError, match="larger than"):
        read_bytes(tmp_path / "nb.ipynb", limit=1)


@pytest.mark.parametrize("data, depth", [
    (b'{"a": [1, {"b": []}]}', 4), (b'["[[[[", "\\"[[["]', 1), (b'{"a": "\\\\", "b": [[]]}', 3), (b"[" * 100, 65),
])
def test_json_depth_counts_brackets_outside_strings(data, depth):
    from prunekit.grade.submission import json_depth

    assert json_depth(data) == depth


@pytest.mark.parametrize("data, problem", [
    (b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": ["x"]}', "not a valid notebook"),
    (b'{"cells": [], "metadata": {"x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}}", "deeper than 64 levels"),
    (b"root:x:0:0:root:/root:/bin/bash", "invalid JSON at line 1, column 1"),
    (b"\xff\xfe", "not UTF-8"),
    (b'{"cells": {}}', "no list of cells"),
])
def test_a_broken_notebook_is_the_student_s_error_and_quotes_nothing_of_the_file(data, problem):
    from prunekit.grade.submission import parse

    with pytest.raises(SubmissionError, match=problem) as err:
        parse(data)
    assert "root:" not in str(err.value)


def test_text_for_the_files_is_cleaned_escaped_and_no_formula():
    from prunekit.grade.results import clean_text

    assert clean_text("a\ud800b\x1b[0m") == "a\\ud800b[0m"
    assert clean_text("name\udcff") == "name\\xff"  # an undecodable byte of a file name
    result = GradeResult("ex", 0.0, 1.0, [TaskResult("t", 0.0, 1.0, False, "<img src=x>\nline | two \udcff")],
                         error="=HYPERLINK(\"x\")")
    page = report.feedback_markdown("a\udcffb", result)
    assert "&lt;img src=x&gt; line \\| two \\xff" in page and "a\\xffb" in page
    page.encode("utf-8")
    report.write_gradebook(Path(os.devnull), [("a\udcffb", result)], ["t"])


def test_feedback_of_one_student_that_cannot_be_written_costs_only_that_page(tmp_path, monkeypatch):
    results = [(n, GradeResult("ex", 1.0, 1.0, [])) for n in ("alice", "bob")]
    real = Path.write_text

    def fails_for_alice(self, *args, **kwargs):
        if self.name == "alice.md":
            raise OSError("disk full")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", fails_for_alice)
    problems = report.write_feedback(tmp_path, results)
    assert problems == ["feedback for 'alice' not written: disk full"] and (tmp_path / "bob.md").exists()


# ---------------------------------------------------------------- messages that never quote a hidden test
def test_an_error_raised_in_a_hidden_line_shows_its_type_and_the_instructor_s_hint_only():
    expected = {"test-f": [{"key": "k", "value": 2}, {"key": "h", "value": 4, "hint": "negative inputs too"}]}
    run = CellRun(1, "error", "RuntimeError", "assert f(2) == 4\n### END HIDDEN TESTS", _tb(3),
                  records=[{"key": "k", "value": 2}])
    (task,) = score.score(_steps(), [CellRun(0, "ok"), run], expected)
    assert task.message == "RuntimeError (in a hidden test): negative inputs too"


def test_a_message_that_quotes_a_hidden_line_is_withheld_wherever_it_was_raised():
    steps = _steps()
    steps[1].source = steps[1].source.replace("assert f(2) == 4", "assert f(2) == 4, 'doubles negatives too'")
    quoted = CellRun(1, "error", "ValueError", "...assert f(2) == 4, 'doubles negatives too'...", _tb(1))
    (task,) = score.score(steps, [CellRun(0, "ok"), quoted], {})
    assert "withheld" in task.message and "doubles negatives" not in task.message


# ---------------------------------------------------------------- fair to form
def test_a_copied_solution_cell_is_graded_by_the_copy_the_student_changed(catalog):
    exercise = catalog["ex90_tiny"]
    nb = tiny.tiny_solution()
    index = next(i for i, c in enumerate(nb.cells) if cells.grade_id(c) == "tiny-double")
    stub = nbformat.from_dict(copy.deepcopy(dict(nb.cells[index])))
    stub.source = exercise.stubs["tiny-double"]
    nb.cells.insert(index, stub)  # the released stub above, the answer in the copy below
    theirs, notes = assemble.solution_sources(exercise, nb)
    assert "return 2 * x" in theirs["tiny-double"] and "copy 2 of 2" in notes[0]
    nb.cells.insert(index + 2, nbformat.from_dict(copy.deepcopy(dict(stub))))  # a stub copy *after* the answer
    assert "return 2 * x" in assemble.solution_sources(exercise, nb)[0]["tiny-double"]


def test_a_passed_task_says_when_its_cell_was_stopped_at_the_time_limit():
    runs = [CellRun(0, "timeout", detail="timed out after 60 s"), CellRun(1, "ok", records=[{"key": "k", "value": 2}])]
    (task,) = score.score(_steps(), runs, {"test-f": [{"key": "k", "value": 2}]})
    assert task.passed and "'sol-f' was stopped at the time limit (timed out after 60 s)" in task.message


def test_check_of_reads_every_kind_through_the_registry(monkeypatch):
    from prunekit.grade import checks

    class Probe(checks.BudgetCheck):
        kind = "probe"

    monkeypatch.setitem(checks.CHECKS, "probe", Probe)
    cell = nbformat.v4.new_code_cell("", metadata={"prunekit": {"check": {
        "kind": "probe", "file": "p.pt", "dataset": "d", "architectures": ["a"], "max_macs": 1, "min_accuracy": 0.5}}})
    assert type(checks.check_of(cell)) is Probe
