"""The design challenge (exercise 9): a task scored by the grader's own measurement of a handed-in file,
and written answers graded by hand.

What is checked here, mostly without kernels (seconds):

* the exercise's check metadata says what its notebook says (budget, target, data set, builder);
* :mod:`prunekit.grade.budget` measures a plain pruned model and refuses everything else -- masks,
  pickled code (which never runs), other builders, changed strides, widths beyond the dense model,
  files that are not ``save_pruned`` files -- and a full-width model with zeroed filters costs the
  dense model's MACs;
* the verdict follows the measurement (over budget / under target fail), a check task's points
  follow the verdict and never the kernel, a solution that fails its own check stops the grader;
* written answers are listed, with the student's text, as needing manual grading (0 when left as
  released) in the JSON, the gradebook and the feedback, and never count in the automatic score;
* in a real sandbox: the check runs in a box of its own and loads a code-carrying pickle safely.

The whole pipeline with real kernels -- the solution passes, the dense model is over budget, an
unrepaired one under target, ``torch.nn.utils.prune`` masks refused, a kernel that forges the
measurement or writes fake verdicts, a planted link, a pickle that would run code: all 0 points;
another correct design passes -- is in ``test_grade_solutions.py`` (``grader_fixtures/variants_ex09.py``).
"""

from __future__ import annotations

import ast
import copy
import csv
import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.utils.prune as torch_prune

import prunekit
from prunekit.data import example_input
from prunekit.export import save_pruned
from prunekit.grade import assemble, autograde, budget, cells, contract, reference, report, sandbox
from prunekit.grade.score import score as score_tasks
from prunekit.grade.catalog import load_exercise
from prunekit.grade.checks import BudgetCheck, Verdict, check_of, run_check
from prunekit.grade.generate import make_exercise
from prunekit.grade.limits import GraderError, Limits
from prunekit.grade.results import GradeResult, TaskResult
from prunekit.grade.runner import CellRun
from prunekit.models import build_model

REPO = Path(__file__).resolve().parents[1]
EX09 = REPO / "solutions" / "ex09_design_challenge.ipynb"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
DENSE_MACS = 36_353_792  # vgg_small on one 28x28 image
CHECK = BudgetCheck("pruned.pt", "mnist_hard", ("vgg_small",), max_macs=8_000_000, min_accuracy=0.83)


@pytest.fixture(scope="module")
def exercise():
    return load_exercise(EX09)


def _model(ratio: float = 0.0) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("vgg_small").eval()
    return prunekit.prune(model, example_input("mnist_hard"), ratio=ratio).model if ratio else model


def _saved(tmp_path: Path, model: torch.nn.Module, name: str = "pruned.pt", **kwargs) -> Path:
    return save_pruned(model, tmp_path / name, architecture=kwargs.pop("architecture", "vgg_small"), **kwargs)


# ---------------------------------------------------------------- the exercise's metadata
def test_the_check_says_what_the_notebook_says(exercise):
    setup = next(c for c in exercise.notebook.cells if cells.grade_id(c) == "setup").source
    constants = {t.id: ast.literal_eval(node.value) for node in ast.parse(setup).body if isinstance(node, ast.Assign)
                 for t in node.targets if isinstance(t, ast.Name) and t.id in ("BUDGET_MACS", "TARGET_ACCURACY")}
    assert exercise.checks == {"test_challenge": BudgetCheck(
        "pruned.pt", "mnist_hard", ("vgg_small",), constants["BUDGET_MACS"], constants["TARGET_ACCURACY"])}
    assert exercise.checks["test_challenge"] == CHECK
    assert exercise.tests == [("test_challenge", 6.0)] and exercise.max_score == 6.0
    assert exercise.manual == [("answer_budget", 2.0), ("answer_repair", 2.0), ("answer_masks", 2.0)]
    assert exercise.manual_max_score == 6.0 and contract.problems(exercise.notebook) == []
    released = make_exercise(exercise.notebook)
    answers = [c for c in released.cells if cells.is_manual(c)]
    assert [c.source for c in answers] == [cells.MARKDOWN_STUB] * 3  # the rubric never reaches students
    assert all(c.metadata["prunekit"]["check"]["max_macs"] == CHECK.max_macs
               for c in released.cells if cells.grade_id(c) == "test_challenge")


