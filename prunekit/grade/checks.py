"""Checks that run outside the student's kernel, on files the kernel handed in.

A test cell can only report what the kernel computed, and the kernel belongs to the student.
For results the grader must measure itself -- a pruned model's size, speed or accuracy -- the
notebook hands the file in (:func:`prunekit.grade.hand_in`) and the grader runs a *check*: a
Python module started in a fresh sandbox of its own (no network, nothing of the host but the
interpreter and the installed copy of prunekit), with the handed-in files bound read-only at
``/home/student/inbox/<name>``. The check prints one JSON document; the grader compares it
with the exercise's budget in its own process.

    report = run_check(sandbox, "prunekit.grade.budget", {"pruned.pt": path},
                       ["/home/student/inbox/pruned.pt", "--dataset", "mnist_hard", "--architectures", "vgg_small"])

The check box is a box like a kernel's: its own folder, uid, control group and limits.

Attaching a check to a graded task
----------------------------------
A test cell of the instructor's notebook names its check in its metadata, next to nbgrader's::

    "prunekit": {"check": {"kind": "pruned-model-budget", "file": "pruned.pt", "dataset": "mnist_hard",
                           "architectures": ["vgg_small"], "max_macs": 8000000, "min_accuracy": 0.83}}

and calls ``hand_in("pruned.pt")``. The grader then scores that task by the check's verdict
alone (:func:`judge`), never by what the kernel printed, asserted or recorded: after the
kernel run it takes the handed-in file from its own copy of the outbox, measures it in a fresh
box (:mod:`prunekit.grade.budget`) and compares the measurement with the budget and target
here, in its own process. Test cells come from the instructor's notebook, never from the
submission, so a student cannot change the check, the budget or the target either.

A new kind of check is a class with the :class:`Check` interface, registered in
:data:`CHECKS` under its ``kind``; :func:`check_of` reads the metadata through that registry.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from . import sandbox as sb
from .limits import CPUS, MEMORY_MB, GraderError
from .machine import kernel_selection
from .sandbox import Sandbox

MAX_OUTPUT_BYTES = 1 << 20


def run_check(box: Sandbox, module: str, inputs: dict[str, Path], args: list[str] | tuple[str, ...] = (),
              timeout: float = 300.0, memory_mb: int = MEMORY_MB, cpus: float = CPUS) -> dict:
    """Run ``python -m module *args`` in a fresh sandbox with ``inputs``; return its JSON output."""
    with sb.run_folder(box, prefix="prunekit-check-") as tmp, sb.lease_uid(box) as uid, \
            sb.control_group(box, cpus, memory_mb) as group:
        if box.boxed:
            ipc = sb.prepare_ipc(tmp, uid)
            argv = (sb.launch_argv(box, group, memory_mb, int(timeout) + 10, uid is not None)
                    + sb.bwrap_argv(box, ipc, uid, sb.data_files(), inputs=inputs)
                    + [sb.kernel_python(box), "-m", module, *args])
            env = sb.outer_env()
        else:  # trusted mode: the same command, on the host, with the files where they are
            argv = sb.launch_argv(box, None, memory_mb, int(timeout) + 10, False) + [sys.executable, "-m", module]
            argv += [str(inputs[a[len(sb.INBOX) + 1:]]) if a.startswith(sb.INBOX + "/") else a for a in args]
            env = {**sb.outer_env(), **kernel_selection(), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        try:
            done = subprocess.run(argv, capture_output=True, timeout=timeout, env=env, cwd=tmp,
                                  start_new_session=True)
        except subprocess.TimeoutExpired as err:
            raise GraderError(f"check {module} took longer than {timeout:g} s") from err
    out = done.stdout[:MAX_OUTPUT_BYTES].decode(errors="replace")
    if done.returncode != 0:
        tail = done.stderr[-1000:].decode(errors="replace")
        raise GraderError(f"check {module} failed (exit code {done.returncode}): {tail}")
    try:
        return json.loads(out)
    except ValueError as err:
        raise GraderError(f"check {module} printed no JSON: {out[:200]!r}") from err


# ---------------------------------------------------------------- checks attached to graded tasks
class Check(Protocol):
    """What a kind of check provides: built from its metadata, run as a module in a box, judged here."""

    kind: ClassVar[str]  # the ``kind`` in the metadata
    module: ClassVar[str]  # ``python -m module *argv()`` measures the file in a box
    file: str  # the handed-in file it measures

    @classmethod
    def from_spec(cls, spec: dict) -> Check: ...

    def argv(self) -> list[str]: ...

    def verdict(self, report: dict) -> tuple[bool, str]: ...


@dataclass(frozen=True)
class BudgetCheck:
    """A design challenge: the handed-in ``file`` must be a plain pruned model of one of
    ``architectures`` with at most ``max_macs`` MACs (one image of ``dataset``) and at least
    ``min_accuracy`` on the data set's held-out test split, as :mod:`prunekit.grade.budget` measures."""

    file: str
    dataset: str
    architectures: tuple[str, ...]
    max_macs: int
    min_accuracy: float

    kind: ClassVar[str] = "pruned-model-budget"
    module: ClassVar[str] = "prunekit.grade.budget"

    @classmethod
    def from_spec(cls, spec: dict) -> BudgetCheck:
        """From the metadata's fields (``kind`` removed); ``ValueError`` names what is wrong."""
        fields = dict(spec)
        try:
            check = cls(file=str(fields.pop("file")), dataset=str(fields.pop("dataset")),
                        architectures=tuple(str(a) for a in fields.pop("architectures")),
                        max_macs=int(fields.pop("max_macs")), min_accuracy=float(fields.pop("min_accuracy")))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"missing or invalid field ({err})") from None
        if fields:
            raise ValueError(f"unknown field(s) {sorted(fields)}")
        if not check.architectures or check.max_macs <= 0 or not 0.0 <= check.min_accuracy <= 1.0:
            raise ValueError("needs architectures, max_macs > 0, 0 <= min_accuracy <= 1")
        return check

    def argv(self) -> list[str]:
        return [f"{sb.INBOX}/{self.file}", "--dataset", self.dataset, "--architectures", ",".join(self.architectures)]

    def verdict(self, report: dict) -> tuple[bool, str]:
        """Pass or fail, and what the student reads: the grader's own numbers, budget and target."""
        if not report.get("valid"):
            return False, f"{self.file} is not a plain pruned model: {report.get('problem', 'no reason given')}"
        macs, dense = _int(report, "macs"), _int(report, "dense_macs")
        correct, total = _int(report, "correct"), _int(report, "total")
        if total <= 0 or dense <= 0:
            raise GraderError(f"check {self.module} reported an empty test split or model: {report}")
        accuracy = correct / total
        within, accurate = macs <= self.max_macs, accuracy >= self.min_accuracy - 1e-12
        measured = (f"{macs:,} MACs ({macs / dense:.1%} of the dense {dense:,}) "
                    f"{'<=' if within else '>'} budget {self.max_macs:,}; test accuracy {accuracy:.1%} "
                    f"({correct}/{total}) {'>=' if accurate else '<'} target {self.min_accuracy:.1%}")
        if within and accurate:
            return True, f"passed, measured by the grader: {measured}"
        what = "over the MAC budget" if not within else "below the accuracy target"
        if not within and not accurate:
            what = "over the MAC budget and below the accuracy target"
        return False, f"{what}, measured by the grader: {measured}"


