"""The expected values: what the instructor's own solution records in each test cell.

The grader runs the solution notebook exactly like a submission (same assembly, same reseeds,
a sandbox of its own) and keeps, per test cell, the list of ``record()`` payloads. A batch
computes every reference it needs *before any student code runs* (:mod:`prunekit.grade.batch`),
so no submission can be running while expected values are made.

This is slow (a full notebook run), so the result is cached under a key that changes whenever
anything that could change a value changes (:func:`cache_key`): the solution notebook's bytes,
the prunekit package (sources and checkpoints, the same digest as the installed copy the
kernels import), the versions of Python, torch and NumPy, the record format, and the CPU's
kernel set (:func:`prunekit.grade.machine.cpu_identity`: trained values computed with AVX-512
kernels differ in their last digits from AVX2 ones). References for different CPUs live side by
side, so one cache can serve a cluster whose nodes differ. The cache folder belongs to the
grader (mode 700) and is never bound into a sandbox: no kernel can read it, let alone write it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import tempfile
from dataclasses import replace
from importlib import metadata
from pathlib import Path

from . import autograde
from .catalog import Exercise
from .limits import REFERENCE_SLACK, GraderError, Limits
from .machine import cpu_identity, cpu_tag
from .sandbox.install import library_digest

FORMAT_VERSION = "5"  # 2: reseeded tests, installed-copy digest, runtime versions; 3: checks pass too; 4: kernel/;
# 5: the CPU's kernel set, in the key and the file name


def runtime_versions() -> str:
    """The versions a recorded value can depend on, without importing torch."""
    parts = [f"python={platform.python_version()}"]
    for dist in ("torch", "numpy"):
        try:
            parts.append(f"{dist}={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{dist}=none")
    return ";".join(parts)


def library_of(limits: Limits | None) -> str:
    """The digest of the prunekit the kernels import: the installed copy's, else this package's."""
    site = limits.sandbox.site if limits is not None and limits.sandbox is not None else ""
    return Path(site).name.removeprefix("site-") if site else library_digest()[:20]


def cache_key(exercise: Exercise, library: str | None = None, cpu: str | None = None) -> str:
    """What the expected values depend on, hashed: solution, library, versions and CPU kernel set."""
    library = library or library_digest()[:20]
    cpu = cpu or cpu_identity()
    text = f"{FORMAT_VERSION}:{exercise.digest}:{library}:{runtime_versions()}:{cpu}"
    return hashlib.sha256(text.encode()).hexdigest()


def cache_path(exercise: Exercise, cache_dir: Path, limits: Limits | None = None) -> Path:
    """``<exercise>-<key>-cpu<tag>.json``: the tag names the CPU kernel set, so stale files of
    this machine's kind can be swept without touching those another kind of node wrote."""
    cpu = cpu_identity()
    key = cache_key(exercise, library_of(limits), cpu)[:20]
    return Path(cache_dir) / f"{exercise.name}-{key}-cpu{cpu_tag(cpu)}.json"


def _stale(path: Path) -> list[Path]:
    """Older references for ``path``'s exercise and CPU (another solution, library or format)."""
    exercise, _, tag = re.fullmatch(r"(.+)-[0-9a-f]{20}(-cpu([0-9a-f]{8}))?\.json", path.name).group(1, 2, 3)
    pattern = re.compile(re.escape(exercise) + r"-[0-9a-f]{20}(-cpu([0-9a-f]{8}))?\.json")
    found = []
    for other in path.parent.glob(f"{exercise}-*.json"):
        match = pattern.fullmatch(other.name)
        if other != path and match and match.group(2) in (None, tag):  # untagged: an older format
            found.append(other)
    return found


def load_or_compute(exercise: Exercise, limits: Limits, cache_dir: Path | None) -> dict[str, list[dict]]:
    """``{test grade_id: [record payloads]}`` for ``exercise``, from the cache or a fresh run."""
    path = cache_path(exercise, cache_dir, limits) if cache_dir else None
    if path is not None and path.exists():
        return json.loads(path.read_text())["records"]
    records = compute(exercise, limits)
    if path is not None:
        for stale in _stale(path):
            stale.unlink(missing_ok=True)
        _write_private(path, {"exercise": exercise.name, "solution": str(exercise.path),
                              "versions": runtime_versions(), "cpu": cpu_identity(), "records": records})
    return records


def compute(exercise: Exercise, limits: Limits) -> dict[str, list[dict]]:
    """Run the solution; every one of its cells must pass, and every check its file, or the
    grader cannot work (a budget the instructor's own model misses would fail every student).

    The instructor's code is trusted, so it gets :data:`~prunekit.grade.limits.REFERENCE_SLACK`
    times the time limits: a busy machine must not turn a slow reference run into a broken grader.
    """
    generous = replace(limits, cell_timeout=REFERENCE_SLACK * limits.cell_timeout,
                       total_timeout=REFERENCE_SLACK * limits.total_timeout)
    plan, runs, verdicts = autograde.execute(exercise, exercise.notebook, generous)
    records: dict[str, list[dict]] = {}
    for index, (step, run) in enumerate(zip(plan, runs)):
        if step.kind == "skip":
            continue
        problem = "" if run.status == "ok" else run.detail or f"{run.ename}: {run.evalue}"
        if not problem and step.check is not None and not (index in verdicts and verdicts[index].passed):
            problem = verdicts[index].message if index in verdicts else f"no {step.check.file} was handed in"
        if problem:
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


def main(argv: list[str] | None = None) -> int:
    """``python -m prunekit.grade.reference``: compute and cache expected values ahead of grading.

    Run it once before a scheduler's job array, so that no array task runs the instructor's
    notebook next to a student's (each task would otherwise compute the reference itself first).
    """
    import argparse
    import sys

    from .catalog import default_cache_dir, default_solutions_dir, load_catalog
    from .limits import SandboxUnavailable, add_limit_options, limits_from
    from .sandbox import ISOLATION, MODES, resolve_limits

    p = argparse.ArgumentParser(prog="python -m prunekit.grade.reference", description=main.__doc__.split("\n")[0])
    p.add_argument("--solutions", type=Path, default=None, help="folder of solution notebooks")
    p.add_argument("--exercise", action="append", default=None, help="only this exercise (repeatable)")
    p.add_argument("--cache-dir", type=Path, default=None, help="default: <solutions>/../.cache/prunekit-grade")
    p.add_argument("--sandbox", choices=MODES, default="auto")
    p.add_argument("--isolation", choices=ISOLATION, default="auto")
    add_limit_options(p)
    args = p.parse_args(argv)
    solutions = args.solutions or default_solutions_dir()
    cache = args.cache_dir or default_cache_dir(solutions)
    try:
        catalog = load_catalog(solutions)
        limits = resolve_limits(limits_from(args), args.sandbox, cache, args.isolation)
        for name in args.exercise or sorted(catalog):
            load_or_compute(catalog[name], limits, cache)
            print(f"{name}: {cache_path(catalog[name], cache, limits)}")
    except (OSError, ValueError, KeyError, GraderError, SandboxUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
