"""The copy of prunekit a sandboxed kernel imports: installed, compiled, read-only, and nothing more.

A kernel must import ``prunekit`` (the exercises use the library, and ``record`` lives in it),
but it must not see the repository the grader runs from: next to the package lie
``solutions/``, ``.git`` and the grader's cache. So the grader copies the package -- the files a
wheel would install: its modules and package data, no ``__pycache__`` -- into a folder of its
own, byte-compiles it, and the sandbox binds that folder read-only at ``/opt/prunekit``.

The folder is named after :func:`library_digest`, the hash of those very files, so an edited
library gets a fresh copy and an unchanged one is reused across grading sessions. The
reference values are cached under the same digest (:mod:`prunekit.grade.reference`): expected
values and the code that produced them always belong together.
"""

from __future__ import annotations

import compileall
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2]  # prunekit/
SKIP_DIRS = {"__pycache__"}
SKIP_SUFFIXES = {".pyc", ".pyo"}


def package_files(package: Path = PACKAGE) -> list[Path]:
    """The package's installable files, sorted (modules, checkpoints, manifests)."""
    return sorted(p for p in package.rglob("*")
                  if p.is_file() and not SKIP_DIRS & set(p.relative_to(package).parts)
                  and p.suffix not in SKIP_SUFFIXES)


def library_digest(package: Path = PACKAGE) -> str:
    """sha256 over the package's installable files: names and bytes."""
    h = hashlib.sha256()
    for path in package_files(package):
        h.update(str(path.relative_to(package)).encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()


def installed_copy(state_dir: Path, package: Path = PACKAGE) -> Path:
    """A folder holding ``prunekit/`` (copied and compiled); reused while the library is unchanged."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)  # the grader's own files: no other user lists or reads them
    target = state_dir / f"site-{library_digest(package)[:20]}"
    if target.is_dir():  # only ever created by the atomic rename below: complete
        return target
    staging = Path(tempfile.mkdtemp(dir=state_dir, prefix=".site-"))
    for path in package_files(package):
        dest = staging / "prunekit" / path.relative_to(package)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
    compileall.compile_dir(staging / "prunekit", quiet=1)  # the box cannot write __pycache__
    for path in staging.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    staging.chmod(0o755)
    try:
        staging.rename(target)  # atomic; a concurrent grader may have won the race: use theirs
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    for stale in state_dir.glob("site-*"):
        if stale != target and not _in_use(stale):
            shutil.rmtree(stale, ignore_errors=True)
    return target


def _in_use(folder: Path) -> bool:
    """An older copy is kept for an hour: a grader started before an edit may still be using it."""
    import time

    try:
        return time.time() - folder.stat().st_mtime < 3600
    except OSError:
        return False
