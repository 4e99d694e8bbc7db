"""Run a notebook cell by cell in a sandboxed kernel and report what happened to each cell.

Why cell by cell, and not ``nbclient.execute``: one failing task must not zero the others. A
cell that raises is recorded and the next cell still runs (a later test that needed it then
fails on its own). A cell that runs too long is interrupted; if the kernel does not answer
afterwards (the student ignored SIGINT) it is killed and the remaining cells are reported as
*not run*, with the reason. A kernel that dies (``os._exit``, a segfault, a memory or disk
limit) ends the run the same way. Nothing a submission does can stop the grader itself.

Each run gets its own folder (a private tmpfs where possible), its own uid, its own control
group (a CPU quota and a memory limit for every process it starts) and a watchdog
(:mod:`prunekit.grade.sandbox`); at the end every process of the run is killed.

What the runner trusts: the ``execute_reply`` status (not the outputs, which the kernel could
clear) for pass/fail, and the ``display_data`` outputs of :data:`~prunekit.grade.kernel.records.RECORD_MIME`
for the recorded values, which :mod:`prunekit.grade.score` compares in the grader process.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import zmq
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from . import limits as lim
from . import sandbox
from .kernel.records import RECORD_MIME
from .limits import GraderError, Limits
from .sandbox import Sandbox
from .sandbox.cgroups import Group
from .sandbox.watchdog import Watchdog, kill_strays

KERNEL_NAME = "prunekit-sandbox"
_log = logging.getLogger("prunekit.grade.runner")
_log.addHandler(logging.NullHandler())
_log.propagate = False


@dataclass
class CellRun:
    """What happened to one cell. ``status``: ok, error, timeout, died, memory, not_run, skipped."""

    index: int
    status: str
    ename: str = ""
    evalue: str = ""
    traceback: list[str] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    detail: str = ""


@dataclass
class RunOptions:
    """Per-cell extras of one run (all optional).

    ``preludes``: code run silently (no output, no history) just before a cell -- the grader
    reseeds the random generators there, so a test does not depend on how many random numbers
    the student's code drew (:mod:`prunekit.grade.kernel.seeding`). ``private``: cells kept out of the
    kernel's input history (``In``, ``_ih``): test cells, whose hidden part a student's function
    could otherwise read back while it runs. ``outbox``: a folder of the grader's that receives
    the files named in ``collect`` that the kernel handed in (:func:`prunekit.grade.hand_in`),
    for checks that run outside the kernel; nothing else leaves the box.
    """

    preludes: dict[int, str] = field(default_factory=dict)
    private: set[int] = field(default_factory=set)
    outbox: Path | None = None
    collect: tuple[str, ...] = ()


@functools.cache
def default_sandbox() -> Sandbox:
    """``sandbox.resolve("auto")``, once per process: resolving starts a trial Python in the box."""
    return sandbox.resolve("auto")


def run_notebook(nb: nbformat.NotebookNode, limits: Limits | None = None,
                 options: RunOptions | None = None) -> list[CellRun]:
    """Execute every code cell of ``nb`` (in place) and return one :class:`CellRun` per cell."""
    return asyncio.run(_run(nb, limits or Limits(), options or RunOptions()))


async def _run(nb: nbformat.NotebookNode, limits: Limits, options: RunOptions) -> list[CellRun]:
    box = limits.sandbox or default_sandbox()
    with sandbox.run_folder(box) as root, sandbox.lease_uid(box) as uid, \
            sandbox.control_group(box, limits.cpus, limits.memory_mb) as group:
        km, launch = _kernel_manager(root, box, uid, group, limits)
        client = _BoundedClient(
            nb, km=km, store_widget_state=False, kernel_name=KERNEL_NAME,
            allow_errors=True, interrupt_on_timeout=False,
            startup_timeout=int(limits.startup_timeout), shutdown_kernel="immediate",
            record_timing=False, iopub_timeout=int(lim.OUTPUT_WAIT), log=_log,
            resources={"metadata": {"path": launch["cwd"]}},
        )
        replies: dict[int, dict] = {}
        client.on_cell_executed = lambda cell, cell_index, execute_reply: replies.__setitem__(
            cell_index, execute_reply.get("content", {})
        )
        log_path = root / "kernel.log"  # the kernel's own stdout/stderr, kept out of ours
        watched = None if box.private_folders or not box.boxed else root
        try:
            with open(log_path, "wb") as log_file:
                runs = await _execute(client, nb, limits, options, replies, box, group, watched,
                                      stdout=log_file, stderr=log_file, **launch)
        except (RuntimeError, TimeoutError) as err:  # the kernel never came up
            tail = log_path.read_text(errors="replace")[-1500:] if log_path.exists() else ""
            raise GraderError(f"could not start a kernel: {err}\n{tail}") from err
        if options.outbox is not None:
            collect(root / "outbox", options.outbox, options.collect)
        return runs


async def _execute(client, nb, limits: Limits, options: RunOptions, replies: dict, box: Sandbox,
                   group: Group | None, watched: Path | None, **start: Any) -> list[CellRun]:
    async with client.async_setup_kernel(cleanup_kc=True, **start):
        watchdog = Watchdog(getattr(client.km.provisioner, "pid", None), limits.memory_mb, group,
                            cpus=limits.cpus if box.watchdog else None, folder=watched)
        task = asyncio.ensure_future(watchdog.watch())
        try:
            return await _run_cells(client, nb, limits, options, replies, watchdog)
        finally:
            task.cancel()
            watchdog.stop()  # in the box, this also ends the PID namespace and all in it
            if not box.boxed:
                kill_strays(start["env"][sandbox.RUN_TOKEN], sandbox.RUN_TOKEN)


class _BoundedClient(NotebookClient):
    """nbclient with a cap on each cell's outputs: a print loop cannot fill the grader's memory.

    Output beyond :data:`MAX_OUTPUT_BYTES` per cell is dropped (records included: a test cell
    of the instructor records far less, so only a spamming submission loses anything).
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.output_bytes: dict[int, int] = {}

    def output(self, outs, msg, display_id, cell_index):
        used = self.output_bytes.get(cell_index, 0) + len(str(msg.get("content", "")))
        self.output_bytes[cell_index] = used
        if used > lim.MAX_OUTPUT_BYTES:
            return None
        return super().output(outs, msg, display_id, cell_index)