@pytest.mark.parametrize("spec, problem", [
    ({"kind": "latency"}, "kind one of"),
    ({**CHECK.__dict__, "kind": "pruned-model-budget", "file": "../x.pt"}, "plain file name"),
    ({"kind": "pruned-model-budget", "file": "p.pt"}, "missing or invalid field"),
    ({**CHECK.__dict__, "kind": "pruned-model-budget", "min_accuracy": 83}, "min_accuracy <= 1"),
    ({**CHECK.__dict__, "kind": "pruned-model-budget", "seconds": 3}, "unknown field"),
])
def test_a_malformed_check_is_the_instructors_error(spec, problem):
    cell = nbformat.v4.new_code_cell("hand_in('p.pt')", metadata={"prunekit": {"check": spec}})
    with pytest.raises(ValueError, match=problem):
        check_of(cell)


def test_the_contract_knows_checks_and_written_answers():
    test = nbformat.v4.new_code_cell("save_pruned(m, 'pruned.pt', 'vgg_small')\nhand_in('pruned.pt')", metadata={
        "nbgrader": {"grade": True, "solution": False, "locked": True, "grade_id": "t", "points": 6.0,
                     "schema_version": 3},
        "prunekit": {"check": {"kind": CHECK.kind, **{k: v for k, v in CHECK.__dict__.items()}}}})
    answer = nbformat.v4.new_markdown_cell("### BEGIN SOLUTION\nrubric\n### END SOLUTION", metadata={
        "nbgrader": {"grade": True, "solution": True, "locked": False, "grade_id": "q", "points": 2.0,
                     "schema_version": 3}})
    nb = nbformat.v4.new_notebook()
    nb.cells = [test, answer]
    assert contract.problems(nb) == []  # a checked task needs no record: the grader measures the file
    test.source = "save_pruned(m, 'pruned.pt', 'vgg_small')"
    answer.metadata["nbgrader"]["points"] = 0
    assert contract.problems(nb) == ["t: the check measures 'pruned.pt': save it and hand it in (hand_in) in this cell",
                                     "q: give the written answer points"]


# ---------------------------------------------------------------- the measurement and its refusals
def test_a_plain_pruned_model_is_measured(tmp_path):
    report_ = budget.measure(_saved(tmp_path, _model(0.55)), "mnist_hard", ["vgg_small"])
    assert report_["valid"] and report_["architecture"] == "vgg_small"
    assert report_["widths"] == [15, 29, 58, 58] and report_["macs"] == 7_626_352
    assert report_["dense_macs"] == DENSE_MACS and report_["total"] == 1000 and 0 <= report_["correct"] <= 1000


def _masked(tmp_path):
    model = _model()
    for conv in (m for m in model.modules() if isinstance(m, torch.nn.Conv2d)):
        torch_prune.ln_structured(conv, "weight", amount=0.55, n=1, dim=0)
    return _saved(tmp_path, model)


def _pickled_code(tmp_path):
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"format": "prunekit.pruned/1", "architecture": "vgg_small", "spec": Payload()}, tmp_path / "p.pt")
    return tmp_path / "p.pt"


def _strided(tmp_path):
    model = _model(0.55)
    model.features[0][0].stride = (2, 2)  # a quarter of the MACs everywhere after it: not pruning
    return _saved(tmp_path, model)


def _widened(tmp_path):
    model = _model()
    model.features[5][0] = torch.nn.Conv2d(128, 256, 3, padding=1, bias=False)
    model.features[5][1] = torch.nn.BatchNorm2d(256)
    model.classifier = torch.nn.Linear(256, 10)
    return _saved(tmp_path, model)


def _fewer_classes(tmp_path):
    model = _model(0.55)
    model.classifier = torch.nn.Linear(model.classifier.in_features, 5)
    return _saved(tmp_path, model)


def _plain_state_dict(tmp_path):
    torch.save(_model(0.55).state_dict(), tmp_path / "p.pt")
    return tmp_path / "p.pt"


def _not_torch(tmp_path):
    (tmp_path / "p.pt").write_bytes(b'{"valid": true, "macs": 1, "correct": 1000, "total": 1000}')
    return tmp_path / "p.pt"


@pytest.mark.parametrize("make, problem", [
    (_masked, "carries pruning masks"),
    (_pickled_code, "would call posix.system while loading"),
    (lambda tmp: _saved(tmp, build_model("resnet8"), architecture="resnet8"), "this exercise accepts vgg_small"),
    (lambda tmp: _saved(tmp, _model(0.55), architecture="os.system"), "not allowed here"),
    (_strided, "stride is [2, 2]"),
    (_widened, "between 1 and the dense width 128"),
    (_fewer_classes, "must output 10 finite class scores"),
    (lambda tmp: _saved(tmp, _model(0.55), num_classes=5), "predicts 5 classes"),
    (_plain_state_dict, "not a prunekit pruned-model file"),
    (_not_torch, "torch.load(weights_only=True) refuses the file"),
], ids=["masks", "pickled-code", "other-builder", "unknown-builder", "stride", "wider", "fewer-classes",
        "classes-claimed", "state-dict", "json"])
