"""Start and stop a throw-away JupyterLab server for tests.

The server runs from the project's own interpreter (``sys.executable``), listens only on
127.0.0.1 on a free port, requires a random token, and keeps every piece of Jupyter state
(config, runtime, data, IPython profile, lab settings and workspaces) inside one temporary
directory, so a test never reads or writes the user's ``~/.jupyter``.

Stopping is the delicate part. jupyter_client starts every kernel in a *new session*
(``start_new_session=True``) so that interrupting it does not hit the server, which also
means killing the server's process group does not kill its kernels. So ``stop()`` asks the
server to shut down through its REST API (it then shuts its kernels down), waits, escalates
to SIGTERM/SIGKILL on the server's process group, and finally kills any kernel process that
is still alive and reports it: a test that leaves kernels behind has found a bug.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

#: Lab settings that make the page deterministic for a robot.
#: windowingMode "none" renders every cell (JupyterLab 4 otherwise only renders cells that are
#: on screen, and an error in an off-screen cell would be invisible to a DOM check).
USER_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}

#: Plugins that pop up toasts or reach the network; not part of what we test.
DISABLED_EXTENSIONS = {
    "@jupyterlab/apputils-extension:announcements": True,
}


def in_ci() -> bool:
    """True on a CI runner (they set ``CI=true``): missing tools are failures there, not skips."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def git(root: Path, *args: str) -> str:
    """Run git in ``root`` (a throw-away identity for commits); return its output."""
    done = subprocess.run(["git", "-C", str(root), "-c", "user.name=e2e", "-c", "user.email=e2e@localhost", *args],
                          check=True, capture_output=True, text=True)
    return done.stdout


def free_port() -> int:
    """Ask the OS for a free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def isolated_env(state_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the server: all Jupyter/IPython state under ``state_dir``."""
    config_dir = state_dir / "config"
    for name, data in USER_SETTINGS.items():
        _write_json(config_dir / "lab" / "user-settings" / name, data)
    _write_json(config_dir / "labconfig" / "page_config.json",
                {"disabledExtensions": DISABLED_EXTENSIONS})
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(config_dir),
        JUPYTER_RUNTIME_DIR=str(state_dir / "runtime"),
        JUPYTER_DATA_DIR=str(state_dir / "data"),
        JUPYTERLAB_SETTINGS_DIR=str(config_dir / "lab" / "user-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(state_dir / "workspaces"),
        IPYTHONDIR=str(state_dir / "ipython"),
        JUPYTER_PLATFORM_DIRS="1",
        PYTHONUNBUFFERED="1",
    )
    env.pop("JUPYTER_PATH", None)
    env.update(extra or {})
    return env


@dataclass
class LabServer:
    """A running ``jupyter lab`` process and how to talk to it."""

    root: Path
    port: int
    token: str
    process: subprocess.Popen
    log_path: Path
    kernel_pids: set[int] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, method: str, path: str, body: dict | None = None, timeout: float = 10) -> dict:
        """Call the Jupyter REST API (``path`` starts with ``/api/``); return decoded JSON."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method,
            headers={"Authorization": f"token {self.token}",
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read().decode()
        return json.loads(text) if text else {}

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "<no log>"

    def remember_kernels(self) -> set[int]:
        """Record the PIDs of the server's child processes (its kernels) seen right now."""
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        self.kernel_pids |= {child.pid for child in children}
        return self.kernel_pids

    def wait_ready(self, timeout: float = 90) -> dict:
        """Poll ``/api/status`` until the server answers; fail with its log if it died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with code {self.process.returncode}:\n"
                                   + self.log_tail())
            try:
                return self.api("GET", "/api/status", timeout=2)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.25)
        raise TimeoutError(f"jupyter lab did not answer within {timeout} s:\n" + self.log_tail())

    def stop(self, timeout: float = 20, grace: float = 5) -> list[int]:
        """Shut the server and all its kernels down; return PIDs that had to be killed.

        Safe to call twice and after a crash. A kernel gets ``grace`` seconds after the server
        is gone to exit by itself (ipykernel polls its parent and quits when it dies); the
        returned list holds the ones that did not, and should be empty.
        """
        self.remember_kernels()
        if self.process.poll() is None:
            try:
                self.api("POST", "/api/shutdown", timeout=5)
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass  # already going down, or wedged: the signals below handle it
            self._wait_or_signal(timeout)
        return _kill_survivors(self.kernel_pids, timeout=grace)

    def _wait_or_signal(self, timeout: float) -> None:
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    pass
            try:
                self.process.wait(timeout=timeout if sig is None else 10)
                return
            except subprocess.TimeoutExpired:
                continue


def _kill_survivors(pids: set[int], timeout: float) -> list[int]:
    """Kill every process in ``pids`` that is still alive; return the ones that were."""
    alive = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.NoSuchProcess:
            continue
    if alive:
        # Give a server that is still mid-shutdown a moment before calling it a leak.
        _, alive = psutil.wait_procs(alive, timeout=timeout)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    return sorted(proc.pid for proc in alive)


def start_lab(root: Path, state_dir: Path, env: dict[str, str] | None = None,
              ready_timeout: float = 90, app_settings: Path | None = None) -> LabServer:
    """Start ``python -m jupyterlab`` serving ``root``; return once ``/api/status`` answers.

    ``app_settings``: a folder with an ``overrides.json`` of default settings, used instead of
    the one `make` installs into the venv (the repository's ``lab-settings/``, always current).

    The server is in its own process group (``start_new_session``) so that ``stop()`` can
    signal it and anything it spawned without touching the test runner.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    port, token = free_port(), secrets.token_hex(16)
    command = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser", "--ServerApp.open_browser=False",
        "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",   # window.jupyterapp, used to run cells
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        # Safety net if the test runner is killed before stop(): idle kernels are culled
        # after 15 min, and a server with no kernels exits 10 min later.
        "--MappingKernelManager.cull_idle_timeout=900",
        "--MappingKernelManager.cull_interval=60",
        "--ServerApp.shutdown_no_activity_timeout=600",
    ]
    if app_settings is not None:
        command.append(f"--LabApp.app_settings_dir={app_settings}")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # containers and CI often run as root
    log_path = state_dir / "jupyterlab.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=root, env=isolated_env(state_dir, env),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    server = LabServer(root=root, port=port, token=token, process=process, log_path=log_path)
    try:
        server.wait_ready(ready_timeout)
    except BaseException:
        server.stop()
        raise
    return server
