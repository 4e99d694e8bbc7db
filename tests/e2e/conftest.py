"""Fixtures for the browser tests: a private JupyterLab on a copy of the course, and Chromium.

Every fixture cleans up in ``finally`` blocks, so a failing test still stops the browser, the
server and its kernels. The server fixture fails the run if a kernel outlived the server.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # labserver / labpage sit next to this file

import labserver  # noqa: E402
from labserver import git, in_ci  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
#: The tree whose notebooks are tested; another tree can be named while developing the harness.
SOURCE = Path(os.environ.get("PRUNEKIT_E2E_SOURCE", REPO))
COURSE_DIRS = ("notebooks", "exercises", "solutions")
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic",
]


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium; missing is a skip on a laptop and a failure in CI (make test installs it)."""
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} not found (install Debian's 'chromium' package; `make test` does)"
        if in_ci():
            pytest.fail(f"browser test cannot run in CI: {problem}")
        pytest.skip(problem)
    return CHROMIUM


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    return ARTIFACTS


@pytest.fixture(scope="module")
def course_copy(tmp_path_factory) -> Path:
    """A student's clone, in miniature: notebooks/, exercises/, solutions/ and the project's
    .gitignore committed to a fresh git repository in a temporary folder (never the repo
    itself), so that `git status` there shows what running the course changes."""
    root = tmp_path_factory.mktemp("course")
    for name in COURSE_DIRS:
        if (SOURCE / name).is_dir():
            shutil.copytree(SOURCE / name, root / name,
                            ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    shutil.copy(REPO / ".gitignore", root / ".gitignore")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "the course as cloned")
    return root


@pytest.fixture(scope="module")
def working_copy(course_copy) -> Path:
    """What `make lab` serves: the clone's working copy, made by the same code
    (``python -m prunekit.workcopy sync``, WORK=work)."""
    from prunekit import workcopy

    work = course_copy / "work"
    workcopy.sync(course_copy, work)
    return work


@pytest.fixture(scope="module")
def lab(chromium, working_copy, tmp_path_factory):
    """JupyterLab serving the working copy; stopped after the module, and no kernel may survive it."""
    env = {
        "PRUNEKIT_PROGRESS": "0",
        # The kernel must import *this* checkout's prunekit, installed or not.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    # the JupyterLab defaults `make lab` ships (lab-settings/overrides.json: widgets save their state)
    server = labserver.start_lab(working_copy, tmp_path_factory.mktemp("jupyter-state"), env=env,
                                 app_settings=REPO / "lab-settings")
    leaked: list[int] = []
    try:
        yield server
    finally:
        leaked = server.stop()
    assert server.process.returncode is not None, "jupyter lab is still running"
    assert leaked == [], f"kernel processes outlived the server and had to be killed: {leaked}"


@pytest.fixture(scope="module")
def browser(chromium, tmp_path_factory):
    """Headless Chromium with a fresh profile (one per test module)."""
    from playwright.sync_api import sync_playwright

    driver = sync_playwright().start()
    try:
        context = driver.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900})
        try:
            yield context
        finally:
            context.close()
    finally:
        driver.stop()


@pytest.fixture
def page(browser, lab):
    """A new tab; the kernels it started are shut down and the tab closed afterwards."""
    from labpage import shutdown_kernel

    tab = browser.new_page()
    tab.set_default_timeout(30_000)
    try:
        yield tab
    finally:
        lab.remember_kernels()
        shutdown_kernel(tab)
        tab.close()