def test_anything_but_a_plain_pruned_model_is_refused(tmp_path, make, problem):
    report_ = budget.measure(make(tmp_path), "mnist_hard", ["vgg_small"])
    assert report_["valid"] is False and problem in report_["problem"], report_
    assert not (tmp_path / "code-ran").exists()  # the pickle's code never ran
    passed, message = CHECK.verdict(report_)
    assert not passed and message.startswith("pruned.pt is not a plain pruned model: ")


def test_zeroed_filters_at_full_width_cost_the_dense_macs(tmp_path):
    model = _model()
    for conv in (m for m in model.modules() if isinstance(m, torch.nn.Conv2d)):
        torch_prune.ln_structured(conv, "weight", amount=0.55, n=1, dim=0)
        torch_prune.remove(conv, "weight")  # the masks made permanent: a plain model, every filter still there
    report_ = budget.measure(_saved(tmp_path, model), "mnist_hard", ["vgg_small"])
    assert report_["valid"] and report_["macs"] == report_["dense_macs"] == DENSE_MACS
    assert CHECK.verdict({**report_, "correct": 1000})[1].startswith("over the MAC budget")


@pytest.mark.parametrize("macs, correct, passed, start", [
    (7_626_352, 861, True, "passed, measured by the grader: 7,626,352 MACs (21.0% of the dense 36,353,792) <= budget"),
    (8_000_000, 830, True, "passed"),                       # exactly on budget and on target counts
    (8_000_001, 900, False, "over the MAC budget, measured by the grader: 8,000,001 MACs"),
    (7_000_000, 829, False, "below the accuracy target"),
    (9_000_000, 100, False, "over the MAC budget and below the accuracy target"),
])
def test_the_verdict_follows_the_grader_s_numbers(macs, correct, passed, start):
    report_ = {"valid": True, "macs": macs, "dense_macs": DENSE_MACS, "correct": correct, "total": 1000}
    ok, message = CHECK.verdict(report_)
    assert ok is passed and message.startswith(start)
    assert f"({correct}/1000)" in message and "target 83.0%" in message
    with pytest.raises(GraderError, match="integer 'macs'"):
        CHECK.verdict({**report_, "macs": "7"})  # a malformed report is the grader's problem, not a score


# ---------------------------------------------------------------- scoring: the verdict, not the kernel
def _challenge_steps():
    return [assemble.Step("solution", "design", "design"),
            assemble.Step("test", "test_challenge", "test_challenge", "hand_in('pruned.pt')", 6.0, check=CHECK)]


PASS = Verdict(True, "passed, measured by the grader: ...", {})
FAIL = Verdict(False, "over the MAC budget, measured by the grader: ...", {})


@pytest.mark.parametrize("design, test, verdict, score, message", [
    (CellRun(0, "ok"), CellRun(1, "ok"), FAIL, 0.0, "over the MAC budget"),          # a green kernel gains nothing
    (CellRun(0, "ok"), CellRun(1, "error", "AssertionError", "x"), PASS, 6.0, "passed, measured"),  # the file counts
    (CellRun(0, "ok"), CellRun(1, "ok"), None, 0.0, "no pruned.pt was handed in"),   # a link, or nothing at all
    (CellRun(0, "error", "NotImplementedError", ""), CellRun(1, "error", "NameError", "pruned"), None, 0.0,
     "NotImplementedError: task not attempted"),
    (CellRun(0, "timeout", detail="timed out after 60 s"), CellRun(1, "not_run", detail="the kernel was shut down"),
     None, 0.0, "not run: your code in 'design' stopped the kernel: timed out after 60 s"),
])
def test_a_checked_task_scores_the_verdict_not_the_kernel(design, test, verdict, score, message):
    (task,) = score_tasks(_challenge_steps(), [design, test], {}, {1: verdict} if verdict else {})
    assert task.score == score and task.message.startswith(message), task.message


def test_a_solution_that_fails_its_own_check_stops_the_grader(exercise, monkeypatch):
    steps = [assemble.Step("test", "test_challenge", "test_challenge", points=6.0, check=CHECK)]
    monkeypatch.setattr(autograde, "execute", lambda *a, **k: (steps, [CellRun(0, "ok")], {0: FAIL}))
    with pytest.raises(GraderError, match="fails in cell 'test_challenge': over the MAC budget"):
        reference.compute(exercise, Limits(sandbox=sandbox.Sandbox("none")))
    monkeypatch.setattr(autograde, "execute", lambda *a, **k: (steps, [CellRun(0, "ok")], {}))
    with pytest.raises(GraderError, match="no pruned.pt was handed in"):
        reference.compute(exercise, Limits(sandbox=sandbox.Sandbox("none")))


