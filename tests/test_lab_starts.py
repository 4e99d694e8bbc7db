"""`make lab` works: JupyterLab from this environment starts, answers, and stops cleanly.

This is the fast, browser-free half of the JupyterLab checks (the browser half lives in
tests/e2e/). It catches a broken install (missing jupyterlab, an incompatible server
extension, a bad config) in a few seconds.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

_HELPER = Path(__file__).parent / "e2e" / "labserver.py"


def _load_labserver():
    """Import tests/e2e/labserver.py by path (tests/ is not a package)."""
    spec = importlib.util.spec_from_file_location("prunekit_tests_labserver", _HELPER)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


labserver = _load_labserver()


def test_jupyter_lab_starts_answers_and_stops(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "hello.txt").write_text("hi\n")
    server = labserver.start_lab(root, tmp_path / "state", ready_timeout=60)
    try:
        status = server.api("GET", "/api/status")
        assert status["started"], status
        listing = server.api("GET", "/api/contents/")
        assert [item["name"] for item in listing["content"]] == ["hello.txt"]
        # The token is really required: the same call without it is refused.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(server.url + "/api/contents/", timeout=5)
        assert refused.value.code == 403
    finally:
        leaked = server.stop()
    assert server.process.returncode is not None, "jupyter lab is still running"
    assert not psutil.pid_exists(server.process.pid) or \
        psutil.Process(server.process.pid).status() == psutil.STATUS_ZOMBIE
    assert leaked == [], f"processes left behind by jupyter lab: {leaked}"


def _is_kernel(pid: int) -> bool:
    try:
        return "ipykernel" in " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False


def test_stop_finds_and_kills_a_kernel_the_server_left_behind(tmp_path: Path) -> None:
    """The clean-up the browser tests rely on: if the server dies without shutting its
    kernels down (here: SIGKILL) and a kernel is wedged (SIGSTOP, so it cannot notice its
    parent is gone and quit), ``stop()`` still finds the orphan, kills it and reports it,
    so a leak fails the run instead of going unnoticed."""
    (tmp_path / "root").mkdir()
    server = labserver.start_lab(tmp_path / "root", tmp_path / "state", ready_timeout=60)
    try:
        kernel = server.api("POST", "/api/kernels", {"name": "python3"})
        deadline = time.monotonic() + 30
        kernels: set[int] = set()
        while not kernels and time.monotonic() < deadline:
            kernels = {pid for pid in server.remember_kernels() if _is_kernel(pid)}
            time.sleep(0.1)
        assert kernels, f"kernel {kernel['id']} never appeared as a child of the server"
        os.killpg(server.process.pid, signal.SIGKILL)  # kernels live in their own sessions
        server.process.wait(timeout=10)
        for pid in kernels:
            os.kill(pid, signal.SIGSTOP)
    finally:
        leaked = server.stop(grace=1)
    assert set(leaked) == kernels, "stop() must report exactly the wedged kernel"
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                   for pid in kernels)


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not (REPO / ".venv" / "bin" / "jupyter").exists(),
                    reason="needs the project's .venv (created by `make test` / `make lab`)")
def test_make_lab_itself_serves_the_course(tmp_path: Path) -> None:
    """The README's own command: `make lab` (set-up step taken as done, `-o`) must bring up
    JupyterLab on the student's working copy (WORK; here a temporary one), not on the
    repository, with JupyterLab's news pop-up switched off. Headless: a loopback port, a
    token, no browser."""
    port, token = labserver.free_port(), "make-lab-test-token"
    work = tmp_path / "work"
    lab_args = f"--no-browser --ip=127.0.0.1 --port-retries=0 --IdentityProvider.token={token}"
    command = ["make", "-C", str(REPO), "-o", ".venv/.installed", "lab",
               f"LAB_PORT={port}", f"LAB_ARGS={lab_args}", f"WORK={work}"]
    env = labserver.isolated_env(tmp_path / "state")
    process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, listing = time.monotonic() + 90, None
        while listing is None and time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"{base}/api/contents?token={token}", timeout=5) as reply:
                    listing = json.load(reply)
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        assert listing is not None, f"`make lab` did not serve the course: {_drain(process)}"
        top = {item["name"] for item in listing["content"]}
        assert top == {"notebooks", "exercises"}, top      # the working copy, not the repository
        with urllib.request.urlopen(f"{base}/api/contents/notebooks?token={token}", timeout=5) as reply:
            names = {item["name"] for item in json.load(reply)["content"]}
        assert "00_setup_and_tour.ipynb" in names, names
        assert (work / "notebooks" / "00_setup_and_tour.ipynb").read_bytes() == \
            (REPO / "notebooks" / "00_setup_and_tour.ipynb").read_bytes()
        defaults = {name: _setting_defaults(base, token, name) for name in
                    ("@jupyterlab/apputils-extension:notification", "@jupyter-widgets/jupyterlab-manager:plugin")}
        assert defaults["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false", \
            "the news pop-up is not switched off"
        assert defaults["@jupyter-widgets/jupyterlab-manager:plugin"]["saveState"] is True, \
            "widgets do not save their state: a reopened notebook would show 'Error displaying widget'"
    finally:
        _kill_group(process)
    assert not _group_alive(process.pid), "`make lab` left processes behind"


def _setting_defaults(base: str, token: str, plugin: str) -> dict:
    """The defaults JupyterLab serves for ``plugin``: its schema's, with the venv's overrides."""
    with urllib.request.urlopen(f"{base}/lab/api/settings/{plugin}?token={token}", timeout=5) as reply:
        properties = json.load(reply)["schema"]["properties"]
    return {name: spec.get("default") for name, spec in properties.items()}


def _drain(process: subprocess.Popen) -> str:
    if process.poll() is None:
        return "(still running, no answer)"
    return process.stdout.read().decode(errors="replace")[-2000:]


def _kill_group(process: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        deadline = time.monotonic() + wait
        while _group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _group_alive(process.pid):
            return


def _group_alive(pgid: int) -> bool:
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.info["pid"]) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error, OSError):
            continue
    return False