class _SandboxKernelManager(AsyncKernelManager):
    """Its clients refuse oversized messages (a print flood arrives as huge stream messages,
    which zmq then drops before they reach our memory), and its connection file -- written as
    the grader -- is handed to the kernel's uid."""

    kernel_uid: int | None = None

    def client(self, **kwargs: Any):
        kc = super().client(**kwargs)
        kc.context.setsockopt(zmq.MAXMSGSIZE, lim.MAX_MESSAGE_BYTES)
        return kc

    def write_connection_file(self, **kwargs: Any) -> None:
        super().write_connection_file(**kwargs)
        if self.kernel_uid is not None:
            os.chown(self.connection_file, self.kernel_uid, self.kernel_uid)


def _kernel_manager(root: Path, box: Sandbox, uid: int | None, group: Group | None, limits: Limits
                    ) -> tuple[AsyncKernelManager, dict[str, Any]]:
    """A kernel manager whose only kernel spec is the sandbox, talking over Unix sockets.

    Returns it with the keyword arguments for starting the kernel (environment, folder).
    """
    ipc = sandbox.prepare_ipc(root, uid)
    outbox = sandbox.prepare_outbox(root, uid)
    memory = limits.memory_mb if limits.rlimit else None
    kernel = [sandbox.kernel_python(box), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    if box.boxed:
        argv = (sandbox.launch_argv(box, group, memory, limits.cpu_seconds, own_uid=uid is not None)
                + sandbox.bwrap_argv(box, ipc, uid, sandbox.data_files(), outbox) + kernel)
        launch = {"env": sandbox.outer_env(), "cwd": str(root)}
    else:
        work, env = sandbox.unboxed_workdir(root, sandbox.data_files(), outbox)
        argv = sandbox.launch_argv(box, None, memory, limits.cpu_seconds, own_uid=False) + kernel
        launch = {"env": env, "cwd": str(work)}
    spec_dir = root / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {"argv": argv, "display_name": "prunekit grader", "language": "python",
            "interrupt_mode": "message"}  # a signal would stop at bwrap; a message reaches the kernel
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(root / "kernels")], ensure_native_kernel=False)
    km = _SandboxKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs,
                               transport="ipc", ip=str(ipc / "kernel"))
    km.kernel_uid = uid
    km.connection_file = str(ipc / "connection.json")
    return km, launch


