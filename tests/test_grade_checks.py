"""Checks outside the student's kernel: a file the kernel hands in, judged in a sandbox of its own.

This is the hook for exercises whose result the grader must measure itself (a pruned model's
size and accuracy against a budget): the notebook saves the file and calls ``hand_in``; the
runner takes the files the checks name out of the box (regular files only -- never a link or a
FIFO the kernel planted under a checked name); a check module (here the real one,
:mod:`prunekit.grade.budget`) then runs in a fresh box with the file read-only.
"""

from __future__ import annotations

import os
import shutil

import nbformat
import pytest

from prunekit.grade import sandbox
from prunekit.grade.checks import run_check
from prunekit.grade.limits import Limits
from prunekit.grade.runner import RunOptions, run_notebook

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None and not IN_CI,
                                reason="bubblewrap is not installed (make sandbox-deps); in CI this fails")

SAVE = """\
import os
import torch
from prunekit.export import save_pruned
from prunekit.grade import hand_in
from prunekit.models import build_model
from prunekit.prune import prune

model = build_model("vgg_small").eval()
small = prune(model, torch.zeros(1, 1, 28, 28), ratio=0.5, importance="l1").model
save_pruned(small, "pruned.pt", architecture="vgg_small")
print(hand_in("pruned.pt"), [m.out_channels for m in small.modules() if isinstance(m, torch.nn.Conv2d)])
os.symlink("/etc/passwd", os.path.join(os.environ["PRUNEKIT_OUTBOX"], "planted.pt"))
os.mkfifo(os.path.join(os.environ["PRUNEKIT_OUTBOX"], "blocking.pt"))
"""


def test_a_handed_in_model_is_checked_in_its_own_box(tmp_path):
    box = sandbox.resolve("bwrap")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(SAVE)]
    wanted = ("pruned.pt", "planted.pt", "blocking.pt", "never-made.pt")
    options = RunOptions(outbox=tmp_path / "handed", collect=wanted)
    (run,) = run_notebook(nb, Limits(cell_timeout=120, sandbox=box), options)
    assert run.status == "ok", run.evalue
    where, widths = nb.cells[0].outputs[0]["text"].split(" ", 1)
    assert where == f"{sandbox.OUTBOX}/pruned.pt"
    assert sorted(p.name for p in (tmp_path / "handed").iterdir()) == ["pruned.pt"]  # no link, no fifo
    report = run_check(box, "prunekit.grade.budget", {"pruned.pt": tmp_path / "handed" / "pruned.pt"},
                       [f"{sandbox.INBOX}/pruned.pt", "--dataset", "mnist_hard", "--architectures", "vgg_small"],
                       timeout=180)
    assert report["valid"] is True and report["widths"] == eval(widths)  # noqa: S307 - our own print
    assert 0 < report["params"] and report["macs"] < report["dense_macs"]


def test_outside_the_grader_hand_in_does_nothing(tmp_path, monkeypatch):
    from prunekit.grade import hand_in

    monkeypatch.delenv("PRUNEKIT_GRADING", raising=False)
    (tmp_path / "x.pt").write_bytes(b"x")
    assert hand_in(tmp_path / "x.pt") is None
    with pytest.raises(ValueError, match="plain file name"):
        hand_in(tmp_path / "x.pt", name="../x.pt")