CHECKS = {BudgetCheck.kind: BudgetCheck}


def _int(report: dict, key: str) -> int:
    value = report.get(key)
    if type(value) is not int:
        raise GraderError(f"check report has no integer {key!r}: {str(report)[:300]}")
    return value


def check_of(cell: Any) -> Check | None:
    """The check attached to a test cell (``metadata.prunekit.check``), or None; a malformed
    one raises ``ValueError`` naming the problem (an instructor's mistake, found at load time)."""
    meta = cell.get("metadata", {}).get("prunekit", {})
    spec = meta.get("check") if isinstance(meta, dict) else None
    if spec is None:
        return None
    if not isinstance(spec, dict) or spec.get("kind") not in CHECKS:
        raise ValueError(f"metadata.prunekit.check must be an object with kind one of {sorted(CHECKS)}, got {spec!r}")
    try:
        check = CHECKS[spec["kind"]].from_spec({k: v for k, v in spec.items() if k != "kind"})
    except ValueError as err:
        raise ValueError(f"metadata.prunekit.check {spec!r}: {err}") from None
    if "/" in check.file or check.file.startswith(".") or not check.file:
        raise ValueError(f"metadata.prunekit.check: file {check.file!r} must be a plain file name")
    return check


@dataclass(frozen=True)
class Verdict:
    """A check's outcome for one task: the points follow ``passed``; ``report`` is what it measured."""

    passed: bool
    message: str
    report: dict


def judge(check: Check, outbox: Path, box: Sandbox, timeout: float = 300.0,
          memory_mb: int = MEMORY_MB) -> Verdict | None:
    """Measure the handed-in file in a fresh box and compare; None when nothing was handed in.

    ``outbox`` is the grader's own copy (regular files only, see :mod:`prunekit.grade.runner`).
    """
    path = Path(outbox) / check.file
    if path.is_symlink() or not path.is_file():
        return None
    report = run_check(box, check.module, {check.file: path}, check.argv(), timeout=timeout, memory_mb=memory_mb)
    passed, message = check.verdict(report)
    return Verdict(passed, message, report)