# ---------------------------------------------------------------- written answers: listed, never scored
def _answered(exercise):
    """The released notebook with one written answer filled in and one answer cell deleted."""
    nb = make_exercise(exercise.notebook)
    nb.cells = [c for c in nb.cells if cells.grade_id(c) != "answer_masks"]
    for cell in nb.cells:
        if cells.grade_id(cell) == "answer_repair":
            cell.source = "BN statistics are stale: 14% -> 21% -> 84% on validation."
    return nb


def test_written_answers_are_listed_for_a_person_with_their_text(exercise):
    manual = assemble.manual_answers(exercise, _answered(exercise))
    assert [(m.grade_id, m.score, m.max_score, m.answered) for m in manual] == [
        ("answer_budget", 0.0, 2.0, False), ("answer_repair", None, 2.0, True), ("answer_masks", 0.0, 2.0, False)]
    assert manual[1].answer.startswith("BN statistics") and manual[1].message == "needs manual grading"
    assert manual[0].message == "not answered (the cell is as released)"
    assert manual[2].message == "not answered: the answer cell is missing"
    assert [m.answered for m in assemble.manual_answers(exercise, exercise.notebook)] == [True] * 3


def test_json_gradebook_and_feedback_say_what_needs_manual_grading(exercise, tmp_path):
    tasks = [TaskResult("test_challenge", 6.0, 6.0, True, "passed, measured by the grader: 1 | 2")]
    result = GradeResult(exercise.name, 6.0, 6.0, tasks,
                                   manual=assemble.manual_answers(exercise, _answered(exercise)))
    data = json.loads(json.dumps(result.as_dict()))
    assert (data["score"], data["max_score"], data["manual_max_score"]) == (6.0, 6.0, 6.0)  # manual points apart
    assert [(m["grade_id"], m["score"], m["needs_manual_grade"]) for m in data["manual"]] == [
        ("answer_budget", 0.0, False), ("answer_repair", None, True), ("answer_masks", 0.0, False)]
    assert GradeResult.from_dict(data) == result
    report.write_gradebook(tmp_path / "g.csv", [("alice", result)], ["test_challenge"])
    (row,) = csv.DictReader(open(tmp_path / "g.csv"))
    assert row == {"submission": "alice", "exercise": exercise.name, "test_challenge": "6", "answer_budget": "0",
                   "answer_repair": "needs manual grading", "answer_masks": "0", "total": "6", "max_score": "6",
                   "manual_max_score": "6", "error": ""}
    page = report.feedback_markdown("alice", result)
    assert "**Score: 6 / 6** from the automatic tests, plus up to 6 points for written answers, graded by hand" in page
    assert "| `answer_repair` | – / 2 | needs manual grading |" in page
    assert "| `answer_budget` | 0 / 2 | not answered (the cell is as released) |" in page
    assert "passed, measured by the grader: 1 \\| 2" in page  # the grader's numbers, for the student


# ---------------------------------------------------------------- in the real sandbox
@pytest.mark.skipif(shutil.which("bwrap") is None and not IN_CI,
                    reason="bubblewrap is not installed (make sandbox-deps); in CI this fails")
def test_the_check_measures_in_a_box_of_its_own_and_runs_no_pickled_code(tmp_path):
    box = sandbox.resolve("bwrap")
    good = _saved(tmp_path, _model(0.55))
    measured = run_check(box, CHECK.module, {"pruned.pt": good}, CHECK.argv(), timeout=180)
    assert measured["valid"] and measured["macs"] == 7_626_352 and measured["total"] == 1000

    class Forged:  # if this ran in the check, it would print a passing report before the real one
        def __reduce__(self):
            return (print, (json.dumps({"valid": True, "macs": 1, "dense_macs": 2, "correct": 1, "total": 1}),))

    torch.save({"format": "prunekit.pruned/1", "spec": Forged()}, tmp_path / "evil.pt")
    refused = run_check(box, CHECK.module, {"pruned.pt": tmp_path / "evil.pt"}, CHECK.argv(), timeout=180)
    assert refused == {"valid": False, "problem": refused["problem"]}
    assert "would call print while loading" in refused["problem"]


def test_nothing_here_reads_the_submission_s_copy_of_the_check(exercise):
    """The check, budget and target come from the instructor's notebook: a submission that edits the
    test cell's metadata (a budget of 10^9) is graded against the original."""
    sub = copy.deepcopy(exercise.notebook)
    for cell in sub.cells:
        if cells.grade_id(cell) == "test_challenge":
            cell.metadata["prunekit"]["check"]["max_macs"] = 10**9
    _, steps, _ = assemble.assemble(exercise, sub)
    assert [s.check for s in steps if s.kind == "test"] == [CHECK]
