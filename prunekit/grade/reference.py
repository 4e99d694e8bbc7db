"""The expected values: what the instructor's own solution records in each test cell.

The grader runs the solution notebook exactly like a submission (same assembly, same
sandbox) and keeps, per test cell, the list of ``record()`` payloads. This is slow (a full
notebook run), so the result is cached under a key that changes whenever anything that could
change a value changes: the solution notebook's bytes, the ``prunekit`` sources and shipped
checkpoints, and the record format. The cache folder is created mode 700: a kernel running as
another user cannot read the expected values.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path

from . import autograde
from .catalog import Exercise
from .runner import GraderError, Limits

FORMAT_VERSION = "1"


def library_digest() -> str:
    """sha256 over the prunekit package's sources and checkpoints (what reference values depend on)."""
    package = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(package.rglob("*")):
        if path.is_file() and path.suffix in {".py", ".pt", ".json", ".npz"} and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(package)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def cache_key(exercise: Exercise) -> str:
    return hashlib.sha256(f"{FORMAT_VERSION}:{exercise.digest}:{library_digest()}".encode()).hexdigest()


def load_or_compute(exercise: Exercise, limits: Limits, cache_dir: Path | None) -> dict[str, list[dict]]:
    """``{test grade_id: [record payloads]}`` for ``exercise``, from the cache or a fresh run."""
    path = Path(cache_dir) / f"{exercise.name}-{cache_key(exercise)[:20]}.json" if cache_dir else None
    if path is not None and path.exists():
        return json.loads(path.read_text())["records"]
    records = compute(exercise, limits)
    if path is not None:
        for stale in path.parent.glob(f"{exercise.name}-*.json"):  # older solution/library versions
            stale.unlink(missing_ok=True)
        _write_private(path, {"exercise": exercise.name, "solution": str(exercise.path), "records": records})
    return records


def compute(exercise: Exercise, limits: Limits) -> dict[str, list[dict]]:
    """Run the solution; every one of its cells must pass, or the grader cannot work.

    The instructor's code is trusted, so it gets four times the time limits: a busy machine
    must not turn a slow reference run into a broken grader.
    """
    generous = replace(limits, cell_timeout=4 * limits.cell_timeout, total_timeout=4 * limits.total_timeout)
    plan, runs = autograde.execute(exercise, exercise.notebook, generous)
    records: dict[str, list[dict]] = {}
    for step, run in zip(plan, runs):
        if step.kind == "skip":
            continue
        if run.status != "ok":
            problem = run.detail or f"{run.ename}: {run.evalue}"
            raise GraderError(
                f"the instructor's solution {exercise.path} fails in cell {step.label!r}: {problem}; "
                "fix the solution notebook (or raise the time/memory limits) before grading"
            )
        if step.kind == "test":
            records[step.grade_id] = run.records
    return records


def _write_private(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(content, f)
    os.replace(tmp, path)  # atomic: two graders computing the same reference cannot collide
