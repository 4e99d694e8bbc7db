"""Two tiny exercises in the solution format, built in code (a few quick tasks each).

``ex90_tiny`` has three tasks: a pure-Python function (``double``, whose hidden test holds a
liftable literal), a torch function checked with ``torch.allclose`` whose properties (no grad,
``ValueError`` on bad input) are asserted *and* recorded and whose hidden test draws from the
global generator (``l1_rows``), and a top-level value (``answer``). ``ex91_other`` has one
task; it exists so that a notebook of the wrong exercise can be submitted.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook


def _meta(grade_id: str, kind: str, points: float = 0.0) -> dict:
    flags = {"solution": dict(solution=True, grade=False, locked=False),
             "test": dict(solution=False, grade=True, locked=True),
             "locked": dict(solution=False, grade=False, locked=True)}[kind]
    meta = {**flags, "grade_id": grade_id, "schema_version": 3}
    if kind == "test":
        meta["points"] = points
    return {"nbgrader": meta}


def _cell(source: str, grade_id: str, kind: str, points: float = 0.0):
    cell = new_code_cell(source, metadata=_meta(grade_id, kind, points))
    cell["id"] = grade_id
    return cell


TINY_CELLS = [
    ("markdown", "# A tiny exercise\nThree quick tasks."),
    ("setup", "import torch\nfrom prunekit.grade import record"),
    ("tiny-double", "def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION"),
    # the hidden assert holds a literal on purpose: a submission that lifts it from the test's source
    # passes that assert, and must still lose the task on the recorded values
    ("test-double", "assert double(2) == 4, 'double(2) should be 4'\nrecord('double_3', double(3))\n"
                    "### BEGIN HIDDEN TESTS\nassert double(-1) == -2\n"
                    "record('double_list', [double(i) for i in range(5)])\n"
                    "### END HIDDEN TESTS", 2.0),
    ("tiny-l1", "def l1_rows(w):\n    \"\"\"L1 norm of every row of a 2-D tensor, as a tensor without grad.\"\"\"\n"
                "    ### BEGIN SOLUTION\n    if w.dim() != 2:\n"
                "        raise ValueError(f'l1_rows needs a 2-D tensor, got {w.dim()}-D')\n"
                "    return w.detach().abs().sum(dim=1)\n    ### END SOLUTION"),
    # every asserted property is recorded too; the hidden test draws from the *global* generator
    # after the student's calls on purpose: the grader reseeds there, so it is still fair
    ("test-l1", "w = torch.tensor([[1.0, -2.0], [0.5, 0.25]], requires_grad=True)\ns = l1_rows(w)\n"
                "assert torch.allclose(s, torch.tensor([3.0, 0.75])), 'wrong L1 norms'\n"
                "assert not s.requires_grad, 'the norms must not require grad'\n"
                "try:\n    l1_rows(torch.ones(3))\n    raised = False\nexcept ValueError:\n    raised = True\n"
                "assert raised, 'a 1-D tensor must raise ValueError'\n"
                "record('l1_visible', s)\nrecord('l1_checks', {'requires_grad': s.requires_grad, 'raised': raised})\n"
                "### BEGIN HIDDEN TESTS\nw2 = torch.randn(4, 3)\n"
                "assert torch.allclose(l1_rows(w2), w2.abs().sum(1))\nrecord('l1_random', l1_rows(w2))\n"
                "### END HIDDEN TESTS", 3.0),
    ("tiny-answer", "### BEGIN SOLUTION\nanswer = sum(range(10))\n### END SOLUTION"),
    ("test-answer", "assert isinstance(answer, int)\nrecord('answer', answer)", 1.0),
]

SOLUTIONS = {
    "tiny-double": "def double(x):\n    return 2 * x",
    "tiny-l1": "def l1_rows(w):\n    if w.dim() != 2:\n        raise ValueError('2-D only')\n"
               "    return w.detach().abs().sum(dim=1)",
    "tiny-answer": "answer = sum(range(10))",
}


def tiny_solution() -> nbformat.NotebookNode:
    nb = new_notebook(metadata={"prunekit": {"exercise": "ex90_tiny"},
                                "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    for spec in TINY_CELLS:
        if spec[0] == "markdown":
            cell = new_markdown_cell(spec[1])
            cell["id"] = "intro"
            nb.cells.append(cell)
        elif spec[0] == "setup":
            nb.cells.append(_cell(spec[1], "setup", "locked"))
        elif spec[0].startswith("test-"):
            nb.cells.append(_cell(spec[1], spec[0], "test", spec[2]))
        else:
            nb.cells.append(_cell(spec[1], spec[0], "solution"))
    return nb


def other_solution() -> nbformat.NotebookNode:
    nb = new_notebook(metadata={"prunekit": {"exercise": "ex91_other"}})
    nb.cells = [
        _cell("def triple(x):\n    ### BEGIN SOLUTION\n    return 3 * x\n    ### END SOLUTION",
              "other-triple", "solution"),
        _cell("from prunekit.grade import record\nrecord('t', triple(7))", "test-triple", "test", 1.0),
    ]
    return nb


def write_solutions(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(tiny_solution(), folder / "ex90_tiny.ipynb")
    nbformat.write(other_solution(), folder / "ex91_other.ipynb")
    return folder


def with_solutions(nb: nbformat.NotebookNode, sources: dict[str, str]) -> nbformat.NotebookNode:
    """A copy of ``nb`` whose solution cells (by grade_id) have the given sources."""
    nb = nbformat.from_dict(nbformat.reads(nbformat.writes(nb), as_version=4))
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in sources:
            cell.source = sources[gid]
    return nb