async def _run_cells(client, nb, limits: Limits, options: RunOptions, replies: dict,
                     watchdog: Watchdog) -> list[CellRun]:
    runs: list[CellRun] = []
    deadline = time.monotonic() + limits.total_timeout
    stopped = ""  # once set, the kernel is gone and this says why
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            runs.append(CellRun(index, "skipped"))
            continue
        remaining = deadline - time.monotonic()
        if not stopped and remaining < 1:
            stopped = f"the total time limit of {limits.total_timeout:g} s was used up"
            watchdog.stop()
        if stopped:
            runs.append(CellRun(index, "not_run", detail=stopped))
            continue
        timeout = max(1, int(min(limits.cell_timeout, remaining)))
        if index in options.preludes:
            await _prelude(client, options.preludes[index], limits.recover_timeout)
        run, stopped = await _run_cell(client, cell, index, timeout, replies, watchdog, limits.recover_timeout,
                                       store_history=index not in options.private)
        if run.status == "timeout" and timeout < limits.cell_timeout:
            run.detail = f"the total time limit of {limits.total_timeout:g} s was used up"
        runs.append(run)
    return runs


async def _run_cell(client, cell, index: int, timeout: int, replies: dict, watchdog: Watchdog,
                    recover: float, store_history: bool = True) -> tuple[CellRun, str]:
    """Run one cell; return its record and, if the kernel is gone afterwards, why."""
    client.timeout = timeout
    start = time.monotonic()
    try:
        await client.async_execute_cell(cell, index, store_history=store_history)
    except CellTimeoutError:
        run = CellRun(index, "timeout", seconds=timeout, detail=f"timed out after {timeout} s")
        if watchdog.explain():
            return _limit_run(index, watchdog), watchdog.explain()
        if await _recover(client, recover):
            return run, ""
        watchdog.stop()
        return run, f"the kernel did not stop after cell {index} timed out, so it was shut down"
    except DeadKernelError:
        if watchdog.explain():
            return _limit_run(index, watchdog), watchdog.explain()
        code = await _exit_code(client)
        detail = f"kernel died (exit code {code})"
        return CellRun(index, "died", seconds=time.monotonic() - start, detail=detail), f"{detail} in cell {index}"
    reply = replies.pop(index, {})
    run = CellRun(index, "ok" if reply.get("status") == "ok" else "error", seconds=time.monotonic() - start)
    if run.status == "error":
        run.ename = str(reply.get("ename", "Error"))
        run.evalue = str(reply.get("evalue", reply.get("status", "no reply from the kernel")))
        run.traceback = [str(t) for t in reply.get("traceback", [])]
    run.records = _records(cell)
    return run, ""


def _limit_run(index: int, watchdog: Watchdog) -> CellRun:
    """A cell during which the watchdog or the cgroup stopped the kernel (memory or disk)."""
    reason = watchdog.explain()
    return CellRun(index, "memory" if reason.startswith("memory") else "disk", detail=reason)


def _records(cell) -> list[dict]:
    found = []
    for out in cell.get("outputs", []):
        payload = out.get("data", {}).get(RECORD_MIME) if out.get("output_type") == "display_data" else None
        if isinstance(payload, str):
            try:
                payload = json.loads(payload)
            except ValueError:
                continue
        if isinstance(payload, dict) and isinstance(payload.get("key"), str):
            found.append(payload)
    return found


async def _prelude(client, code: str, seconds: float) -> bool:
    """Run ``code`` silently before a cell; True when the kernel answered (its status is not ours
    to judge: a submission that broke the random generators only changes its own results)."""
    return await _answered(client, client.kc.execute(code, silent=True, store_history=False), seconds)


async def _recover(client, seconds: float) -> bool:
    """Interrupt the kernel after a timeout; True if it answers a trivial request again."""
    try:
        await client.km.interrupt_kernel()
        return await _answered(client, client.kc.execute("", silent=True, store_history=False), seconds)
    except Exception:
        return False


async def _answered(client, msg_id: str, seconds: float) -> bool:
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                msg = await client.kc.shell_channel.get_msg(timeout=max(0.1, deadline - time.monotonic()))
            except Exception:  # queue.Empty: no reply in time
                return False
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                return True
    except Exception:
        return False
    return False


async def _exit_code(client) -> Any:
    try:
        return await client.km.provisioner.poll()
    except Exception:
        return "unknown"


def collect(source: Path, dest: Path, names: tuple[str, ...]) -> None:
    """Copy the handed-in files called ``names`` to the grader's ``dest``: regular files only, never a
    link (the kernel made them and could point a link at a grader file), opened without following
    links or blocking on a FIFO, at most :data:`~prunekit.grade.limits.MAX_HANDIN_BYTES` each."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        try:
            fd = os.open(source / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        with os.fdopen(fd, "rb") as src:
            if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
                continue
            data = src.read(lim.MAX_HANDIN_BYTES + 1)
        if len(data) <= lim.MAX_HANDIN_BYTES:
            (dest / name).write_bytes(data)
