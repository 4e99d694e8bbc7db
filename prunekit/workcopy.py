"""Your own copy of the course, so that running it never changes the repository.

JupyterLab writes a notebook back to disk whenever you save it, and it autosaves every two
minutes: run a committed lecture in place and ``git status`` lists it as modified, and the next
``git pull`` that brings a new version of that lecture stops with a conflict. So ``make lab``
opens a *working copy* instead: ``work/notebooks/`` and ``work/exercises/`` (git ignores
``work/``), copied from ``notebooks/`` and ``exercises/`` the first time. After that the copy is
yours -- run it, edit it, take notes in it; nothing here overwrites what you changed.

When the course changes (say, after ``git pull``), ``make lab`` brings the copy up to date as
far as it can without touching your work, and prints what it did:

* a file new to the course is copied in (so is one you deleted from the copy);
* a file you never changed -- byte for byte what was copied -- takes the new version;
* a file you ran or edited is kept, and named on every start until you decide:
  ``make lab-reset FILE=notebooks/02_l1_norm_channel_pruning.ipynb`` replaces it with the
  course's version after moving yours to ``work/replaced/<date-time>/``
  (``make lab-reset`` with no ``FILE`` does that for every file that differs).

``work/.course-versions.json`` records the SHA-256 of every file as it was copied: that is how
an untouched file is told apart from one you ran. The lectures read nothing relative to their
own folder except each other (lecture 00 lists them): data lives in ``$PRUNEKIT_DATA`` and the
experiments' results are found through the installed ``prunekit`` package, so they run the same
from the copy.

    python -m prunekit.workcopy sync  [--work work] [--course .]   # what `make lab` runs first
    python -m prunekit.workcopy reset [--work work] [FILE ...]     # what `make lab-reset` runs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["COURSE_FOLDERS", "RECORD", "SyncReport", "course_files", "sync", "reset", "main"]

#: What a student works in; solutions/ stays out of the copy.
COURSE_FOLDERS = ("notebooks", "exercises")
#: The SHA-256 of each file as it was copied, relative to the working copy.
RECORD = ".course-versions.json"
#: The repository this package was installed from (an editable install points here).
REPOSITORY = Path(__file__).resolve().parents[1]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def course_files(course: Path) -> list[str]:
    """Every file of :data:`COURSE_FOLDERS` as a ``folder/name`` path, hidden ones
    (``.ipynb_checkpoints``) left out."""
    found = []
    for folder in COURSE_FOLDERS:
        for path in sorted((course / folder).rglob("*")):
            rel = path.relative_to(course)
            if path.is_file() and not any(part.startswith(".") for part in rel.parts):
                found.append(rel.as_posix())
    return found


def _read_record(work: Path) -> dict[str, str]:
    try:
        return json.loads((work / RECORD).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def _write_record(work: Path, record: dict[str, str]) -> None:
    tmp = work / (RECORD + ".tmp")
    tmp.write_text(json.dumps(dict(sorted(record.items())), indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, work / RECORD)


def _copy(course: Path, work: Path, rel: str) -> None:
    target = work / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(course / rel, target)


@dataclass
class SyncReport:
    """What :func:`sync` did: files copied in, files brought up to date, and files of yours
    that the course has since changed (kept as they are)."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    def lines(self, work: Path) -> list[str]:
        out = [f"working copy: {work}/ (yours: the course's own notebooks stay as committed)"]
        if self.added:
            out.append(f"  copied in: {len(self.added)} file(s) from the course")
        out += [f"  updated (you had not changed it): {rel}" for rel in self.updated]
        out += [f"  changed in the course, yours kept: {rel}  ->  make lab-reset FILE={rel}"
                for rel in self.kept]
        return out


def sync(course: Path, work: Path) -> SyncReport:
    """Bring the working copy ``work`` up to date with ``course`` without losing anything of
    the student's (the rules are in the module docstring)."""
    work.mkdir(parents=True, exist_ok=True)
    record, report = _read_record(work), SyncReport()
    for rel in course_files(course):
        new = _sha256(course / rel)
        if not (work / rel).exists():
            _copy(course, work, rel)
            report.added.append(rel)
            record[rel] = new
            continue
        mine = _sha256(work / rel)
        if mine == new:
            record[rel] = new
        elif record.get(rel) == new:
            pass                         # the course did not change; the file is the student's
        elif record.get(rel) == mine:    # untouched since it was copied: take the new version
            _copy(course, work, rel)
            report.updated.append(rel)
            record[rel] = new
        else:
            report.kept.append(rel)
    _write_record(work, record)
    return report


def _resolve(course: Path, name: str) -> str:
    """``name`` as a course file: ``notebooks/02_....ipynb``, the same under ``work/``, or a
    bare file name."""
    files = course_files(course)
    rel = Path(name).as_posix()
    for candidate in (rel, rel.split("/", 1)[-1]):
        if candidate in files:
            return candidate
    matches = [f for f in files if f.rsplit("/", 1)[-1] == Path(name).name]
    if len(matches) == 1:
        return matches[0]
    raise ValueError(f"{name!r} is not a file of the course; choose one of: {', '.join(files)}")


def reset(course: Path, work: Path, names: list[str] | None = None) -> list[tuple[str, Path | None]]:
    """Replace the working copy's version of each file in ``names`` (default: every course
    file) by the course's; a version that differs is first moved to
    ``work/replaced/<date-time>/``. Returns ``(file, where the old version went or None)``."""
    files = [_resolve(course, n) for n in names] if names else course_files(course)
    stamp = time.strftime("%Y-%m-%dT%H-%M-%S")
    record, done = _read_record(work), []
    for rel in files:
        old = work / rel
        moved = None
        if old.exists() and _sha256(old) != _sha256(course / rel):
            moved = work / "replaced" / stamp / rel
            moved.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(old, moved)
        _copy(course, work, rel)
        record[rel] = _sha256(course / rel)
        done.append((rel, moved))
    _write_record(work, record)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prunekit.workcopy", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["sync", "reset"])
    parser.add_argument("files", nargs="*", help="reset only: the files to replace (default: all)")
    parser.add_argument("--work", type=Path, default=Path("work"), help="the working copy (default: work)")
    parser.add_argument("--course", type=Path, default=REPOSITORY, help="the course (default: this repository)")
    args = parser.parse_intermixed_args(argv)   # files may come before or after the options
    if not all((args.course / folder).is_dir() for folder in COURSE_FOLDERS):
        print(f"error: {args.course} has no {' / '.join(COURSE_FOLDERS)} folders", file=sys.stderr)
        return 2
    if args.command == "sync":
        if args.files:
            parser.error("sync takes no files")
        print("\n".join(sync(args.course, args.work).lines(args.work)))
        return 0
    try:
        done = reset(args.course, args.work, args.files)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for rel, moved in done:
        if moved is not None:
            print(f"{rel}: the course's version; yours is now {moved}")
    print(f"{len(done)} file(s) of {args.work}/ are the course's version now")
    return 0


if __name__ == "__main__":
    sys.exit(main())
