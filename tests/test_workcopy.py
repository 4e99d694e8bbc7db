"""`make lab`'s working copy: made once, never overwriting the student's work, kept out of git."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from prunekit import workcopy

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def course(tmp_path: Path) -> Path:
    root = tmp_path / "course"
    for rel, text in {"notebooks/00_tour.ipynb": "tour v1", "notebooks/02_l1.ipynb": "l1 v1",
                      "exercises/ex02.ipynb": "ex v1", "notebooks/.ipynb_checkpoints/x.ipynb": "hidden"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def _text(path: Path) -> str:
    return path.read_text()


def test_first_sync_copies_the_course_but_not_hidden_files(course, tmp_path):
    work = tmp_path / "work"
    report = workcopy.sync(course, work)
    assert sorted(report.added) == ["exercises/ex02.ipynb", "notebooks/00_tour.ipynb", "notebooks/02_l1.ipynb"]
    assert _text(work / "notebooks/02_l1.ipynb") == "l1 v1"
    assert not (work / "notebooks/.ipynb_checkpoints").exists()
    again = workcopy.sync(course, work)
    assert (again.added, again.updated, again.kept) == ([], [], [])


def test_sync_never_overwrites_the_students_work(course, tmp_path):
    work = tmp_path / "work"
    workcopy.sync(course, work)
    (work / "notebooks/02_l1.ipynb").write_text("l1 v1, run by the student")
    assert workcopy.sync(course, work).kept == []        # the course did not change: nothing to say
    (course / "notebooks/02_l1.ipynb").write_text("l1 v2")
    (course / "notebooks/00_tour.ipynb").write_text("tour v2")
    (course / "notebooks/03_new.ipynb").write_text("new")
    report = workcopy.sync(course, work)
    assert _text(work / "notebooks/02_l1.ipynb") == "l1 v1, run by the student"
    assert report.kept == ["notebooks/02_l1.ipynb"]      # and it says so, with the command to take v2
    assert any("make lab-reset FILE=notebooks/02_l1.ipynb" in line for line in report.lines(work))
    assert report.updated == ["notebooks/00_tour.ipynb"]  # untouched: takes the new version
    assert _text(work / "notebooks/00_tour.ipynb") == "tour v2"
    assert report.added == ["notebooks/03_new.ipynb"]
    assert workcopy.sync(course, work).kept == ["notebooks/02_l1.ipynb"]  # reminded until reset


def test_a_deleted_file_comes_back(course, tmp_path):
    work = tmp_path / "work"
    workcopy.sync(course, work)
    (work / "exercises/ex02.ipynb").unlink()
    assert workcopy.sync(course, work).added == ["exercises/ex02.ipynb"]


def test_reset_keeps_the_old_version_and_takes_the_course(course, tmp_path):
    work = tmp_path / "work"
    workcopy.sync(course, work)
    (work / "notebooks/02_l1.ipynb").write_text("mine")
    (course / "notebooks/02_l1.ipynb").write_text("l1 v2")
    [(rel, moved)] = workcopy.reset(course, work, ["work/notebooks/02_l1.ipynb"])
    assert rel == "notebooks/02_l1.ipynb" and _text(work / rel) == "l1 v2"
    assert moved.relative_to(work).parts[0] == "replaced" and _text(moved) == "mine"
    report = workcopy.sync(course, work)
    assert (report.added, report.updated, report.kept) == ([], [], [])
    assert workcopy.reset(course, work, ["02_l1.ipynb"]) == [("notebooks/02_l1.ipynb", None)]  # same: nothing moved


def test_reset_refuses_what_is_not_in_the_course(course, tmp_path):
    with pytest.raises(ValueError, match="'notebooks/99.ipynb' is not a file of the course.*00_tour"):
        workcopy.reset(course, tmp_path / "work", ["notebooks/99.ipynb"])
    assert workcopy.main(["reset", "--course", str(course), "--work", str(tmp_path / "w"), "nope"]) == 2
    assert workcopy.main(["sync", "--course", str(tmp_path / "empty"), "--work", str(tmp_path / "w")]) == 2


def test_cli_sync_prints_what_it_did(course, tmp_path, capsys):
    assert workcopy.main(["sync", "--course", str(course), "--work", str(tmp_path / "work")]) == 0
    assert "copied in: 3 file(s)" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_running_from_the_working_copy_leaves_git_status_clean(tmp_path):
    """A clone of the course with the project's .gitignore: everything `make lab` creates and
    a run of a notebook in the working copy (saved by JupyterLab) stays out of `git status`."""
    clone = tmp_path / "clone"
    for folder in workcopy.COURSE_FOLDERS:
        shutil.copytree(REPO / folder, clone / folder, ignore=shutil.ignore_patterns(".*"))
    shutil.copy(REPO / ".gitignore", clone / ".gitignore")
    git = ["git", "-C", str(clone), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "course"], check=True)
    assert workcopy.main(["sync", "--course", str(clone), "--work", str(clone / "work")]) == 0
    ran = clone / "work/notebooks/02_l1_norm_channel_pruning.ipynb"
    ran.write_text(ran.read_text() + "\n")   # what a save after a run does: new bytes
    (clone / "work/notebooks/.ipynb_checkpoints").mkdir()
    workcopy.reset(clone, clone / "work", ["02_l1_norm_channel_pruning.ipynb"])
    status = subprocess.run([*git, "status", "--porcelain", "--untracked-files=all"], check=True,
                            capture_output=True, text=True).stdout
    assert status == ""
    assert (clone / "work/replaced").is_dir()  # the control: the run really changed a file
